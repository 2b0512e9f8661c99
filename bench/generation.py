"""Throughput of ``sgtriton generate`` as users run it: images/s for 1 process and for N ranks.

``python -m bench.generation`` runs the same job (``stylegan2-f`` at 256², ``--seeds 0-(S-1)``,
``--no-grid``, PNG) once as a single process (``python -m sgtriton generate``) and once per rank
count under ``torchrun --standalone --nproc-per-node N``, each in a fresh output folder, and reports
the job's own images/s (what the command prints: file writing included, process start-up and
network construction excluded). On a CPU every run gets the same total of ``--threads`` torch
threads (``OMP_NUM_THREADS = threads / ranks``), so the comparison is one process against the same
cores split into ranks; on CUDA each rank takes one GPU and the result is the per-GPU rate beside the
single-process one. Results go to ``bench/results/generation-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.env import REPO_ROOT, device_slug, environment
from sgtriton.files import atomic_write

RESULTS_DIR = REPO_ROOT / "bench" / "results"
_REPORTED = re.compile(r"wrote (\d+) image\(s\) to .* in ([0-9.]+) s")


def generate_command(ranks: int, args: list[str]) -> list[str]:
    if ranks == 1:
        return [sys.executable, "-m", "sgtriton", "generate", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
            "-m", "sgtriton", "generate", *args]


def run_once(ranks: int, job: list[str], threads: int, device: str) -> dict[str, Any]:
    """One run of the job on ``ranks`` processes: the job's images, seconds and images/s."""
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, threads // ranks)))
    with tempfile.TemporaryDirectory(prefix="sgtriton-bench-") as outdir:
        started = time.perf_counter()
        result = subprocess.run(generate_command(ranks, [*job, "--device", device, "--outdir", outdir]),
                                env=env, capture_output=True, text=True, cwd=REPO_ROOT)
        wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{ranks} rank(s) failed ({result.returncode}):\n{result.stderr[-2000:]}")
    match = _REPORTED.search(result.stdout)
    if match is None:
        raise RuntimeError(f"no 'wrote N image(s) ... in T s' line in the output:\n{result.stdout[-2000:]}")
    images, seconds = int(match.group(1)), float(match.group(2))
    return {"ranks": ranks, "threads_per_rank": max(1, threads // ranks), "images": images,
            "job_seconds": seconds, "images_per_second": images / seconds, "wall_seconds_with_startup": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="stylegan2-f")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=16, help="images per run [default: 16]")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--ranks", default="2", help="comma-separated rank counts besides 1 [default: 2]")
    parser.add_argument("--threads", type=int, default=2, help="total torch threads on a CPU [default: 2]")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    job = ["--preset", args.preset, "--resolution", str(args.resolution), "--seeds", f"0-{args.seeds - 1}",
           "--batch-size", str(args.batch_size), "--no-grid"]
    rows = []
    for ranks in [1, *(int(r) for r in args.ranks.split(","))]:
        if args.device == "cuda" and ranks > torch.cuda.device_count():
            print(f"skipping {ranks} ranks: {torch.cuda.device_count()} GPU(s) here")
            continue
        row = run_once(ranks, job, args.threads, args.device)
        if args.device == "cuda":
            row["images_per_second_per_gpu"] = row["images_per_second"] / ranks
        rows.append(row)
        print(f"{ranks} rank(s): {row['images']} images in {row['job_seconds']:.1f} s = "
              f"{row['images_per_second']:.2f} img/s ({row['wall_seconds_with_startup']:.1f} s with start-up)")
    info = environment(torch.device(args.device), args.threads)
    record = {"environment": info, "job": " ".join(job), "results": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"generation-{device_slug(info)}-{info['date']}.json"
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
