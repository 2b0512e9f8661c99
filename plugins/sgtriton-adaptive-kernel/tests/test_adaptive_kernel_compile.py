"""Ahead-of-time compile gate for the plugin's kernels: the default config and most common launch
variant of each declared specialisation, fp32 and fp16, for sm_80 and sm_90, without a GPU -- no
errors, no spills, shared memory and registers within the target, tensor-core instructions in fp16,
wgmma on sm_90. (The full matrix: ``sgtriton kernels --report --kernel adaptive_modconv2d ...``;
results are cached under ``$SGTRITON_CACHE_DIR/aot``, so reruns are fast.)"""

from __future__ import annotations

from sgtriton.inspection.compile_gate import DEFAULT_TARGETS, run_compile_gate

from sgtriton_adaptive_kernel.kernel import KERNEL_SPECS


def test_default_configs_compile_for_every_target_without_problems():
    names = [spec.name for spec in KERNEL_SPECS.values()]
    results = run_compile_gate(names, default_config_only=True, default_variant_only=True)
    results = [r for r in results if r.kernel in names]
    assert {(r.kernel, r.dtype, r.target) for r in results} == {
        (name, dtype, target) for name in names for dtype in ("fp32", "fp16") for target in DEFAULT_TARGETS}
    failed = {(r.kernel, r.dtype, r.target): r.error or r.problems() for r in results if not r.ok}
    assert not failed, failed
    assert all(r.mma_ops for r in results)
    assert all("HGMMA" in r.mma_ops for r in results if r.target >= 90)
