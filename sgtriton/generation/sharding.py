"""Deterministic work splits: the same items, batch size and world size give every rank the same answer.

A job is a list of items (seeds, projected ws, projection targets) cut into batches **in list order**,
``batches(items, B) = [items[0:B], items[B:2B], ...]``; batch ``k`` is then done by rank
``k mod world_size`` (:func:`shard`). The batch layout never depends on the number of ranks, so a
sample is computed in exactly the same batch, hence with exactly the same arithmetic, whether one
process or a thousand run the job -- the property that makes every image bit-identical (batched
convolutions are not bit-identical across batch sizes: BLAS and cuDNN pick algorithms per shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def _check_rank(rank: int, world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size={world_size!r}: expected an int >= 1")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r}: expected an int in [0, {world_size})")


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s share of ``items``: ``items[rank::world_size]`` (round robin, so shares differ in
    length by at most one and every item belongs to exactly one rank)."""
    _check_rank(rank, world_size)
    return list(items[rank::world_size])


def batches(items: Sequence[T], batch_size: int) -> list[list[T]]:
    """``items`` cut into consecutive batches of ``batch_size`` (the last one may be shorter)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected an int >= 1")
    return [list(items[start : start + batch_size]) for start in range(0, len(items), batch_size)]


def steps(num_items: int, world_size: int) -> int:
    """Rounds every rank goes through when ``num_items`` are sharded over ``world_size`` ranks:
    ``ceil(num_items / world_size)`` (ranks with a shorter share sit out the last round)."""
    return -(-num_items // world_size)
