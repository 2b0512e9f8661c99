"""The ahead-of-time compile gate: every declared kernel compiles for sm_80 and sm_90 without a GPU,
without spills, half-precision tensor-core kernels really use tensor cores, and on sm_90 their
default configs use wgmma -- compiled with the signature and specialisation its launcher produces.

The fast tests compile each kernel's *default* config and most common launch variant for every
dtype and target; the ``slow`` test compiles every variant x config (several minutes on 2 cores;
``sgtriton kernels --report`` runs it too). Results are cached under ``$SGTRITON_CACHE_DIR/aot``
(default ``~/.cache/sgtriton/aot``), so reruns are fast.
"""

from __future__ import annotations

import pytest
import torch
import triton
from click.testing import CliRunner

from sgtriton.inspection.compile_gate import (
    DEFAULT_TARGETS,
    HALF_DTYPES,
    CompileResult,
    format_report,
    import_all_kernel_modules,
    kernel_source_hash,
    kernels_command,
    parse_ptxas_spills,
    parse_resource_usage,
    run_compile_gate,
    shipped_kernels,
    summarize,
    tensor_core_instructions,
)
from sgtriton.inspection.launches import capture_launch, example_launches, specialise
from sgtriton.ops import bias_act as bias_act_module
from sgtriton.ops._runtime import KERNELS, KernelConfig, declare_kernel

# ---- Captured from real runs (triton 3.9.0, its bundled ptxas and cuobjdump 13.1) of two
# ---- throwaway kernels: a 1-warp row normalisation of 8192 fp32 values (spills) and a 64x64x32
# ---- fp16 tl.dot; only the padding before cuobjdump's "/* 0x... */" encodings is shortened.

RESOURCE_USAGE_SPILLING_SM80 = """
Resource usage:
 Common:
  GLOBAL:0
 Function spill_kernel:
  REG:255 STACK:104 SHARED:0 LOCAL:0 CONSTANT[0]:384 TEXTURE:0 SURFACE:0 SAMPLER:0

\tcode for sm_80
\t\tFunction : spill_kernel
\t.headerflags\t@"EF_CUDA_TEXMODE_UNIFIED EF_CUDA_64BIT_ADDRESS EF_CUDA_SM80 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM80)"
        /*0000*/                   MOV R1, c[0x0][0x28] ;   /* 0x00000a0000017a02 */
                                        /* 0x000fe40000000f00 */
        /*0010*/                   S2R R9, SR_TID.X ;   /* 0x0000000000097919 */
        /*0020*/                   HFMA2.MMA R0, -RZ, RZ, 0, 2.384185791015625e-07 ;   /* 0x00000004ff007435 */
        /*1050*/                   STL [R1+0x10], R4 ;   /* 0x0000100401007387 */
        /*23b0*/               @P6 FMUL R244, R244, 0.25 ;   /* 0x3e800000f4f46820 */
"""

RESOURCE_USAGE_DOT_SM90 = """
Resource usage:
 Common:
  GLOBAL:0
 Function dot_kernel:
  REG:62 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:568 TEXTURE:0 SURFACE:0 SAMPLER:0

\tcode for sm_90a
\t.target\tsm_90a

\t\tFunction : dot_kernel
\t.headerflags\t@"EF_CUDA_ACCELERATORS EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;   /* 0x00000a00ff017b82 */
        /*0730*/                   HGMMA.64x64x16.F32 R24, gdesc[UR4].tnspB, RZ, !UPT ;   /* 0x40e00000041879f0 */
        /*0780*/                   HGMMA.64x64x16.F32 R24, gdesc[UR4].tnspB, R24, gsb0 ;  /* 0x40e00000041879f0 */
"""

SASS_DOT_SM80 = """
        /*06d0*/                   HMMA.16816.F32 R4, R32, R8.reuse, RZ ;   /* 0x000000082004723c */
        /*06e0*/                   HMMA.16816.F32 R12, R36, R8, RZ ;   /* 0x00000008240c723c */
"""

PTXAS_LOG_SPILLING_SM80 = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'spill_kernel' for 'sm_80'
ptxas info    : Function properties for spill_kernel
    104 bytes stack frame, 112 bytes spill stores, 112 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers, 104 bytes cumulative stack size, 384 bytes cmem[0]
ptxas info    : Compile time = 619.066 ms
"""

PTXAS_LOG_SPILLING_SM90 = """ptxas-blackwell info    : 0 bytes gmem
ptxas-blackwell info    : Compiling entry function 'spill_kernel' for 'sm_90a'
ptxas-blackwell info    : Function properties for spill_kernel
    248 bytes stack frame, 264 bytes spill stores, 264 bytes spill loads
ptxas-blackwell info    : Used 255 registers, used 0 barriers, 248 bytes cumulative stack size
ptxas-blackwell info    : Compile time = 806.399 ms
"""

PTXAS_LOG_CLEAN_SM90 = """ptxas-blackwell info    : 0 bytes gmem
ptxas-blackwell info    : Compiling entry function 'dot_kernel' for 'sm_90a'
ptxas-blackwell info    : Function properties for dot_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas-blackwell info    : Used 62 registers, used 1 barriers
"""


# --------------------------------------------------------------------------------------------
# Parsers and the pass/fail policy (no compiling)
# --------------------------------------------------------------------------------------------


def test_parse_resource_usage_reads_every_field_of_each_function():
    usage = parse_resource_usage(RESOURCE_USAGE_SPILLING_SM80)
    assert usage == {"spill_kernel": {"REG": 255, "STACK": 104, "SHARED": 0, "LOCAL": 0, "CONSTANT[0]": 384,
                                      "TEXTURE": 0, "SURFACE": 0, "SAMPLER": 0}}
    assert parse_resource_usage(RESOURCE_USAGE_DOT_SM90)["dot_kernel"]["SHARED"] == 1024
    assert parse_resource_usage("") == {}


def test_parse_ptxas_spills_for_both_ptxas_flavours():
    assert parse_ptxas_spills(PTXAS_LOG_SPILLING_SM80) == (112, 112)
    assert parse_ptxas_spills(PTXAS_LOG_SPILLING_SM90) == (264, 264)
    assert parse_ptxas_spills(PTXAS_LOG_CLEAN_SM90) == (0, 0)
    assert parse_ptxas_spills("") is None


def test_tensor_core_instructions_ignore_fma_on_the_mma_pipe():
    assert tensor_core_instructions(SASS_DOT_SM80) == ("HMMA",)
    assert tensor_core_instructions(RESOURCE_USAGE_DOT_SM90) == ("HGMMA",)
    # HFMA2.MMA is an FMA (a register move here), and the header names "MMA" nowhere as an opcode.
    assert tensor_core_instructions(RESOURCE_USAGE_SPILLING_SM80) == ()


def _result(**values) -> CompileResult:
    base = dict(kernel="k", config="BLOCK=64,w4,s2", dtype="fp16", target=90, num_warps=4, registers=40,
                spill_stores=0, spill_loads=0, shared_bytes=0, static_shared_bytes=0)
    base.update(values)
    return CompileResult(**base)


def test_hmma_fallback_on_sm90_fails_only_default_configs():
    fallback = dict(target=90, expects_tensor_cores=True, mma_ops=("HMMA",))
    assert _result(**fallback, default_config=True).problems() == ["HMMA fallback (no wgmma) in the default config"]
    assert _result(**fallback, dtype="fp32", default_config=True).hmma_fallback
    assert _result(**fallback).ok and _result(**fallback).hmma_fallback  # reported, not failed
    assert not _result(**{**fallback, "target": 80}, default_config=True).hmma_fallback
    assert _result(**{**fallback, "mma_ops": ("HGMMA",)}, default_config=True).ok


def test_problems_name_each_reason_to_fail():
    assert _result().ok
    assert _result(spill_stores=8, spill_loads=8).problems() == ["spills 8B/8B"]
    assert _result(error="CompilationError: boom").problems() == ["error"]
    assert _result(expects_tensor_cores=True).problems() == ["no tensor cores"]
    assert _result(expects_tensor_cores=True, mma_ops=("HGMMA",)).ok
    assert _result(expects_tensor_cores=True, dtype="fp32").ok  # fp32 dots may be ieee, off tensor cores
    assert _result(shared_bytes=240_000).problems()[0].startswith("smem")
    assert _result(registers=255, num_warps=16).problems()[0].startswith("regs")


def test_kernel_source_hash_follows_called_jit_helpers(monkeypatch):
    kernel = bias_act_module._bias_act_kernel
    before = kernel_source_hash(kernel)
    assert kernel_source_hash(kernel) == before

    @triton.jit
    def other_activation(v, alpha, ACT: triton.language.constexpr):
        return v * alpha

    monkeypatch.setattr(bias_act_module, "activate", other_activation)
    assert kernel_source_hash(kernel) != before


@triton.jit
def _copy_kernel(x_ptr, y_ptr, BLOCK: triton.language.constexpr):
    offs = triton.language.arange(0, BLOCK)
    triton.language.store(y_ptr + offs, triton.language.load(x_ptr + offs))


@triton.jit
def _strided_copy_kernel(x_ptr, y_ptr, n, stride, scale, BLOCK: triton.language.constexpr):
    offs = triton.language.arange(0, BLOCK)
    mask = offs < n
    triton.language.store(y_ptr + offs, triton.language.load(x_ptr + offs * stride, mask=mask) * scale, mask=mask)


def _strided_copy_launch(x, y, stride):
    _strided_copy_kernel[(1,)](x, y, y.numel(), stride, 2.0, BLOCK=64, num_warps=2, num_stages=1)


def test_capture_specialises_like_the_jit():
    """Aligned pointers and multiples of 16 get ``tt.divisibility``, a unit stride folds to 1, floats stay."""
    spec = declare_kernel("compile_gate_capture_double", _strided_copy_kernel, [KernelConfig({}, 2, 1)],
                          dtypes=("fp32",))
    try:
        x, y = torch.zeros(128), torch.zeros(65)
        launch = capture_launch(spec, lambda: _strided_copy_launch(x, y[1:], 1))
        found = specialise(spec, launch, 90)
        assert found.hints == {"x_ptr": "D", "n": "D", "stride": "=1"}  # y[1:] is 4 bytes off: no hint
        assert found.signature == {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32", "stride": "constexpr",
                                   "scale": "fp32", "BLOCK": "constexpr"}
        assert found.options == {"num_warps": 2, "num_stages": 1}
        unaligned = specialise(spec, capture_launch(spec, lambda: _strided_copy_launch(x[1:], y[:63], 3)), 90)
        assert unaligned.hints == {"y_ptr": "D"}
        assert globals()["_strided_copy_kernel"] is spec.fn  # the recorder is gone again
    finally:
        KERNELS.pop(spec.name, None)


def test_every_shipped_kernel_declares_example_launches_that_reach_its_kernel():
    import_all_kernel_modules()
    for name in shipped_kernels():
        spec = KERNELS[name]
        assert spec.launches is not None and spec.aot_signature is None, name
        calls = example_launches(spec, spec.dtypes[0])
        assert calls, name
        launch = capture_launch(spec, next(iter(calls.values())))
        found = specialise(spec, launch, 90)
        assert found.options["num_warps"] == spec.default_config.num_warps, name
        pointers = [arg for arg, kind in found.signature.items() if kind.startswith("*")]
        assert pointers and all(found.hints.get(arg) == "D" for arg in pointers[:1]), (name, found.hints)


def test_kernels_declared_outside_the_package_are_not_shipped_and_signature_errors_are_results():
    def broken_signature(config, dtype):
        raise KeyError("BLOCK_Q")

    spec = declare_kernel("compile_gate_test_double", _copy_kernel,
                          [KernelConfig({"BLOCK": 8}, 1, 1)], aot_signature=broken_signature, dtypes=("fp32",))
    try:
        assert spec.name not in shipped_kernels()
        results = run_compile_gate([spec.name], targets=(80, 90), use_cache=False)
    finally:
        KERNELS.pop(spec.name, None)
    assert [(r.target, r.problems()) for r in results] == [(80, ["error"]), (90, ["error"])]
    assert "aot_signature: KeyError" in results[0].error


# --------------------------------------------------------------------------------------------
# The gate itself
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gate_results() -> list[CompileResult]:
    failures = import_all_kernel_modules()
    assert not failures, f"kernel modules failed to import: {failures}"
    return run_compile_gate(targets=DEFAULT_TARGETS, default_config_only=True, default_variant_only=True)


def _fail_with_report(bad: list[CompileResult], results: list[CompileResult], what: str) -> None:
    if bad:
        details = "\n".join(f"{r.kernel} [{r.config}] {r.dtype} sm_{r.target}: {r.error or r.problems()}"
                            for r in bad)
        pytest.fail(f"{len(bad)} compile(s) with {what}:\n{details}\n\n{format_report(results)}\n"
                    f"{summarize(results)}")


def test_gate_covers_every_declared_kernel_dtype_and_target(gate_results):
    seen = {(r.kernel, r.dtype, r.target) for r in gate_results}
    expected = {(name, dtype, target) for name in shipped_kernels() for dtype in KERNELS[name].dtypes
                for target in DEFAULT_TARGETS}
    assert expected <= seen, f"not compiled: {sorted(expected - seen)}"


def test_every_kernel_compiles_for_sm80_and_sm90(gate_results):
    _fail_with_report([r for r in gate_results if r.error is not None], gate_results, "errors")


def test_no_kernel_spills_or_exceeds_the_target(gate_results):
    bad = [r for r in gate_results if r.error is None and not r.ok and "no tensor cores" not in r.problems()]
    _fail_with_report(bad, gate_results, "spills or resources beyond the target")


def test_default_conv_configs_use_wgmma_on_sm90(gate_results):
    convs = [r for r in gate_results if r.expects_tensor_cores and r.target >= 90 and r.error is None]
    assert convs
    _fail_with_report([r for r in convs if "HGMMA" not in r.mma_ops], gate_results, "no HGMMA on sm_90")


def test_gate_compiles_the_launched_specialisation(gate_results):
    """The hints come from the launcher: the up=2 layer's tensors are 16-byte aligned, its channels-last
    unit strides folded and the other strides divisible by 16 (what 16-byte vector copies need)."""
    up2 = next(r for r in gate_results if r.kernel == "modconv2d_up2" and r.dtype == "fp16" and r.target == 90)
    assert up2.variant == "demod-noise-clamp"
    assert up2.hints["x_ptr"] == up2.hints["w_ptr"] == up2.hints["out_ptr"] == "D"
    assert up2.hints["stride_xc"] == up2.hints["stride_oc"] == up2.hints["stride_si"] == "=1"
    assert up2.hints["stride_xw"] == up2.hints["stride_wi"] == up2.hints["stride_oh"] == "D"


@pytest.mark.slow
def test_every_variant_and_config_compiles_cleanly():
    """Every example launch (flag combination) with the default config, and every config with the
    most common launch, for each dtype and target (~580 compiles, about 12 minutes on 2 cores; the
    full cross product, twice that, is ``sgtriton kernels --report``)."""
    results = run_compile_gate(targets=DEFAULT_TARGETS, default_config_only=True)
    results += run_compile_gate(targets=DEFAULT_TARGETS, default_variant_only=True)
    variants = {(r.kernel, r.variant) for r in results}
    assert ("modconv2d", "plain") in variants and ("torgb", "no-skip") in variants
    _fail_with_report([r for r in results if not r.ok], results, "problems")


def test_half_precision_tensor_core_kernels_use_tensor_cores(gate_results):
    bad = [r for r in gate_results if r.error is None and "no tensor cores" in r.problems()]
    _fail_with_report(bad, gate_results, "no HMMA/HGMMA although declared uses_tensor_cores")
    checked = [r for r in gate_results if r.expects_tensor_cores and r.dtype in HALF_DTYPES]
    for r in checked:
        assert r.mma_ops, r
        if r.target >= 90:
            assert set(r.mma_ops) & {"HGMMA", "HMMA"}


def test_a_second_run_comes_from_the_cache(gate_results):
    first = next(r for r in gate_results if r.error is None)
    again = run_compile_gate([first.kernel], targets=(first.target,), default_config_only=True,
                             default_variant_only=True)
    assert again and all(r.cached for r in again)
    same = next(r for r in again if r.dtype == first.dtype)
    assert (same.registers, same.spills, same.shared_bytes) == (first.registers, first.spills, first.shared_bytes)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_kernels_command_lists_every_declared_kernel():
    result = CliRunner().invoke(kernels_command, [])
    assert result.exit_code == 0, result.output
    for name in shipped_kernels():
        assert name in result.output


def test_kernels_command_report_table_and_json(gate_results, tmp_path):
    json_path = tmp_path / "report.json"
    result = CliRunner().invoke(kernels_command, ["--report", "--kernel", "bias_act", "--default-config",
                                                  "--default-variant", "--json", str(json_path)])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("kernel ")).split()
    assert header[:6] == ["kernel", "variant", "config", "dtype", "target", "regs"]
    assert "sm_80" in result.output and "sm_90" in result.output
    assert "compiles of 1 kernel:" in result.output
    assert '"registers"' in json_path.read_text()


def test_kernels_command_rejects_unknown_kernel_and_target():
    result = CliRunner().invoke(kernels_command, ["--report", "--kernel", "no_such_kernel"])
    assert result.exit_code == 2 and "no_such_kernel" in result.output
    result = CliRunner().invoke(kernels_command, ["--report", "--target", "ampere"])
    assert result.exit_code == 2 and "ampere" in result.output
