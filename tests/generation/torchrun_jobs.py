"""Run under ``torchrun`` by ``test_torchrun.py``: several generation jobs in one process group (one
launch instead of one per job). ``python torchrun_jobs.py OUTDIR`` writes OUTDIR/<job>/ for each job
in :data:`JOBS`; the test runs the same jobs in one process and compares the files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from generation_helpers import small_generator

from sgtriton.generation import distributed
from sgtriton.generation.run import run_generation


def conditional_network():
    return small_generator(seed=5, c_dim=3)


def projected_ws(G) -> np.ndarray:
    """Seven ws ``[7, num_ws, w_dim]``, bit-identical in every process (a mapping network's output would
    depend on the number of BLAS threads, and the manifest records the ws' sha256)."""
    return np.random.RandomState(0).randn(7, G.num_ws, G.w_dim).astype(np.float32) * 0.5


#: job name -> (network factory, run_generation keywords without the network-dependent ws).
JOBS = {
    "class-trunc": (conditional_network, {"seeds": list(range(11)), "class_idx": 2, "truncation_psi": 0.6,
                                          "batch_size": 3}),
    "random-noise": (small_generator, {"seeds": [9, 3, 4, 20, 21, 22, 1], "noise_mode": "random",
                                       "batch_size": 2, "file_format": "npz"}),
    "projected-w": (small_generator, {"projected": True, "noise_mode": "random", "batch_size": 2}),
}


def run_job(name: str, outdir: Path, topology: distributed.Topology | None = None) -> None:
    factory, options = JOBS[name]
    G = factory()
    options = dict(options)
    if options.pop("projected", False):
        options["projected_ws"] = projected_ws(G)
    run_generation(G, outdir / name, topology=topology, show_progress=False, grid=False, **options)


if __name__ == "__main__":
    with distributed.session("cpu") as topology:
        assert topology.world_size > 1, "expected to run under torchrun"
        for job in JOBS:
            run_job(job, Path(sys.argv[1]), topology)
