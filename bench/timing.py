"""Timers: wall clock on CPU, ``triton.testing.do_bench`` and ``do_bench_cudagraph`` on CUDA.

Every timer returns per-call samples in milliseconds, summarised as median and interquartile
range (:class:`Stats`). The first call of a provider (compile, autotune, lazy initialisation) is
timed separately by :func:`first_call_ms` and never mixed into the warm samples.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stats:
    """Median and quartiles of per-call times in milliseconds."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    samples: int

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> Stats:
        if not samples_ms:
            raise ValueError("samples_ms: expected at least one timing")
        if len(samples_ms) == 1:
            (t,) = samples_ms
            return cls(t, t, t, 1)
        q1, median, q3 = statistics.quantiles(samples_ms, n=4, method="inclusive")
        return cls(median, q1, q3, len(samples_ms))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_call_ms(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Time the first call of ``fn`` (cold start: compile, tune, lazy set-up); return it and its output."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3, out


def cpu_samples(fn: Callable[[], object], warmup: int, repeats: int, min_sample_ms: float = 5.0) -> list[float]:
    """Wall-clock samples of ``fn`` in ms per call.

    After ``warmup`` calls, the number of calls per sample is chosen so that one sample lasts at
    least ``min_sample_ms`` (timer resolution and Python overhead stay negligible for tiny ops);
    ``repeats`` samples are taken.
    """
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    one_ms = (time.perf_counter() - start) * 1e3
    calls = max(1, int(min_sample_ms / max(one_ms, 1e-6)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) * 1e3 / calls)
    return samples


def interleaved_cpu_samples(fns: dict[str, Callable[[], object]], warmup: int, repeats: int,
                            min_sample_ms: float = 5.0) -> dict[str, list[float]]:
    """Like :func:`cpu_samples` for several functions, taking their samples in turns.

    Round ``r`` takes sample ``r`` of every function one after another, so a change in the
    machine's load during the run (other processes, thermal or frequency drift) hits all of them
    alike instead of biasing whichever ran during the busy moment.
    """
    calls = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        start = time.perf_counter()
        fn()
        one_ms = (time.perf_counter() - start) * 1e3
        calls[name] = max(1, int(min_sample_ms / max(one_ms, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - start) * 1e3 / calls[name])
    return samples


def cuda_samples(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 100) -> list[float]:
    """``triton.testing.do_bench`` samples (ms per call; L2 flushed before each call)."""
    import triton.testing

    return list(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all"))


def cudagraph_samples(fn: Callable[[], object], rep_ms: float = 100) -> list[float]:
    """``triton.testing.do_bench_cudagraph`` samples: ``fn`` captured in a CUDA graph, no launch overhead.

    Raises whatever capture raises (host synchronisation, CPU-side checks on device values, ...).
    """
    import triton.testing

    return list(triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="all"))
