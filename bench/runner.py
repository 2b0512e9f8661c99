"""``python -m bench``: every case, every provider, one after another in one process.

Per case the reference runs first; every other provider's first output is checked against it,
its first call is timed as the cold start (compile, autotune, lazy set-up) and then its warm
latency is sampled: on a CPU by wall clock (``--warmup`` calls, then ``--repeats`` samples, the
providers of a case taking their samples in turns so that load changes hit them alike), on CUDA
with ``triton.testing.do_bench`` beside ``do_bench_cudagraph``. The table goes to the terminal,
the rows with their provenance to ``bench/results/<device>-<date>.json`` and the speedups to a PNG
beside it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench import cases as case_table
from bench.env import REPO_ROOT, device_slug, environment
from bench.providers import (
    BASELINE,
    PROVIDERS,
    Unavailable,
    check_accuracy,
    make_call,
    unavailable_from_error,
)
from bench.report import draw_chart, format_table, merge_rows, summarize, write_json
from bench.timing import (
    Stats,
    cpu_samples,
    cuda_samples,
    cudagraph_samples,
    first_call_ms,
    interleaved_cpu_samples,
)
from sgtriton.graph.cost import device_peak, roofline_fraction

RESULTS_DIR = REPO_ROOT / "bench" / "results"
#: Providers that replay CUDA graphs themselves: ``do_bench_cudagraph`` would capture a graph launch.
GRAPHED_PROVIDERS = ("triton-graph",)


@dataclass(frozen=True)
class Settings:
    warmup: int = 2
    repeats: int = 10
    min_sample_ms: float = 5.0
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    cudagraph: bool = True
    interleave: bool = True


def _status_row(case: case_table.Case, provider: str, status: str, reason: str) -> dict[str, Any]:
    return {"case": case.id, "group": case.group, "label": case.label, "dtype": case_table.DTYPE_NAMES[case.dtype],
            "batch": case.batch, "provider": provider, "status": status, "reason": reason}


def start_provider(case: case_table.Case, workload: case_table.Workload, provider: str, device: torch.device,
                   reference_out: torch.Tensor | None) -> tuple[dict[str, Any], Any, torch.Tensor | None]:
    """Set ``provider`` up on ``case``: time its first call (cold start) and check its output.

    Returns the row, the warm callable (``None`` when skipped or broken) and the first output.
    """
    excluded = case.exclusion(provider)
    if excluded:
        return _status_row(case, provider, "skipped", excluded), None, None
    try:
        call = make_call(provider, workload, device)
        cold_ms, out = first_call_ms(call, device)
    except Unavailable as exc:
        return _status_row(case, provider, "skipped", str(exc)), None, None
    except Exception as exc:  # a provider that breaks must not stop the run
        missing = unavailable_from_error(provider, exc)
        if missing is not None:
            return _status_row(case, provider, "skipped", str(missing)), None, None
        return _status_row(case, provider, "error", f"{type(exc).__name__}: {exc}"[:300]), None, None
    row = _status_row(case, provider, "ok", "")
    row["cold_ms"] = cold_ms
    if reference_out is not None and provider != BASELINE:
        acc = check_accuracy(out, reference_out, case.dtype)
        row.update(max_abs_error=acc.max_abs, relative_error=acc.relative, accuracy_ok=acc.ok)
    return row, call, out


def time_on_cuda(row: dict[str, Any], call, settings: Settings) -> Stats:
    """``do_bench`` samples, and ``do_bench_cudagraph`` beside them (recorded in ``row``)."""
    stats = Stats.from_samples(cuda_samples(call, settings.warmup_ms, settings.rep_ms))
    if settings.cudagraph and row["provider"] not in GRAPHED_PROVIDERS:
        try:
            graph = Stats.from_samples(cudagraph_samples(call, settings.rep_ms))
            row.update(cudagraph_median_ms=graph.median_ms, cudagraph_iqr_ms=graph.iqr_ms)
        except Exception as exc:  # capture fails for host syncs and CPU-side checks of device values
            row["cudagraph_error"] = f"{type(exc).__name__}: {exc}"[:200]
            torch.cuda.synchronize()
    return stats


def finish_row(row: dict[str, Any], stats: Stats, workload: case_table.Workload, peak) -> None:
    """Latency statistics, per-image figures, achieved rates, the roofline fraction, planned launches."""
    seconds = stats.median_ms / 1e3
    if row["provider"] in workload.launches:
        row["launches_per_call_planned"] = workload.launches[row["provider"]]
    row.update(median_ms=stats.median_ms, q1_ms=stats.q1_ms, q3_ms=stats.q3_ms, iqr_ms=stats.iqr_ms,
               samples=stats.samples, images=workload.images, per_image_ms=stats.median_ms / workload.images,
               images_per_s=workload.images / seconds)
    cost = workload.cost
    if cost is None:
        return
    row.update(flops=cost.flops, bytes=cost.bytes, tflops_per_s=cost.flops / seconds / 1e12,
               gbytes_per_s=cost.bytes / seconds / 1e9)
    row["roofline_fraction"] = roofline_fraction(cost, seconds, peak)
    if row.get("cudagraph_median_ms"):
        row["roofline_fraction_cudagraph"] = roofline_fraction(cost, row["cudagraph_median_ms"] / 1e3, peak)


def run_case(case: case_table.Case, providers: list[str], device: torch.device, settings: Settings,
             peak) -> list[dict[str, Any]]:
    """All ``providers`` on ``case``, baseline first; speedups filled in.

    On CUDA each provider is timed as soon as it is set up. On a CPU with ``settings.interleave``
    all providers are set up first and their samples are then taken in turns.
    """
    try:
        workload = case.build(device)
    except Exception as exc:
        return [_status_row(case, p, "error", f"building the case failed: {type(exc).__name__}: {exc}"[:300])
                for p in providers]
    # Baselines that exist for some cases only (nvlabs) are left out of the others' rows.
    ordered = [p for p in sorted(providers, key=lambda p: p != BASELINE)
               if p in ("reference", "compile", "triton") or p in workload.alternatives]
    interleave = settings.interleave and device.type != "cuda"
    rows: list[dict[str, Any]] = []
    waiting: dict[str, Any] = {}
    reference_out = None
    with torch.no_grad():
        for provider in ordered:
            print(f"  {case.id} / {provider} ...", file=sys.stderr, flush=True)
            row, call, out = start_provider(case, workload, provider, device, reference_out)
            if provider == BASELINE:
                reference_out = out
            del out
            rows.append(row)
            if call is None:
                continue
            if interleave:
                waiting[provider] = call  # compiled code must survive until every sample is taken
                continue
            if device.type == "cuda":
                stats = time_on_cuda(row, call, settings)
            else:
                stats = Stats.from_samples(cpu_samples(call, settings.warmup, settings.repeats,
                                                       settings.min_sample_ms))
            finish_row(row, stats, workload, peak)
            del call
            _release(device)
        if waiting:
            samples = interleaved_cpu_samples(waiting, settings.warmup, settings.repeats, settings.min_sample_ms)
            for row in rows:
                if row["provider"] in samples:
                    finish_row(row, Stats.from_samples(samples[row["provider"]]), workload, peak)
        waiting.clear()
        reference_out = None
        _release(device)
    base = next((r for r in rows if r["provider"] == BASELINE and r["status"] == "ok"), None)
    for row in rows:
        if base is None or row["status"] != "ok":
            continue
        row["speedup"] = base["median_ms"] / row["median_ms"]
        if base.get("cudagraph_median_ms") and row.get("cudagraph_median_ms"):
            row["speedup_cudagraph"] = base["cudagraph_median_ms"] / row["cudagraph_median_ms"]
    return rows


def readme_line(rows: list[dict[str, Any]]) -> str:
    """Issue 2's check: the reference path per image against the NVlabs-style baseline (README example)."""
    preset, res, batch = case_table.README_CASE
    label = f"{preset} {res}x{res} N{batch}"
    found = {r["provider"]: r for r in rows if r.get("label") == label and r["dtype"] == "fp32" and r["status"] == "ok"}
    if BASELINE not in found or "nvlabs" not in found:
        return ""
    ref, nv = found[BASELINE], found["nvlabs"]
    return (f"\nREADME example ({label}, fp32): reference {ref['per_image_ms']:.0f} ms/image "
            f"({ref['images_per_s']:.2f} img/s), NVlabs-style {nv['per_image_ms']:.0f} ms/image: reference time / "
            f"NVlabs-style time = {ref['median_ms'] / nv['median_ms']:.2f} (target <= 1)")


def _release(device: torch.device) -> None:
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def select_cases(device_type: str, suite: str, groups: list[str] | None, pattern: str | None) -> list[case_table.Case]:
    chosen = case_table.all_cases(device_type, suite)
    if groups:
        wanted = set(groups)
        if "ops" in wanted:
            wanted |= {c.group for c in chosen if c.group != "generator"}
        chosen = [c for c in chosen if c.group in wanted]
    if pattern:
        regex = re.compile(pattern)
        chosen = [c for c in chosen if regex.search(c.id)]
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda or cpu [default: cuda if available]")
    parser.add_argument("--suite", choices=case_table.SUITES, default="quick", help="case set [default: quick]")
    parser.add_argument("--groups", default=None,
                        help="comma-separated groups: modconv, torgb, upfirdn2d, bias_act, adain, mapping, "
                             "generator, or 'ops' for every op group [default: all]")
    parser.add_argument("--filter", default=None, help="regular expression on case ids, e.g. 'stylegan2-f 256'")
    parser.add_argument("--providers", default=",".join(PROVIDERS),
                        help=f"comma-separated subset of {','.join(PROVIDERS)} [default: all]")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads [default: 2]")
    parser.add_argument("--warmup", type=int, default=2, help="CPU: warm-up calls after the cold one [default: 2]")
    parser.add_argument("--repeats", type=int, default=10, help="CPU: timed samples [default: 10]")
    parser.add_argument("--min-sample-ms", type=float, default=5.0,
                        help="CPU: repeat tiny ops within a sample until it lasts this long [default: 5]")
    parser.add_argument("--no-interleave", action="store_true",
                        help="CPU: time each provider's samples in one block instead of taking them in turns")
    parser.add_argument("--warmup-ms", type=float, default=25.0, help="CUDA: do_bench warm-up budget [default: 25]")
    parser.add_argument("--rep-ms", type=float, default=100.0, help="CUDA: do_bench repetition budget [default: 100]")
    parser.add_argument("--no-cudagraph", action="store_true", help="CUDA: skip do_bench_cudagraph")
    parser.add_argument("--fresh-compile-cache", action="store_true",
                        help="point Inductor's and Triton's caches at an empty directory, so cold starts include "
                             "the whole compilation")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory [default: bench/results]")
    parser.add_argument("--merge", action="store_true",
                        help="merge into an existing results file of the same device and date (runs in chunks)")
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    args = parser.parse_args(argv)
    unknown = set(args.providers.split(",")) - set(PROVIDERS)
    if unknown:
        parser.error(f"--providers: unknown {sorted(unknown)}; expected some of {PROVIDERS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    groups = args.groups.split(",") if args.groups else None
    cases = select_cases(device.type, args.suite, groups, args.filter)
    if args.list:
        for case in cases:
            print(case.id)
        return 0
    if not cases:
        print("no case matches --groups/--filter", file=sys.stderr)
        return 2
    if args.fresh_compile_cache:
        cache = tempfile.mkdtemp(prefix="sgtriton-bench-cache-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache, "inductor")
        os.environ["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
    torch.set_num_threads(args.threads)
    settings = Settings(args.warmup, args.repeats, args.min_sample_ms, args.warmup_ms, args.rep_ms,
                        not args.no_cudagraph, not args.no_interleave)
    env = environment(device, torch.get_num_threads())
    peak = device_peak(env["device_name"]) if device.type == "cuda" else None
    providers = args.providers.split(",")

    load = env["load_average"][0] if env["load_average"] else 0.0
    if device.type == "cpu" and load > 0.5 * (env["cpu_cores"] or 1):
        print(f"warning: load average {load:.1f} on {env['cpu_cores']} cores before the run: other processes compete "
              f"for the CPU and the timings will be noisy (with more torch threads than idle cores, every "
              f"parallel region waits for a descheduled thread)", file=sys.stderr)
    path = args.out / f"{device_slug(env)}-{env['date']}.json"
    earlier = json.loads(path.read_text())["results"] if args.merge and path.exists() else []
    settings_dict = {**asdict(settings), "suite": args.suite, "groups": groups, "filter": args.filter,
                     "providers": providers, "threads": args.threads, "argv": sys.argv[1:],
                     "roofline_peak": asdict(peak) if peak else None}
    rows: list[dict[str, Any]] = []
    for i, case in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] {case.id}", file=sys.stderr, flush=True)
        rows.extend(run_case(case, providers, device, settings, peak))
        if not args.no_save and i < len(cases):  # a run cut short by a time limit keeps its finished cases
            so_far = merge_rows(earlier, rows)
            write_json(path, env, {**settings_dict, "partial": f"{i} of {len(cases)} cases"}, so_far,
                       summarize(so_far))

    rows = merge_rows(earlier, rows)
    summary = summarize(rows)
    print(format_table(rows, summary))
    dirty = " (uncommitted changes)" if env["git_dirty"] else ""
    print(f"\ndevice: {env['device_name']}, {env['cpu_cores']} cores, {env['torch_threads']} torch threads; "
          f"torch {env['torch']}, triton {env['triton']}; commit {str(env['git_commit'])[:10]}{dirty}; "
          f"{env['timestamp']}; load average {env['load_average']}")
    print(readme_line(rows))
    if args.no_save:
        return 0
    write_json(path, env, settings_dict, rows, summary)
    title = (f"sgtriton speedup vs reference eager (log scale)\n{env['device_name']} - {env['date']} - "
             f"torch {env['torch']} - commit {str(env['git_commit'])[:10]}{dirty}")
    draw_chart(path.with_suffix(".png"), rows, title)
    print(f"wrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path} and its .png")
    return 0
