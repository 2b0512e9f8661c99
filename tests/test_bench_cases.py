"""The benchmark tables hold what the speed claims need (``bench/cases.py``; nothing is timed here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench.cases import SHORT_GPU_CASES, all_cases  # noqa: E402
from bench.providers import PROVIDERS  # noqa: E402


def test_quick_gpu_suite_has_config_f_at_every_size_precision_and_batch():
    ids = {c.id for c in all_cases("cuda", "quick")}
    for res in (256, 1024):
        for batch in (1, 8, 32):
            for dtype in ("fp16", "fp32"):
                assert f"generator:stylegan2-f {res}x{res} N{batch}:{dtype}" in ids
    assert {"reference", "compile", "triton", "triton-graph", "nvlabs"} <= set(PROVIDERS)


def test_short_suite_is_the_device_checks_config_f_cases():
    cases = all_cases("cuda", "short")
    assert [c.id for c in cases] == ["generator:stylegan2-f 256x256 N1:fp16", "generator:stylegan2-f 256x256 N1:fp32",
                                     "generator:stylegan2-f 1024x1024 N8:fp16"]
    assert len(cases) == len(SHORT_GPU_CASES)
    compiled = [c.id for c in cases if c.exclusion("compile") is None]
    assert compiled == ["generator:stylegan2-f 1024x1024 N8:fp16"]  # the case the speed goal names
    assert SHORT_GPU_CASES[-1][3] == torch.float16


def test_bench_list_runs_on_a_cpu():
    out = subprocess.run([sys.executable, "-m", "bench", "--suite", "short", "--list", "--device", "cpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["generator:stylegan2-f", "256x256", "N1:fp32"]
