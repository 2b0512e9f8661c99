"""The static performance model (``sgtriton kernels --model``): SASS parsing on hand-written
snippets, the model's arithmetic on a hand-made launch, the work formulas on captured launches,
the whole-generator capture against ``sgtriton plan``, and the command line's errors.

The ``slow`` test runs the whole model (captures and compiles a generator's launches for sm_90).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

import sgtriton.ops.modconv as modconv
import sgtriton.ops.torgb as torgb
from sgtriton.graph.cost import DEVICE_PEAKS
from sgtriton.graph.plan import plan_rows
from sgtriton.inspection.capture import GeneratorLaunch, capture_generator, model_generator
from sgtriton.inspection.compile_gate import kernels_command
from sgtriton.inspection.launches import CapturedLaunch, capture_launch, example_launches
from sgtriton.inspection.model import (
    CompiledKernel,
    LaunchModel,
    fill_captured_tensors,
    model_json,
    model_launch,
    occupancy,
    total,
)
from sgtriton.inspection.sass import (
    SassStats,
    access_width,
    find_loops,
    mma_flops,
    mma_input,
    mma_per_warpgroup,
    mma_shape,
    parse_instructions,
    sass_stats,
)
from sgtriton.inspection.work import Work, launch_work, tensor_bytes
from sgtriton.ops._runtime import KERNELS, KernelConfig

H200 = next(peak for peak in DEVICE_PEAKS if peak.name == "H200")

# ---- Hand-written SASS in cuobjdump's layout (encodings omitted; the parser ignores them).
# ---- One kernel: a prologue, a 4-instruction loop without MMAs (0x40..0x70), a main loop with two
# ---- HGMMAs (0x90..0xf0, holding a NOP that does not count), an epilogue and the trap after EXIT.

SASS_TWO_LOOPS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_CTAID.X ;
        /*0020*/                   LDG.E.64 R2, desc[UR4][R4.64] ;
        /*0030*/                   IMAD R3, R0, 0x40, RZ ;
        /*0040*/                   LDG.E.U16 R6, desc[UR4][R8.64] ;
        /*0050*/                   FFMA R7, R6, R6, R7 ;
        /*0060*/                   ISETP.GE.AND P0, PT, R3, 0x10, PT ;
        /*0070*/              @!P0 BRA 0x40 ;
        /*0080*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0090*/                   LDGSTS.E.BYPASS.128 [R10], desc[UR4][R12.64] ;
        /*00a0*/                   WARPGROUP.ARRIVE ;
        /*00b0*/                   HGMMA.64x64x16.F32 R24, gdesc[UR8].tnspB, R24 ;
        /*00c0*/                   NOP ;
        /*00d0*/                   HGMMA.64x64x16.F32 R24, gdesc[UR8].tnspB, R24, gsb0 ;
        /*00e0*/                   LDG.E R9, desc[UR4][R14.64] ;
        /*00f0*/               @P1 BRA 0x90 ;
        /*0100*/                   STG.E.U16 desc[UR4][R16.64], R24 ;
        /*0110*/                   STG.E.128 desc[UR4][R18.64], R28 ;
        /*0120*/                   EXIT ;
        /*0130*/                   BRA 0x130;
"""

# ---- Older cuobjdump prints labels; here a nested pair: an outer loop holding an inner MMA loop.
SASS_LABELS_NESTED = """
.L_x_0:
        /*0000*/                   IMAD R1, R1, 0x2, RZ ;
.L_x_1:
        /*0010*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0020*/                   HMMA.16816.F32 R16, R8, R14, R16 ;
        /*0030*/              @P0 BRA `(.L_x_1) ;
        /*0040*/                   IADD3 R2, R2, 0x1, RZ ;
        /*0050*/              @P1 BRA `(.L_x_0) ;
        /*0060*/                   EXIT ;
"""


def test_loops_are_backward_branches_and_the_trap_is_not_one():
    instructions = parse_instructions(SASS_TWO_LOOPS)
    assert [(hex(loop.start), hex(loop.end)) for loop in find_loops(instructions)] == [("0x40", "0x70"),
                                                                                         ("0x90", "0xf0")]
    assert "NOP" not in {i.opcode for i in instructions}


def test_main_loop_is_the_mma_loop_with_its_counts_and_widths():
    stats = sass_stats(SASS_TWO_LOOPS)
    assert stats.main_loop == (0x90, 0xF0)
    assert stats.loop_instructions == 6  # 0x90..0xf0 without the NOP
    assert stats.loop_mma == {"HGMMA.64x64x16.F32": 2}
    assert stats.loop_global == {"LDG.4B": 1, "LDGSTS.16B": 1}
    assert stats.other_loop_instructions == 4
    assert stats.outside_instructions == stats.instructions - 6 - 4 == 9
    assert stats.kernel_global == {"LDG.2B": 1, "LDG.4B": 1, "LDG.8B": 1, "LDGSTS.16B": 1, "STG.16B": 1,
                                   "STG.2B": 1}


def test_labels_resolve_and_the_innermost_mma_loop_wins():
    stats = sass_stats(SASS_LABELS_NESTED)
    assert stats.loops == [(0x0, 0x50), (0x10, 0x30)]
    assert stats.main_loop == (0x10, 0x30)
    assert stats.loop_instructions == 3 and stats.loop_mma == {"HMMA.16816.F32": 2}
    # The outer loop contains the main loop, so its other instructions count as outside.
    assert stats.other_loop_instructions == 0 and stats.outside_instructions == 4


def test_without_mma_the_largest_innermost_loop_is_main():
    sass = SASS_TWO_LOOPS.replace("HGMMA.64x64x16.F32", "FFMA")
    assert sass_stats(sass).main_loop == (0x90, 0xF0)  # 6 instructions beat 4
    assert sass_stats("        /*0000*/   EXIT ;").main_loop is None


def test_mma_shapes_scopes_and_rates():
    assert mma_shape("HGMMA.64x128x16.F32.BF16") == (64, 128, 16)
    assert mma_shape("HMMA.16816.F32") == (16, 8, 16) and mma_shape("HMMA.1688.F32.TF32") == (16, 8, 8)
    assert mma_flops("HGMMA.64x64x16.F32") == 2 * 64 * 64 * 16
    assert mma_per_warpgroup("HGMMA.64x64x8.F32.TF32") and not mma_per_warpgroup("HMMA.16816.F32")
    assert mma_input("HGMMA.64x64x8.F32.TF32") == "tf32" and mma_input("HMMA.16816.F32.BF16") == "fp16"


@pytest.mark.parametrize("opcode,width", [("LDG.E.128", 16), ("LDG.E.64", 8), ("LDG.E", 4), ("LDG.E.U16", 2),
                                          ("LDGSTS.E.BYPASS.128", 16), ("STG.E.U16", 2), ("LDG.E.U8", 1)])
def test_access_widths(opcode, width):
    (instruction,) = parse_instructions(f"        /*0000*/                   {opcode} R0, [R2.64] ;")
    assert access_width(instruction) == width


# --------------------------------------------------------------------------------------------
# The model's arithmetic
# --------------------------------------------------------------------------------------------


def test_occupancy_takes_the_tightest_resource():
    # 128 regs x 4 warps = 16 KB registers (4 CTAs); 50 KB shared (+1 KB reserved): 4 CTAs; threads: 16.
    occ = occupancy(128, 4, 50 * 1024, H200)
    assert occ.by_limit == {"registers": 4, "shared": 4, "threads": 16, "cap": 32} and occ.ctas == 4
    assert occupancy(32, 1, 0, H200).ctas == 32  # the CTA cap
    # 170 regs x 32 lanes = 5440 per warp, allocated as 5632 (22 x 256): 11 warps, 2 CTAs (3 without rounding)
    assert occupancy(170, 4, 0, H200).by_limit["registers"] == 2
    assert occupancy(64, 4, 300 * 1024, H200).ctas == 0  # more shared memory than a block may have


def test_model_of_a_hand_made_launch():
    sass = SassStats(instructions=1220, main_loop=(0x100, 0x200), loop_instructions=100,
                     loop_mma={"HGMMA.64x64x16.F32": 2}, other_loop_instructions=20, outside_instructions=50,
                     kernel_mma={"HGMMA.64x64x16.F32": 2})
    programs = 132 * 4 * 2  # two full waves of 4 CTAs per SM
    work = Work("fc", programs, main_trips=10, flops=10**9, useful_flops=5 * 10**8, bytes=10**6, other_trips=5)
    compiled = CompiledKernel(registers=128, spills=0, shared_bytes=50 * 1024, num_warps=4, sass=sass)
    launch = GeneratorLaunch(0, "bias_act", "synthesis.b8.conv1", 8, KernelConfig({}), CapturedLaunch((1,), (), {}))
    layer = model_launch(launch, work, compiled, H200)

    n = 100 * 10 + 20 * 5 + 50
    issue = 4 * n / 4
    mma = 2 * 10 * (4 / 4) * (2 * 64 * 64 * 16) / 4096  # one warpgroup, 4096 fp16 FLOP/clk/SM
    assert layer.instructions_per_warp == n and layer.issue_cycles == issue and layer.mma_cycles == mma
    assert layer.waves == 2
    assert layer.compute_s == pytest.approx(2 * max(4 * issue, n, 4 * mma) / 1.83e9)
    assert layer.memory_s == pytest.approx(1e6 / 4.3e12)
    assert layer.modelled_s == max(layer.compute_s, layer.memory_s)
    assert layer.roofline_s == pytest.approx(max(1e9 / 989.4e12, 1e6 / 4.8e12), rel=1e-4)
    assert layer.useful_roofline_s == pytest.approx(5e8 / 989.4e12, rel=1e-4)
    # A small grid: 8 programs put one CTA on 8 SMs, so the wave lasts one CTA's time.
    small = model_launch(launch, Work("fc", 8, 10, 0, 0, 0, other_trips=5), compiled, H200)
    assert small.waves == 1 and small.compute_s == pytest.approx(max(issue, n, mma) / 1.83e9)
    # One warp alone cannot use four schedulers: it issues at most one instruction per clock.
    one_warp = CompiledKernel(registers=32, spills=0, shared_bytes=0, num_warps=1, sass=SassStats(
        instructions=400, outside_instructions=400))
    lone = model_launch(launch, Work("fc", 8, 0, 0, 0, 0), one_warp, H200)
    assert lone.issue_cycles == 100 and lone.compute_s == pytest.approx(400 / 1.83e9)


def test_totals_are_sums():
    sass = SassStats(instructions=10, outside_instructions=10)
    compiled = CompiledKernel(32, 0, 0, 4, sass)
    launch = GeneratorLaunch(0, "bias_act", "x", None, KernelConfig({}), CapturedLaunch((1,), (), {}))
    layers = [model_launch(launch, Work("bias_act", p, 0, 100 * p, 100 * p, 10**6 * p), compiled, H200)
              for p in (1, 1000)]
    data = total(layers)
    assert data["modelled_us"] == pytest.approx(sum(layer.modelled_s for layer in layers) * 1e6)
    assert data["fraction"] == pytest.approx(sum(la.roofline_s for la in layers) / sum(la.modelled_s for la in layers))
    assert data["bytes"] == 1001 * 10**6 and data["launches"] == 2


# --------------------------------------------------------------------------------------------
# Work formulas on captured launches
# --------------------------------------------------------------------------------------------


def test_modconv_up2_work_counts_executed_and_useful_flops():
    spec = modconv.MODCONV_UP2_KERNEL
    launch = capture_launch(spec, example_launches(spec, "fp16", torch.device("cpu"))["demod-noise"])
    work = launch_work(spec, launch)
    n, c, res, meta = 2, 512, 16, spec.default_config.meta
    assert work.kind == "conv"
    assert work.programs == math.ceil(res * res / meta["BLOCK_M"]) * math.ceil(c / meta["BLOCK_N"]) * 4 * n
    assert work.main_trips == 9 * math.ceil(c / meta["BLOCK_K"])
    assert work.flops == 2 * n * c * (2 * res) ** 2 * c * 9 and work.useful_flops * 4 == work.flops
    # x (fp16) + the GEMM weight as the kernel reads it (four fp16 phase weights) + styles s' (fp16,
    # from the prologue) + noise + strength + bias + out (fp16).
    expected = (n * c * res * res * 2 + 4 * c * c * 9 * 2 + n * c * 2 + n * (2 * res) ** 2 * 4 + 4 + c * 4
                + n * c * (2 * res) ** 2 * 2)
    assert work.bytes == expected


def test_torgb_work_and_broadcast_bytes():
    spec = torgb.TORGB_KERNEL
    launch = capture_launch(spec, example_launches(spec, "fp32", torch.device("cpu"))["skip-clamp"])
    work = launch_work(spec, launch)
    assert work.kind == "torgb" and work.main_trips == math.ceil(512 / spec.default_config.meta["BLOCK_K"])
    assert work.flops == work.useful_flops == 2 * 2 * 3 * 32 * 32 * 512
    assert tensor_bytes(torch.zeros(1, 1, 4, 4).expand(8, 1, 4, 4)) == 16 * 4  # stride 0 counts once


def test_an_unknown_kernel_is_modelled_generically_with_a_note():
    spec = KERNELS["bias_act"]
    x = torch.empty(4, 8)
    work = launch_work(type(spec)("not_declared_anywhere", spec.fn, spec.configs), CapturedLaunch((3,), (x, x), {}))
    assert (work.programs, work.flops, work.bytes) == (3, 0, 4 * 8 * 4) and "no work formula" in work.notes[0]


# --------------------------------------------------------------------------------------------
# The whole-generator capture matches the plan
# --------------------------------------------------------------------------------------------


def _plan_kernels(G) -> list[str]:
    names = [re.sub(r"[:(].*$", "", kernel) for row in plan_rows(G, "cuda") for kernel in row.kernels]
    return [name for name in names if name in KERNELS]


def _check_capture_matches_plan(preset: str) -> list[GeneratorLaunch]:
    G = model_generator(preset, 8, "fp16")
    launches = capture_generator(G, 2, "fp16", 90)
    assert len(launches) == len(_plan_kernels(G))
    assert Counter(launch.kernel for launch in launches) == Counter(_plan_kernels(G))
    return launches


def test_capture_of_a_generator_matches_the_plan_and_names_its_layers():
    launches = _check_capture_matches_plan("stylegan2-f")
    by_layer = {launch.layer: launch for launch in launches}
    conv0 = by_layer["synthesis.b8.conv0"]
    assert conv0.kernel == "modconv2d_up2" and conv0.resolution == 8
    assert by_layer["synthesis.b8.conv0.affine"].kernel == "fully_connected"
    assert by_layer["synthesis.b8.torgb"].kernel == "torgb"  # shares its function with the convs
    # fp16 blocks launch fp16 kernels as on CUDA (b8 is NVlabs' fp16 block at 8^2); b4 stays fp32.
    assert conv0.launch.args[0].dtype == torch.float16
    assert by_layer["synthesis.b4.conv1"].launch.args[0].dtype == torch.float32
    # Tables unmeasured: every launch gets its kernel's untuned choice for its shape.
    assert all(launch.config in launch.spec.configs for launch in launches)
    assert conv0.config == modconv.MODCONV_KERNEL.untuned_config((("spatial", 4 * 4), ("cout", 512)))


def test_capture_ignores_a_table_config_outside_the_launch_dtype(monkeypatch):
    # A (hand-edited) table naming the fp16-only tall tile for every modulated conv: the fp32
    # launches run their untuned tile, as launch_config decides on a GPU, and the capture says so.
    from sgtriton.inspection import capture

    tall = next(c for c in modconv.MODCONV_CONFIGS if c.dtypes)
    monkeypatch.setattr(capture, "_table_config",
                        lambda spec, key, target: tall if spec is modconv.MODCONV_KERNEL else None)
    G = model_generator("stylegan2-f", 8, "fp16")
    launches = [launch for launch in capture_generator(G, 2, "fp16", 90) if launch.kernel == "modconv2d"]
    dtypes = {launch.launch.args[0].dtype for launch in launches}
    assert dtypes == {torch.float16, torch.float32}
    for launch in launches:
        fp16 = launch.launch.args[0].dtype == torch.float16
        assert (launch.config is tall) == fp16
        assert launch.launch.kwargs["BLOCK_M"] == launch.config.meta["BLOCK_M"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["stylegan1", "revised"])
def test_capture_matches_the_plan_for_every_block_type(preset):
    _check_capture_matches_plan(preset)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["--model", "--target", "sm_75"], "--target=sm_75"),
    (["--model", "--target", "80,90"], "one target"),
    (["--model", "--target", "sm_x"], "compute capabilities"),
    (["--model", "--target", "sm_80", "--device", "h200"], "--device=h200"),
    (["--model", "--report"], "--report"),
    (["--preset", "stylegan2-f"], "--preset: only applies with --model"),
    (["--model", "--preset", "nope"], "--preset='nope'"),
])
def test_model_command_line_errors(args, message):
    result = CliRunner().invoke(kernels_command, args)
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_measure_without_cuda_is_a_clear_error():
    result = CliRunner().invoke(kernels_command, ["--model", "--measure", "--resolution", "8"])
    assert result.exit_code == 2 and "--measure" in result.output and "no CUDA device" in result.output


@pytest.mark.slow
def test_model_json_for_stylegan2_f_at_64():
    result = CliRunner().invoke(kernels_command, ["--model", "--preset", "stylegan2-f", "--resolution", "64",
                                                  "--batch", "2", "--dtype", "fp16", "--target", "sm_90", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"layers", "totals"}
    layers = data["layers"]
    required = {"name", "kind", "resolution", "kernel", "config", "modelled_us", "roofline_us"}
    assert all(required <= set(layer) for layer in layers)
    assert {layer["kind"] for layer in layers} >= {"conv", "torgb", "fc"}
    for layer in layers:
        assert layer["modelled_us"] >= layer["roofline_us"] > 0, layer
        assert layer["spills"] == 0 and layer["registers"] > 0
    convs = [layer for layer in layers if layer["kind"] == "conv" and layer["dtype"] == "fp16"]
    assert convs and all(any(k.startswith("HGMMA") for k in layer["mma_kind"]) for layer in convs)
    totals = data["totals"]
    assert totals["all"]["modelled_us"] == pytest.approx(sum(layer["modelled_us"] for layer in layers))
    assert totals["all"]["roofline_us"] == pytest.approx(sum(layer["roofline_us"] for layer in layers))
    synthesis = [layer for layer in layers if layer["name"].startswith("synthesis")]
    assert totals["synthesis"]["modelled_us"] == pytest.approx(sum(la["modelled_us"] for la in synthesis))
    style = [la for la in layers if 32 <= (la["resolution"] or 0) <= 512
             and ((la["kind"] == "conv" and la["kh"] == 3) or la["kind"] == "prologue")]
    # conv0 and conv1 of b32 and b64, each with its prologue launch
    assert totals["style_convs_32_512"]["launches"] == len(style) == 8
    assert totals["all"]["launches"] == len(layers)


def test_model_json_of_a_generator_model_has_the_documented_schema():
    sass = SassStats(instructions=10, outside_instructions=10)
    launch = GeneratorLaunch(0, "bias_act", "synthesis.b8.conv1", 8, KernelConfig({}),
                             CapturedLaunch((1,), (torch.empty(2, 2), None, torch.empty(2, 2)), {}))
    layer: LaunchModel = model_launch(launch, Work("bias_act", 1, 0, 8, 8, 64), CompiledKernel(16, 0, 0, 4, sass),
                                      H200)
    from sgtriton.inspection.model import GeneratorModel

    data = model_json(GeneratorModel("stylegan2-f", 8, 2, "fp16", 90, H200, [layer], {}))
    assert list(data["layers"][0])[:7] == ["name", "kind", "resolution", "kernel", "config", "modelled_us",
                                           "roofline_us"]
    assert set(data) == {"layers", "totals"}
    assert set(data["totals"]) == {"all", "style_convs_32_512", "synthesis", "mapping", "setup"}
    assert data["totals"]["setup"]["device"] == "H200"


def test_measure_relaunches_each_captured_kernel_with_its_arguments(monkeypatch):
    import math

    import triton

    from sgtriton.inspection.model import GeneratorModel, measure_launches
    from sgtriton.ops import bias_act

    spec = KERNELS["bias_act"]
    x, b = torch.empty(2, 4, 3, 3), torch.empty(4)
    lrelu = bias_act.ACTIVATIONS["lrelu"].kernel_code
    launch = capture_launch(spec, lambda: bias_act._bias_act_launch(x, b, 1, lrelu, 0.2, math.sqrt(2), None))
    item = GeneratorLaunch(0, spec.name, "synthesis.b4.conv1", 4, spec.default_config, launch)
    layer = model_launch(item, launch_work(spec, launch), CompiledKernel(32, 0, 0, 4, SassStats()), H200)
    timed = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the interpreter stands in for the GPU
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn: (fn(), timed.append(fn), 0.25)[-1])
    measure_launches(GeneratorModel("stylegan2-f", 8, 2, "fp32", 90, H200, [layer], {}))
    assert len(timed) == 1 and layer.measured_s == pytest.approx(0.25e-3)
    y = next(a for a in launch.args if isinstance(a, torch.Tensor) and a.shape == x.shape and a is not x)
    torch.testing.assert_close(y, torch.nn.functional.leaky_relu(x + b[:, None, None], 0.2) * math.sqrt(2))


def test_measure_fills_each_captured_storage_once_with_finite_values():
    out = torch.empty(4, 8)
    values = [out, out[1:], torch.empty(3, dtype=torch.float16), torch.zeros(2, dtype=torch.int64), None, 2.0]
    assert fill_captured_tensors(values) == 2
    assert torch.isfinite(out).all() and (out >= 0.2).all() and (values[2].float() <= 0.8).all()
