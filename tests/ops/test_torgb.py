"""ToRGB with the fused skip-image add: reference properties, and the Triton kernel against float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sgtriton.ops.modconv import modulated_conv2d_ref
from sgtriton.ops.torgb import SKIP_FILTER, TORGB_CONFIGS, torgb_layer, torgb_ref, torgb_triton
from sgtriton.ops.upfirdn2d import setup_filter, upsample2d
from sgtriton.testing.devices import kernel_device
from sgtriton.testing.profiles import examples
from sgtriton.testing.tolerance import assert_close

F64 = torch.float64
CHANNELS = (1, 3, 5, 12, 33)  # 33 spans two BLOCK_K=32 channel steps


def make_inputs(seed: int, batch: int, in_ch: int, out_ch: int, h: int, w: int, with_img: bool):
    """``x, weight, styles (already / sqrt(I)), bias, img`` in float64; ``img`` at half resolution."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([batch, in_ch, h, w], generator=gen, dtype=F64)
    weight = torch.randn([out_ch, in_ch, 1, 1], generator=gen, dtype=F64)
    styles = (torch.randn([batch, in_ch], generator=gen, dtype=F64) + 1) / in_ch**0.5
    bias = torch.randn([out_ch], generator=gen, dtype=F64)
    img = torch.randn([batch, out_ch, h // 2, w // 2], generator=gen, dtype=F64) if with_img else None
    return x, weight, styles, bias, img


def expected_torgb(x, weight, styles, bias, img, *, dtype, clamp):
    """float64 reference for inputs the kernel reads as ``x`` in ``dtype`` and fp32 parameters."""
    x = x.to(dtype).to(F64)
    weight, styles, bias = (t.to(torch.float32).to(F64) for t in (weight, styles, bias))
    img = None if img is None else img.to(torch.float32).to(F64)
    return torgb_layer(x, weight, styles, bias, img=img, clamp=clamp, impl="ref")


def run_triton(x, weight, styles, bias, img, *, dtype, clamp, config=None):
    """The kernel on the kernel device (CUDA when present), from float64 inputs."""
    device = kernel_device()
    args = (x.to(dtype).to(device), weight.float().to(device), styles.float().to(device), bias.float().to(device))
    img = None if img is None else img.float().to(device)
    if config is None:
        return torgb_layer(*args, img=img, clamp=clamp, impl="triton")
    return torgb_triton(*args, img, clamp, config=config)


# ----------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=examples(20))
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.sampled_from(CHANNELS), st.integers(1, 4),
       st.integers(1, 4), st.booleans())
def test_reference_is_modconv_plus_bias_clamp_plus_upsampled_image(seed, batch, in_ch, out_ch, half, fused):
    x, weight, styles, bias, img = make_inputs(seed, batch, in_ch, out_ch, 2 * half, 2 * half, True)
    y = modulated_conv2d_ref(x, weight, styles, demodulate=False, fused_modconv=fused)
    direct = (y + bias[None, :, None, None]).clamp(-0.5, 0.5) + upsample2d(img, setup_filter(SKIP_FILTER))
    actual = torgb_ref(x, weight, styles, bias, img, clamp=0.5, fused_modconv=fused)
    assert_close(actual, direct, reduction_length=in_ch)


def test_reference_returns_float32_for_half_activations():
    x, weight, styles, bias, img = make_inputs(0, 1, 3, 3, 2, 2, True)
    out = torgb_ref(x.float().half(), weight.float(), styles.float(), bias.float(), img.float())
    assert out.dtype == torch.float32


def test_upsample2d_of_skip_is_the_quarter_three_quarter_rule():
    # The kernel's epilogue hard-codes u[2i] = (img[i-1] + 3 img[i]) / 4, u[2i+1] = (3 img[i] + img[i+1]) / 4.
    img = torch.randn([1, 1, 1, 5], dtype=F64)
    row = upsample2d(img, setup_filter(SKIP_FILTER))[0, 0]
    padded = torch.nn.functional.pad(img[0, 0, 0], [1, 1])
    even = (padded[:-2] + 3 * padded[1:-1]) / 4
    odd = (3 * padded[1:-1] + padded[2:]) / 4
    # Along y the single row spreads to rows 0 and 1 with weights 3/4 each.
    assert_close(row[0, 0::2], 0.75 * even)
    assert_close(row[0, 1::2], 0.75 * odd)


# ----------------------------------------------------------------------------------------------
# Triton kernel against the float64 reference
# ----------------------------------------------------------------------------------------------


@st.composite
def torgb_cases(draw):
    with_img = draw(st.booleans())
    size = st.integers(1, 4).map(lambda v: 2 * v) if with_img else st.integers(1, 8)
    return dict(
        seed=draw(st.integers(0, 2**31 - 1)),
        batch=draw(st.integers(1, 3)),
        in_ch=draw(st.sampled_from(CHANNELS)),
        out_ch=draw(st.sampled_from((1, 3, 4))),
        h=draw(size),
        w=draw(size),
        with_img=with_img,
        clamp=draw(st.sampled_from([None, 0.5])),
        dtype=draw(st.sampled_from([torch.float32, torch.float16])),
    )


@settings(deadline=None, max_examples=examples(30))
@given(torgb_cases())
def test_triton_torgb_matches_float64_reference(case):
    c = case
    x, weight, styles, bias, img = make_inputs(c["seed"], c["batch"], c["in_ch"], c["out_ch"], c["h"], c["w"],
                                               c["with_img"])
    actual = run_triton(x, weight, styles, bias, img, dtype=c["dtype"], clamp=c["clamp"])
    expected = expected_torgb(x, weight, styles, bias, img, dtype=c["dtype"], clamp=c["clamp"])
    assert actual.dtype == torch.float32
    assert_close(actual, expected, dtype=c["dtype"], reduction_length=c["in_ch"])


@pytest.mark.parametrize("index", range(len(TORGB_CONFIGS)))
def test_every_config_matches_reference_across_tile_boundaries(index):
    # BLOCK_M + 2 pixels (two pixel blocks), 20 output channels (two blocks of 16) and BLOCK_K + 3
    # input channels (two channel steps); x channels-last to exercise the strides.
    config = TORGB_CONFIGS[index]
    dtype = torch.float32 if index % 2 == 0 else torch.float16
    h, w = 2, config.meta["BLOCK_M"] // 2 + 1
    x, weight, styles, bias, img = make_inputs(index, 1, config.meta["BLOCK_K"] + 3, 20, h, w + w % 2, True)
    x = x.contiguous(memory_format=torch.channels_last)
    actual = run_triton(x, weight, styles, bias, img, dtype=dtype, clamp=1.0, config=config)
    expected = expected_torgb(x, weight, styles, bias, img, dtype=dtype, clamp=1.0)
    assert_close(actual, expected, dtype=dtype, reduction_length=x.shape[1])


def test_custom_op_passes_opcheck(device):
    x, weight, styles, bias, img = (t.float().to(device) for t in make_inputs(5, 1, 3, 3, 4, 4, True))
    torch.library.opcheck(torch.ops.sgtriton.torgb.default, (x, weight, styles, bias, img, 0.5),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_triton_torgb_rejects_a_skip_image_of_the_wrong_size(device):
    x, weight, styles, bias, _ = (t.float().to(device) for t in make_inputs(0, 1, 3, 3, 4, 4, True))
    with pytest.raises(ValueError, match="img: expected shape"):
        torgb_triton(x, weight, styles, bias, torch.zeros(1, 3, 4, 4, device=device))
