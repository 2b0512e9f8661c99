"""The tuner: benchmark every config of every kernel a piece of code launches, keep the fastest.

:func:`tune_call` runs ``call()`` -- one launcher call, an op, or a whole generator forward --
and tunes each (kernel, shape bucket) it launches:

1. **Record.** ``call()`` runs once with a config selector that notes every ``launch_config(spec,
   key)`` and the bucket of its key (:mod:`sgtriton.autotune.buckets`).
2. **Prune.** For each (kernel, bucket) not yet in the cache, the compile report drops configs
   that spill or need more shared memory than the GPU has (:mod:`sgtriton.autotune.pruning`);
   the default config is always kept as the baseline.
3. **Measure.** ``call()`` runs once more per config index ``i``, with config ``i`` forced for
   every (kernel, bucket) being tuned. Each kernel's launch is intercepted (its ``run`` method,
   which ``kernel[grid](...)`` calls): the exact launch -- arguments, grid, constexprs that the
   launcher derived from config ``i`` -- is replayed under the benchmarker (median of
   ``triton.testing.do_bench``, which flushes L2 between runs), then launched for real so the rest
   of ``call()`` sees correct data. Arguments a kernel writes in place (``spec.extra["mutates"]``,
   a tuple of argument names, or the ``restore`` argument) are cloned before the trial and copied
   back after it.
4. **Store.** The fastest config per (kernel, bucket), with every timing, goes to the cache.

The benchmarker is injectable -- ``benchmarker(fn, spec, config) -> milliseconds`` -- so the logic
is tested with deterministic fake timings. Under Triton's interpreter only default configs run
and nothing is timed: :func:`tune_call` then only reports which kernels were launched.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sgtriton.autotune.buckets import Bucket, bucket_dtype, bucket_key, bucket_label
from sgtriton.autotune.cache import CacheEntry, TuningCache, config_to_json
from sgtriton.autotune.environment import Environment, current_environment, source_hash
from sgtriton.autotune.policy import installed_policy, lookup_config, resolve_policy
from sgtriton.autotune.pruning import Pruner, default_pruner, split_candidates
from sgtriton.ops import _runtime
from sgtriton.ops._runtime import KERNELS, KernelConfig, KernelSpec, interpreter_active, set_config_selector

#: ``benchmarker(fn, spec, config) -> median milliseconds`` of one call of ``fn``.
Benchmarker = Callable[[Callable[[], object], KernelSpec, KernelConfig], float]

INTERPRETER_NOTE = "interpreter: only the default config runs, nothing benchmarked"
NO_GPU_NOTE = "no CUDA GPU: nothing benchmarked"


def gpu_benchmarker(fn: Callable[[], object], spec: KernelSpec, config: KernelConfig) -> float:
    """Median milliseconds of ``fn`` by ``triton.testing.do_bench`` (L2 flushed before every run)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


@dataclass
class TuneResult:
    """What one (kernel, bucket) runs with after tuning, and what it cost to find out."""

    kernel: str
    bucket: str | None
    config: KernelConfig
    #: ``tuned`` (measured now), ``cache``, ``table`` or ``default``.
    source: str
    best_ms: float | None = None
    default_ms: float | None = None
    tuning_s: float = 0.0
    timings: dict[str, float | None] = field(default_factory=dict)
    pruned: tuple[str, ...] = ()
    launches: int = 0
    note: str = ""

    @property
    def speedup(self) -> float | None:
        """Default config's time over the chosen config's time (``None`` if not both measured)."""
        if self.best_ms and self.default_ms:
            return self.default_ms / self.best_ms
        return None


# --------------------------------------------------------------------------------------------
# Intercepting launches
# --------------------------------------------------------------------------------------------

#: ``on_launch(spec, label, index, config, replay, tensors_to_restore)`` -- a forced launch is about to run.
LaunchObserver = Callable[[KernelSpec, str, int, KernelConfig, Callable[[], object], list[Any]], None]

_trials_active = False


class _Trials:
    """Context: a selector that records (and optionally forces) configs, and hooks on kernel launches."""

    def __init__(self, specs: Sequence[KernelSpec], forced: Mapping[tuple[str, str], tuple[int, KernelConfig]]
                 | None = None, on_launch: LaunchObserver | None = None,
                 restore: Mapping[str, Sequence[str]] | None = None) -> None:
        self.specs = list(specs)
        self.names = {spec.name for spec in self.specs}
        self.forced = dict(forced or {})
        self.on_launch = on_launch
        self.restore = dict(restore or {})
        #: ``(kernel, label) -> (bucket, first launch key)``, in launch order.
        self.seen: dict[tuple[str, str], tuple[Bucket, Hashable]] = {}
        #: Launches per (kernel, label); label ``None`` when no selection preceded it (the interpreter).
        self.launches: Counter[tuple[str, str | None]] = Counter()
        #: The (kernel, label) whose real launch is running (set while it runs; left set if it raised).
        self.current: tuple[str, str | None] | None = None
        # id(kernel function) -> the spec and bucket of the latest launch_config for it. Specs may
        # share one function (modconv2d / modconv2d_up2): a launch belongs to the latest selection.
        self._selected: dict[int, tuple[KernelSpec, str]] = {}
        self._previous: Any = None
        self._hooked: list[tuple[Any, Any]] = []

    def _select(self, spec: KernelSpec, key: Hashable) -> KernelConfig | None:
        bucket = bucket_key(spec, key)
        label = bucket_label(bucket)
        self._selected[id(spec.fn)] = (spec, label)
        if spec.name in self.names:
            self.seen.setdefault((spec.name, label), (bucket, key))
            forced = self.forced.get((spec.name, label))
            if forced is not None:
                return forced[1]
        return self._previous(spec, key) if self._previous is not None else None

    def _hook(self, specs: list[KernelSpec], fn: Any, original: Callable[..., Any]) -> Callable[..., Any]:
        unselected_name = ", ".join(spec.name for spec in specs)

        def run(*args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
            if warmup:
                return original(*args, grid=grid, warmup=warmup, **kwargs)
            # A launch belongs to the launch_config call just before it; one without (the
            # interpreter never asks selectors, or a launcher given an explicit config) is only counted.
            selected = self._selected.pop(id(fn), None)
            if selected is None:
                self.launches[(unselected_name, None)] += 1
                return original(*args, grid=grid, warmup=False, **kwargs)
            spec, label = selected
            self.launches[(spec.name, label)] += 1
            forced = self.forced.get((spec.name, label)) if spec.name in self.names else None
            if forced is not None and self.on_launch is not None:
                names = self.restore.get(spec.name, spec.extra.get("mutates", ()))
                tensors = _named_args(fn, args, kwargs, names)
                self.on_launch(spec, label, forced[0], forced[1],
                               lambda: original(*args, grid=grid, warmup=False, **kwargs), tensors)
            self.current = (spec.name, label)
            result = original(*args, grid=grid, warmup=False, **kwargs)
            self.current = None
            return result

        return run

    def __enter__(self) -> _Trials:
        global _trials_active
        if _trials_active:
            raise RuntimeError("tuning is already running in this process (tune_call/warmup cannot be nested)")
        _trials_active = True
        self._previous = getattr(_runtime, "_config_selector", None)
        set_config_selector(self._select)
        by_function: dict[int, list[KernelSpec]] = {}
        for spec in self.specs:
            by_function.setdefault(id(spec.fn), []).append(spec)
        try:
            for specs in by_function.values():
                fn = specs[0].fn
                own = fn.__dict__.get("run") if hasattr(fn, "__dict__") else None
                original = own if own is not None else type(fn).run.__get__(fn, type(fn))
                fn.run = self._hook(specs, fn, original)
                self._hooked.append((fn, own))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        global _trials_active
        for fn, own in reversed(self._hooked):
            if own is None:
                del fn.run
            else:
                fn.run = own
        self._hooked.clear()
        set_config_selector(self._previous)
        _trials_active = False


def _named_args(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], names: Iterable[str]) -> list[Any]:
    """The tensors passed as the kernel arguments ``names`` (positional or keyword)."""
    arg_names = list(getattr(fn, "arg_names", []) or [])
    found = []
    for name in names:
        if name in kwargs:
            found.append(kwargs[name])
        elif name in arg_names and arg_names.index(name) < len(args):
            found.append(args[arg_names.index(name)])
        else:
            raise ValueError(f"mutates: kernel argument {name!r} not found; kernel arguments are {arg_names}")
    return [t for t in found if hasattr(t, "clone") and hasattr(t, "copy_")]


# --------------------------------------------------------------------------------------------
# Tuning
# --------------------------------------------------------------------------------------------


@dataclass
class _Job:
    spec: KernelSpec
    bucket: Bucket
    label: str
    candidates: list[KernelConfig]
    pruned: list[KernelConfig]
    launches: int = 0
    timings: dict[int, float | None] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


def pick_best(timings: Mapping[int, float | None]) -> int | None:
    """Index of the fastest finite timing; ties go to the earlier config (the default first)."""
    finite = [(ms, index) for index, ms in timings.items() if ms is not None and math.isfinite(ms) and ms >= 0]
    return min(finite)[1] if finite else None


def tune_call(
    call: Callable[[], object],
    *,
    specs: Iterable[KernelSpec] | None = None,
    policy: str | None = "full",
    environment: Environment | None | Literal["auto"] = "auto",
    cache: TuningCache | None = None,
    benchmarker: Benchmarker | None = None,
    pruner: Pruner | None = None,
    retune: bool = False,
    restore: Mapping[str, Sequence[str]] | None = None,
    progress: Any = None,
) -> list[TuneResult]:
    """Run ``call()`` and tune every (kernel, bucket) it launches; one :class:`TuneResult` each.

    ``policy='full'`` tunes what the cache lacks (everything with ``retune=True``); ``'cached'``
    and ``'off'`` only report what that policy would run. ``specs`` limits tuning to some kernels
    (default: all declared). ``environment``/``cache`` default to the installed policy's (else
    the current GPU and its cache). ``benchmarker`` defaults to :func:`gpu_benchmarker`, ``pruner`` to
    :func:`~sgtriton.autotune.pruning.default_pruner`. ``restore`` maps a kernel name to the
    arguments it writes in place (else ``spec.extra["mutates"]``). ``progress`` is a tqdm-like bar
    (``total``, ``update``, ``refresh``, ``set_postfix_str``); its total grows by the trial count.
    ``call()`` runs ``1 + (largest number of candidate configs)`` times.
    """
    mode = resolve_policy(policy)
    spec_list = list(KERNELS.values()) if specs is None else list(specs)
    by_name = {spec.name: spec for spec in spec_list}

    if interpreter_active():
        with _Trials(spec_list) as trials:
            call()
        return [TuneResult(name, None, by_name[name.split(", ")[0]].default_config, "default", launches=count,
                           note=INTERPRETER_NOTE) for (name, _), count in trials.launches.items()]

    installed = installed_policy()
    if environment == "auto":
        env = installed.environment() if installed is not None else current_environment()
    else:
        env = environment
    if cache is None and env is not None:
        cache = installed.cache(env) if installed is not None else TuningCache(env)

    with _Trials(spec_list) as trials:
        call()
    results: dict[tuple[str, str], TuneResult] = {}
    jobs: dict[tuple[str, str], _Job] = {}
    for (name, label), (bucket, _key) in trials.seen.items():
        spec = by_name[name]
        launches = trials.launches[(name, label)]
        if env is None:
            results[(name, label)] = TuneResult(name, label, spec.default_config, "default", launches=launches,
                                                note=NO_GPU_NOTE)
            continue
        choice = lookup_config(spec, label, env, cache, "cached" if mode == "full" else mode)
        if mode != "full" or (choice.source == "cache" and not retune):
            results[(name, label)] = _result_from_choice(name, label, choice, launches)
            continue
        pruner = pruner or default_pruner()  # looked up only once something needs tuning
        candidates, pruned = split_candidates(spec, bucket_dtype(bucket), env.capability, pruner)
        if len(candidates) == 1:
            results[(name, label)] = TuneResult(
                name, label, spec.default_config, "default", launches=launches,
                pruned=tuple(str(c) for c in pruned), note="a single candidate config: nothing to compare")
            continue
        jobs[(name, label)] = _Job(spec, bucket, label, candidates, pruned, launches)

    if jobs:
        _measure(call, spec_list, jobs, benchmarker or gpu_benchmarker, restore, progress)
        entries = []
        for key, job in jobs.items():
            results[key], entry = _finish(job)
            if entry is not None:
                entries.append(entry)
        if cache is not None:
            cache.store(entries)
    return [results[key] for key in trials.seen]


def _result_from_choice(name: str, label: str, choice: Any, launches: int) -> TuneResult:
    entry = choice.entry
    if entry is None:
        return TuneResult(name, label, choice.config, choice.source, launches=launches)
    return TuneResult(name, label, choice.config, choice.source, best_ms=entry.best_ms, default_ms=entry.default_ms,
                      timings=dict(entry.timings), launches=launches, note=f"tuned {entry.tuned_at}".strip())


def _measure(call: Callable[[], object], specs: Sequence[KernelSpec], jobs: dict[tuple[str, str], _Job],
             benchmarker: Benchmarker, restore: Mapping[str, Sequence[str]] | None, progress: Any) -> None:
    """Benchmark every candidate of every job, one ``call()`` per candidate index."""
    total = sum(len(job.candidates) for job in jobs.values())
    if progress is not None:
        progress.total = (progress.total or 0) + total
        progress.refresh()

    def advance(job: _Job, config: KernelConfig) -> None:
        if progress is not None:
            if hasattr(progress, "set_postfix_str"):
                progress.set_postfix_str(f"{job.spec.name} {job.label} {config}", refresh=False)
            progress.update(1)

    def on_launch(spec: KernelSpec, label: str, index: int, config: KernelConfig, replay: Callable[[], object],
                  tensors: list[Any]) -> None:
        job = jobs[(spec.name, label)]
        if index in job.timings:
            return  # measured at an earlier launch of the same bucket
        saved = [t.clone() for t in tensors]
        start = time.perf_counter()
        try:
            job.timings[index] = float(benchmarker(replay, spec, config))
        except Exception as exc:  # a config that fails to compile or launch is just not a candidate
            job.timings[index] = None
            job.errors[index] = f"{type(exc).__name__}: {exc}"
        finally:
            for tensor, copy in zip(tensors, saved, strict=True):
                tensor.copy_(copy)
        job.seconds += time.perf_counter() - start
        advance(job, config)

    for index in range(max(len(job.candidates) for job in jobs.values())):
        forced = {key: (index, job.candidates[index]) for key, job in jobs.items() if index < len(job.candidates)}
        while forced:
            trials = _Trials(specs, forced, on_launch, restore)
            try:
                with trials:
                    call()
                break
            except Exception as exc:
                culprit = trials.current
                if culprit not in forced:
                    raise
                # The real launch with this config failed: drop the config and run the pass again.
                job = jobs[culprit]  # type: ignore[index]
                if index not in job.timings:
                    advance(job, forced[culprit][1])  # type: ignore[index]
                job.timings[index] = None
                job.errors[index] = f"{type(exc).__name__}: {exc}"
                del forced[culprit]  # type: ignore[arg-type]
        for key, (_, config) in forced.items():
            job = jobs[key]
            if index not in job.timings:  # never launched with this config (the launch was data-dependent)
                job.timings[index] = None
                job.errors[index] = "not launched in the trial run"
                advance(job, config)


def _finish(job: _Job) -> tuple[TuneResult, CacheEntry | None]:
    spec = job.spec
    timings = {str(job.candidates[i]): ms for i, ms in sorted(job.timings.items())}
    pruned = tuple(str(c) for c in job.pruned)
    best = pick_best(job.timings)
    default_ms = job.timings.get(0)
    if best is None:
        errors = "; ".join(f"{job.candidates[i]}: {e}" for i, e in sorted(job.errors.items()))
        result = TuneResult(spec.name, job.label, spec.default_config, "default", timings=timings, pruned=pruned,
                            tuning_s=job.seconds, launches=job.launches, note=f"every config failed ({errors})")
        return result, None
    config = job.candidates[best]
    best_ms = job.timings[best]
    failed = len(job.errors)
    note = f"{failed} config(s) failed" if failed else ""
    result = TuneResult(spec.name, job.label, config, "tuned", best_ms=best_ms, default_ms=default_ms,
                        tuning_s=job.seconds, timings=timings, pruned=pruned, launches=job.launches, note=note)
    entry = CacheEntry(
        kernel=spec.name, source_hash=source_hash(spec), bucket=job.label, config=config_to_json(config),
        best_ms=best_ms, default_ms=default_ms, timings=timings, tuning_s=round(job.seconds, 3),
        tuned_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    return result, entry


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def format_results(results: Sequence[TuneResult]) -> str:
    """A fixed-width summary: kernel, bucket, config, time, speedup over the default, tuning time, source."""
    header = ("kernel", "shape bucket", "config", "time (ms)", "vs default", "tuning (s)", "source")
    rows = []
    for r in results:
        rows.append((
            r.kernel,
            r.bucket if r.bucket is not None else "(not observed)",
            str(r.config),
            f"{r.best_ms:.4f}" if r.best_ms is not None else "-",
            f"{r.speedup:.2f}x" if r.speedup is not None else "-",
            f"{r.tuning_s:.1f}" if r.source == "tuned" else "-",
            r.source + (f" ({r.note})" if r.note else ""),
        ))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)
