"""Deterministic splits: every item on exactly one rank, batches independent of the world size."""

import pytest

from sgtriton.generation import batches, shard, steps


@pytest.mark.parametrize("world_size", [1, 2, 3, 7, 30])
def test_every_item_belongs_to_exactly_one_rank(world_size):
    items = list(range(23))
    shares = [shard(items, rank, world_size) for rank in range(world_size)]
    assert sorted(x for share in shares for x in share) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert max(map(len, shares)) == steps(len(items), world_size)
    assert shares == [shard(items, rank, world_size) for rank in range(world_size)]  # same answer every time


def test_batches_keep_list_order_and_do_not_depend_on_ranks():
    assert batches([5, 6, 7, 8, 9], 2) == [[5, 6], [7, 8], [9]]
    layout = batches(list(range(10)), 3)
    assert [b for rank in range(2) for b in shard(layout, rank, 2)] == [layout[0], layout[2], layout[1], layout[3]]


@pytest.mark.parametrize("call,needle", [
    (lambda: shard([1], 2, 2), "rank=2"),
    (lambda: shard([1], 0, 0), "world_size=0"),
    (lambda: batches([1], 0), "batch_size=0"),
])
def test_bad_arguments_are_named(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_launch_variables_are_read_and_checked():
    from sgtriton.generation.distributed import LaunchError, detect_launch, session

    assert detect_launch({}) is None
    assert detect_launch({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == (4, 3, 1)
    with pytest.raises(LaunchError, match=r"\$RANK=4, \$WORLD_SIZE=4"):
        detect_launch({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(LaunchError, match=r"\$WORLD_SIZE='two'"):
        detect_launch({"WORLD_SIZE": "two", "RANK": "0"})
    with session("cpu", env={"WORLD_SIZE": "1", "RANK": "0"}) as topology:  # one rank: no process group
        assert not topology.distributed and topology.is_main and str(topology.device) == "cpu"
