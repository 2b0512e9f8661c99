"""The plugin as sgtriton sees it: entry point, CLI, options, parameters, declared kernels, custom op."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from click.testing import CliRunner
from sgtriton import registry
from sgtriton.blocks.nodes import LayerNode
from sgtriton.cli import main
from sgtriton.inspection.launches import capture_launch, example_launches, specialise
from sgtriton.ops._runtime import KERNELS, jit_function

from sgtriton_adaptive_kernel.block import AdaptiveKernelBlock
from sgtriton_adaptive_kernel.kernel import (
    ADAPTIVE_MODCONV_CONFIGS,
    KERNEL_SPECS,
    UNROLL_MAX_BANK,
    _adaptive_modconv_kernel,
)

BLOCK_KWARGS = json.dumps({"bank_size": 4})


def test_the_entry_point_registers_the_block_with_this_package_as_source():
    entries = {e.name: e for e in registry.available_blocks()}
    entry = entries["adaptive-kernel"]
    assert entry.cls is AdaptiveKernelBlock
    assert entry.source == "sgtriton-adaptive-kernel"
    assert entry.implementations == ("reference", "triton")
    assert {"adain", "revised", "moddemod"} <= set(entries)


def test_blocks_command_lists_the_plugin_and_its_package():
    result = CliRunner().invoke(main, ["blocks"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("adaptive-kernel"))
    assert "sgtriton-adaptive-kernel" in line and "reference,triton" in line


@pytest.mark.parametrize("bank_size, suffix", [(4, ""), (UNROLL_MAX_BANK + 1, "_large_bank")])
def test_plan_shows_the_plugin_kernels(bank_size, suffix):
    result = CliRunner().invoke(main, ["plan", "stylegan2-f", "--resolution", "16", "--block", "adaptive-kernel",
                                       "--block-kwargs", json.dumps({"bank_size": bank_size}), "--backend", "triton"])
    assert result.exit_code == 0, result.output
    conv0 = next(line for line in result.output.splitlines() if line.startswith("synthesis.b16.conv0"))
    conv1 = next(line for line in result.output.splitlines() if line.startswith("synthesis.b16.conv1"))
    assert f"adaptive_modconv2d_up2{suffix}" in conv0
    assert f"adaptive_modconv2d{suffix}" in conv1 and "up2" not in conv1


def test_generate_command_writes_images_with_the_block(tmp_path):
    result = CliRunner().invoke(main, ["generate", "--preset", "stylegan2-f", "--resolution", "16", "--block",
                                       "adaptive-kernel", "--block-kwargs", BLOCK_KWARGS, "--seeds", "0-1",
                                       "--backend", "reference", "--outdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "seed0000.png").exists() and (tmp_path / "seed0001.png").exists()


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "4", None])
def test_bank_size_is_validated_and_named(value):
    with pytest.raises(ValueError, match="bank_size"):
        registry.create_block("adaptive-kernel", {"bank_size": value})


def test_unknown_option_is_refused():
    with pytest.raises(TypeError, match="bank_sizes"):
        registry.create_block("adaptive-kernel", {"bank_sizes": 4})


def test_layer_parameters_and_torgb():
    node = LayerNode("synthesis.b8.conv0", "conv", resolution=8, in_channels=5, out_channels=6, up=2, w_dim=7,
                     options={"resample_filter": (1, 3, 3, 1)})
    block = registry.create_block("adaptive-kernel", {"bank_size": 3})
    layer = block.make_layer(node)
    shapes = {name: tuple(t.shape) for name, t in layer.state_dict().items()}
    assert shapes == {
        "affine.weight": (5, 7), "affine.bias": (5,), "selector.weight": (3, 7), "selector.bias": (3,),
        "weight_bank": (3, 6, 5, 3, 3), "noise_strength": (), "bias": (6,), "resample_filter": (4, 4),
        "noise_const": (8, 8),
    }
    assert torch.equal(layer.affine.bias, torch.ones(5)) and torch.equal(layer.selector.bias, torch.zeros(3))
    torgb = LayerNode("synthesis.b8.torgb", "torgb", resolution=8, in_channels=6, out_channels=3, kernel_size=1,
                      w_dim=7, options={"resample_filter": (1, 3, 3, 1)})
    moddemod = registry.create_block("moddemod")
    assert type(block.make_torgb(torgb)) is type(moddemod.make_torgb(torgb))
    assert block.kernels(torgb, "triton") == moddemod.kernels(torgb, "triton")


def test_every_declared_kernel_launches_its_bank_regime_in_each_dtype():
    """The compile gate's signatures come from the launcher: each spec's example launch reaches its kernel."""
    parameters = list(inspect.signature(jit_function(_adaptive_modconv_kernel).fn).parameters)
    assert len(KERNEL_SPECS) == 4
    for (up, unrolled), spec in KERNEL_SPECS.items():
        assert KERNELS[spec.name] is spec and spec.configs == ADAPTIVE_MODCONV_CONFIGS
        assert spec.dtypes == ("fp32", "fp16") and spec.uses_tensor_cores
        for dtype in spec.dtypes:
            launch = capture_launch(spec, next(iter(example_launches(spec, dtype).values())))
            found = specialise(spec, launch, 90)
            assert list(found.signature) == parameters
            assert found.signature["x_ptr"] == found.signature["out_ptr"] == f"*{dtype}"
            assert launch.kwargs["UP"] == up and launch.kwargs["UNROLL_BANK"] == unrolled


def test_custom_op_is_registered_with_a_fake_kernel(device):
    op = torch.ops.sgtriton_adaptive_kernel.adaptive_modulated_conv2d
    x, bank = torch.randn(2, 3, 4, 4), torch.randn(5, 6, 3, 3, 3)
    logits, styles, bias = torch.randn(2, 5), torch.randn(2, 3), torch.randn(6)
    noise, strength = torch.randn(2, 1, 8, 8), torch.full([1], 0.3)
    tensors = [t.to(device) for t in (x, bank, logits, styles, bias, noise, strength)]
    args = (*tensors, None, 2, 0.2, 1.4, 0.5)
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = op(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
    assert fake.shape == (2, 6, 8, 8) and fake.dtype == torch.float32
