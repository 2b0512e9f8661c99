"""The gpu tier (tests/gpu) covers every declared kernel, and is collected (skipped) here."""

import subprocess
import sys
from pathlib import Path

import sgtriton_adaptive_kernel.ops  # noqa: F401  (declares the plugin's kernels)

from sgtriton.ops import _runtime

ROOT = Path(__file__).resolve().parents[1]


def declared_kernels() -> dict:
    """sgtriton's and the plugin's kernels (not the toy kernels some tests declare for a while)."""
    return {name: spec for name, spec in _runtime.KERNELS.items()
            if getattr(spec.fn, "fn", spec.fn).__module__.startswith(("sgtriton.", "sgtriton_adaptive_kernel."))}


def test_every_declared_kernel_has_a_production_case():
    sys.path.insert(0, str(ROOT / "tests" / "gpu"))
    try:
        import test_production
    finally:
        sys.path.pop(0)
    missing = set(declared_kernels()) - set(test_production.RUNNERS)
    assert not missing, f"kernels without a gpu-tier case: {sorted(missing)}"
    assert not set(test_production.RUNNERS) - set(declared_kernels()), "a gpu-tier case names no declared kernel"


def test_gpu_tier_collects_every_kernel_and_dtype():
    out = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "tests/gpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    for name, spec in declared_kernels().items():
        for dtype in spec.dtypes:
            assert any(f"[{name}-{dtype}-b8-64]" in i for i in ids), f"{name} {dtype} not in the gpu tier"
    assert any("test_config_f_at_1024_against_float64" in i for i in ids)
