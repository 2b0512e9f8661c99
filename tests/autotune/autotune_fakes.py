"""Test doubles for the tuner: kernels that run on CPU tensors without Triton, a launcher that asks
``launch_config`` like a real one, a fake GPU environment and a benchmarker with fixed timings."""

from __future__ import annotations

import torch
from triton.runtime.jit import KernelInterface

from sgtriton.autotune.cache import CacheEntry, TuningCache
from sgtriton.autotune.environment import Environment
from sgtriton.ops._runtime import KERNELS, KernelConfig, declare_kernel, launch_config

FAKE_ENV = Environment("Fake GPU 9000", 90, "3.9.0", "2.13.0")

#: BLOCK -> milliseconds for the fake benchmarker; the default (first) config is BLOCK=64.
BLOCKS = (64, 128, 256, 32)
TIMES = {64: 3.0, 128: 1.0, 256: 2.0, 32: 5.0}


class FakeKernel(KernelInterface):
    """``y = x * 2`` (or ``x += 1`` in place) on CPU; remembers every launch's BLOCK."""

    arg_names = ["x_ptr", "y_ptr", "n", "BLOCK"]

    def __init__(self, in_place: bool = False, fail_block: int | None = None) -> None:
        self.in_place = in_place
        self.fail_block = fail_block
        self.blocks: list[int] = []

    def run(self, *args, grid, warmup, **kwargs):
        x, y, n = args
        block = kwargs["BLOCK"]
        if block == self.fail_block:
            raise RuntimeError(f"out of resources with BLOCK={block}")
        self.blocks.append(block)
        if self.in_place:
            x.add_(1)
        else:
            y.copy_(x * 2)


def declare_fake(name: str, **kernel_kwargs) -> object:
    configs = [KernelConfig({"BLOCK": b}, num_warps=4, num_stages=1) for b in BLOCKS]
    return declare_kernel(name, FakeKernel(**kernel_kwargs), configs, aot_signature=lambda c, d: ({}, {}))


def undeclare(*names: str) -> None:
    for name in names:
        KERNELS.pop(name, None)


def launch(spec, x: torch.Tensor, key=None) -> torch.Tensor:
    """A launcher: ask for the config of this shape, derive the grid from it, launch."""
    if key is None:
        key = (("dtype", "fp32"), ("batch", x.shape[0]), ("cin", x.shape[1]))
    config = launch_config(spec, key)
    y = x if spec.fn.in_place else torch.empty_like(x)
    block = config.meta["BLOCK"]
    spec.fn[(max(1, -(-x.numel() // block)),)](x, y, x.numel(), BLOCK=block)
    return y


class FakeBenchmarker:
    """Returns :data:`TIMES` by BLOCK; calls the replay ``calls_per_trial`` times like do_bench would."""

    def __init__(self, times=None, calls_per_trial: int = 1, fail_blocks=()) -> None:
        self.times = dict(TIMES if times is None else times)
        self.calls_per_trial = calls_per_trial
        self.fail_blocks = set(fail_blocks)
        self.trials: list[tuple[str, int]] = []

    def __call__(self, fn, spec, config: KernelConfig) -> float:
        block = config.meta["BLOCK"]
        self.trials.append((spec.name, block))
        if block in self.fail_blocks:
            raise RuntimeError("compile failed")
        for _ in range(self.calls_per_trial):
            fn()
        return self.times[block]


def never_benchmark(fn, spec, config):
    raise AssertionError(f"benchmarked {spec.name} {config} although the policy forbids it")


class FakeBar:
    """The part of tqdm the tuner uses."""

    def __init__(self) -> None:
        self.total = 0
        self.n = 0
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n

    def refresh(self) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text


class ToyGenerator(torch.nn.Module):
    """Enough of the Generator interface for ``warmup``: ``z_dim``, ``c_dim``, ``G(z, c, ...)``."""

    z_dim = 4
    c_dim = 0

    def __init__(self, spec, launcher=launch) -> None:
        super().__init__()
        self.spec = spec
        self.launcher = launcher
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.calls: list[dict] = []

    def forward(self, z, c, truncation_psi=1.0, noise_mode="const", force_fp32=False):
        self.calls.append({"batch": z.shape[0], "force_fp32": force_fp32})
        return self.launcher(self.spec, z.to(torch.float32).repeat(1, 2) * self.weight)


def write_entries(root: str, tag: str, count: int, barrier) -> None:
    """Child process body of the concurrent-writers test: store ``count`` entries one at a time."""
    cache = TuningCache(FAKE_ENV, root)
    barrier.wait()
    for i in range(count):
        cache.store([CacheEntry(kernel="shared_kernel", source_hash="h1", bucket=f"{tag}-{i}",
                                config={"meta": {"BLOCK": 128}, "num_warps": 4, "num_stages": 1}, best_ms=1.0)])
