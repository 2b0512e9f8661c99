"""Running under ``torchrun``: who am I, which device is mine, and the few collectives a job needs.

``torchrun`` (and SLURM through it) sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` for each
process. With ``WORLD_SIZE > 1`` :func:`session` joins the process group (``env://``): NCCL when the
job runs on CUDA, one GPU per local rank (``cuda:LOCAL_RANK``), gloo on the CPU. Without those
variables (or with ``WORLD_SIZE=1``) it is a single process and every collective here is a no-op,
so the code path of a plain ``sgtriton generate`` is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class LaunchError(ValueError):
    """Launcher variables or a device request that this process cannot honour."""


@dataclass(frozen=True)
class Topology:
    """This process's place in the job and the device it owns."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: Any = "cpu"  # torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect_launch(env: Mapping[str, str] = os.environ) -> tuple[int, int, int] | None:
    """``(world_size, rank, local_rank)`` from the launcher's variables, or ``None`` outside a launcher."""
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return None
    values = []
    for name in LAUNCH_VARIABLES:
        text = env.get(name, "0" if name == "LOCAL_RANK" else None)
        if text is None or not text.strip().isdigit():
            raise LaunchError(f"${name}={text!r}: expected a non-negative int (set by torchrun)")
        values.append(int(text))
    world_size, rank, local_rank = values
    if world_size < 1 or rank >= world_size:
        raise LaunchError(f"$RANK={rank}, $WORLD_SIZE={world_size}: expected 0 <= RANK < WORLD_SIZE")
    return world_size, rank, local_rank


def _device_for_rank(requested: str | None, local_rank: int, distributed: bool):
    import torch

    from sgtriton.backends import default_device

    device = torch.device(requested or default_device())
    if device.type != "cuda" or not distributed:
        return device
    if device.index is not None:
        raise LaunchError(f"--device={requested!r}: under torchrun each local rank takes cuda:LOCAL_RANK; "
                         f"pass --device cuda (or nothing)")
    if local_rank >= torch.cuda.device_count():
        raise LaunchError(f"$LOCAL_RANK={local_rank}: this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s); start at most that many processes per node (--nproc-per-node)")
    return torch.device("cuda", local_rank)


@contextmanager
def session(requested_device: str | None = None, env: Mapping[str, str] = os.environ) -> Iterator[Topology]:
    """This process's :class:`Topology`; joins (and on exit leaves) the process group under torchrun."""
    launch = detect_launch(env)
    world_size, rank, local_rank = launch if launch is not None else (1, 0, 0)
    device = _device_for_rank(requested_device, local_rank, world_size > 1)
    topology = Topology(world_size, rank, local_rank, device)
    if not topology.distributed:
        yield topology
        return
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    try:
        yield topology
    finally:
        dist.destroy_process_group()


def all_gather(topology: Topology, value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    if not topology.distributed:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * topology.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def sum_over_ranks(topology: Topology, count: int) -> int:
    """``count`` summed over all ranks (a collective: every rank must call it the same number of times)."""
    if not topology.distributed:
        return count
    import torch
    import torch.distributed as dist

    total = torch.tensor([count], dtype=torch.int64, device=topology.device)
    dist.all_reduce(total)
    return int(total.item())


def barrier(topology: Topology) -> None:
    if topology.distributed:
        import torch.distributed as dist

        dist.barrier()
