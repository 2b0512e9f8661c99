"""Helpers for the generation tests: a small checkpoint (fast enough that two ranks under the
interpreter-free reference backend finish in seconds), and ways to run ``sgtriton generate`` in this
process or under ``torchrun`` with two gloo ranks on the CPU."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import sgtriton
from sgtriton.cli import main

#: A stylegan2-f generator at 32^2 with few channels: the same code paths as config F, 100x cheaper.
SMALL_NETWORK = {"img_resolution": 32, "z_dim": 32, "w_dim": 32, "mapping_kwargs": {"num_layers": 2},
                 "synthesis_kwargs": {"channel_base": 256, "channel_max": 16}}


def small_generator(seed: int = 3, **overrides):
    """The small network; its noise strengths are set non-zero (fresh NVlabs layers start at 0) so
    that noise changes the images."""
    G = sgtriton.build_generator("stylegan2-f", seed=seed, **{**SMALL_NETWORK, **overrides})
    for name, parameter in G.named_parameters():
        if name.endswith("noise_strength"):
            parameter.data.fill_(0.5)
    return G


def run_cli(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def torchrun_command(args: list[str], nproc: int = 2, module: bool = True) -> list[str]:
    """``torchrun --standalone --nproc-per-node N -m sgtriton ARGS`` (``torch.distributed.run`` is torchrun)."""
    target = ["-m", "sgtriton"] if module else []
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            *target, *[str(a) for a in args]]


def torchrun_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env["OMP_NUM_THREADS"] = "1"  # what torchrun picks anyway; set to keep its warning out of the log
    return env


def torchrun(args: list[str], nproc: int = 2, module: bool = True, timeout: float = 240) -> str:
    result = subprocess.run(torchrun_command(args, nproc, module), env=torchrun_env(), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"torchrun failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def file_digests(folder: Path, pattern: str = "seed*") -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob(pattern))}
