"""Modulated conv: properties of the reference, and the fused Triton kernel against float64.

Kernel tests run under Triton's interpreter here (tiny shapes); on a GPU they run compiled.
"""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sgtriton.ops._runtime import triton_dtype
from sgtriton.ops.conv2d_resample import conv2d_resample
from sgtriton.ops.modconv import (
    DEMOD_EPS,
    MODCONV_CONFIGS,
    MODCONV_KERNEL,
    cached_phase_weights,
    demodulation_coefficients,
    fp16_prenormalize,
    modulated_conv2d_layer,
    modulated_conv2d_ref,
    modulated_conv2d_triton,
    upsample_phase_weights,
)
from sgtriton.ops.upfirdn2d import setup_filter
from sgtriton.testing.devices import kernel_device
from sgtriton.testing.profiles import examples
from sgtriton.testing.tolerance import assert_close, tolerance_for

F64 = torch.float64
CHANNELS = (1, 3, 5, 12, 33)  # 33 spans two BLOCK_K=32 channel steps
NOISE_MODES = ("none", "const", "random")
#: Every tensor these tests build lives here (CUDA when present: the compiled kernels are tested).
DEVICE = kernel_device()


def make_inputs(seed: int, batch: int, in_ch: int, out_ch: int, h: int, w: int, k: int = 3):
    """``x, weight, styles, bias`` in float64 (cast per test); styles include negatives and > 1."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([batch, in_ch, h, w], generator=gen, dtype=F64)
    weight = torch.randn([out_ch, in_ch, k, k], generator=gen, dtype=F64)
    styles = torch.randn([batch, in_ch], generator=gen, dtype=F64) + 1
    bias = torch.randn([out_ch], generator=gen, dtype=F64)
    return tuple(t.to(DEVICE) for t in (x, weight, styles, bias))


def make_noise(seed: int, mode: str, batch: int, h: int, w: int):
    gen = torch.Generator().manual_seed(seed + 1)
    strength = torch.randn([], generator=gen, dtype=F64)
    if mode == "none":
        return None, None
    shape = [h, w] if mode == "const" else [batch, 1, h, w]
    return torch.randn(shape, generator=gen, dtype=F64).to(DEVICE), strength.to(DEVICE)


def phase_conv_ref(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The up=2 layer as four 3x3 convs on the input grid, interleaved (what the kernel computes)."""
    phases = upsample_phase_weights(weight, f)
    n, _, h, w = x.shape
    out = x.new_zeros([n, weight.shape[0], 2 * h, 2 * w])
    for ry in range(2):
        for rx in range(2):
            out[:, :, ry::2, rx::2] = F.conv2d(x, phases[ry, rx].to(x.dtype), padding=1)
    return out


# ----------------------------------------------------------------------------------------------
# Reference properties (float64)
# ----------------------------------------------------------------------------------------------

ref_shapes = st.tuples(
    st.integers(0, 2**31 - 1), st.integers(1, 3), st.sampled_from(CHANNELS), st.sampled_from(CHANNELS),
    st.integers(1, 8), st.integers(1, 8), st.sampled_from([1, 2]),
)


@settings(deadline=None, max_examples=examples(15))
@given(ref_shapes, st.floats(0.25, 4.0), st.floats(0.25, 4.0))
def test_demodulated_output_invariant_to_positive_style_and_weight_scaling(shape, style_scale, weight_scale):
    seed, batch, in_ch, out_ch, h, w, up = shape
    x, weight, styles, _ = make_inputs(seed, batch, in_ch, out_ch, h, w)
    gen = torch.Generator().manual_seed(seed + 2)
    alpha = style_scale ** torch.rand([batch, 1], generator=gen, dtype=F64)   # per sample, in [1, scale]
    beta = weight_scale ** torch.rand([out_ch, 1, 1, 1], generator=gen, dtype=F64)  # per output channel
    f = setup_filter([1, 3, 3, 1]).to(F64)

    def run(weight_, styles_):
        return modulated_conv2d_ref(x, weight_, styles_, up=up, padding=1, resample_filter=f, flip_weight=up == 1)

    # Scaling moves only eps's share of d: to first order y'/y - 1 = eps (1 - 1/(a b)^2) / (2 sum s^2 Q).
    sums = demodulation_coefficients(weight, styles).pow(-2) - DEMOD_EPS
    ab2 = (alpha * beta.reshape(1, -1)).square()
    eps_rtol = 1.5 * float((DEMOD_EPS * (1 - 1 / ab2).abs() / (2 * sums)).max())
    rtol, atol = tolerance_for(F64, in_ch * 9)
    torch.testing.assert_close(run(weight * beta, styles * alpha), run(weight, styles), rtol=rtol + eps_rtol,
                               atol=atol)


@settings(deadline=None, max_examples=examples(25))
@given(ref_shapes, st.booleans(), st.sampled_from([1, 3]))
def test_fused_and_nonfused_formulations_agree(shape, demodulate, k):
    seed, batch, in_ch, out_ch, h, w, up = shape
    k = 3 if up == 2 else k
    x, weight, styles, _ = make_inputs(seed, batch, in_ch, out_ch, h, w, k)
    noise, _ = make_noise(seed, "random", batch, h * up, w * up)
    kwargs = dict(up=up, padding=k // 2, resample_filter=setup_filter([1, 3, 3, 1]).to(F64),
                  demodulate=demodulate, flip_weight=up == 1)
    fused = modulated_conv2d_ref(x, weight, styles, noise, fused_modconv=True, **kwargs)
    nonfused = modulated_conv2d_ref(x, weight, styles, noise, fused_modconv=False, **kwargs)
    assert_close(nonfused, fused, reduction_length=in_ch * k * k)


@settings(deadline=None, max_examples=examples(25))
@given(ref_shapes, st.sampled_from([1, 3]))
def test_demodulation_coefficients_equal_per_sample_weight_form(shape, k):
    seed, batch, in_ch, out_ch, h, w, _ = shape
    _, weight, styles, _ = make_inputs(seed, batch, in_ch, out_ch, h, w, k)
    per_sample = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
    direct = (per_sample.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt()
    assert_close(demodulation_coefficients(weight, styles), direct, reduction_length=in_ch * k * k)


def test_demodulated_output_has_unit_std_per_channel():
    # Fixed seed: deterministic. With i.i.d. unit-variance x, each interior output is a sum of
    # independent terms whose squared weights sum to 1, so its variance is 1; over 4 * 22 * 22
    # samples per channel the sample std lands within a few percent of 1 (0.1 is ~5 sigma).
    x, weight, styles, _ = make_inputs(1234, 4, 64, 16, 24, 24)
    y = modulated_conv2d_ref(x, weight, styles, padding=1)[:, :, 1:-1, 1:-1]
    std = y.transpose(0, 1).reshape(16, -1).std(dim=1)
    assert torch.all((std - 1).abs() < 0.1), std
    # ...while without demodulation the scale is that of the weights and styles (far from 1).
    raw = modulated_conv2d_ref(x, weight, styles, padding=1, demodulate=False)[:, :, 1:-1, 1:-1]
    assert raw.std() > 10


@settings(deadline=None, max_examples=examples(20))
@given(ref_shapes, st.booleans())
def test_upsample_phase_weights_reproduce_transposed_conv_and_fir(shape, random_filter):
    seed, batch, in_ch, out_ch, h, w, _ = shape
    x, weight, _, _ = make_inputs(seed, batch, in_ch, out_ch, h, w)
    if random_filter:  # a non-symmetric filter catches flipped conventions
        f = torch.rand([4, 4], generator=torch.Generator().manual_seed(seed), dtype=F64)
    else:
        f = setup_filter([1, 3, 3, 1]).to(F64)
    expected = conv2d_resample(x, weight, f, up=2, padding=1, flip_weight=False)
    assert_close(phase_conv_ref(x, weight, f), expected, reduction_length=in_ch * 9 * 4)


# ----------------------------------------------------------------------------------------------
# Triton kernel against the float64 reference
# ----------------------------------------------------------------------------------------------


def expected_layer(x, weight, styles, bias, noise, strength, *, dtype, demodulate, **kwargs):
    """float64 reference of the layer for inputs that the kernel sees in ``dtype``.

    The kernel reads ``x`` in ``dtype`` (so the reference uses the rounded values) and the fp32
    parameters; fp16 with demodulation follows NVlabs' pre-normalisation, computed here exactly.
    """
    x = x.to(dtype).to(F64)
    weight, styles, bias = (t.to(torch.float32).to(F64) for t in (weight, styles, bias))
    if noise is not None:
        noise, strength = noise.to(torch.float32).to(F64), strength.to(torch.float32).to(F64)
    if dtype == torch.float16 and demodulate:
        weight, styles = fp16_prenormalize(weight, styles)
    return modulated_conv2d_layer(x, weight, styles, bias=bias, noise=noise, noise_strength=strength,
                                  demodulate=demodulate, impl="ref", **kwargs)


@st.composite
def layer_cases(draw):
    up = draw(st.sampled_from([1, 2]))
    return dict(
        seed=draw(st.integers(0, 2**31 - 1)),
        batch=draw(st.integers(1, 3)),
        in_ch=draw(st.sampled_from(CHANNELS)),
        out_ch=draw(st.sampled_from((1, 3, 5, 12, 17))),
        h=draw(st.integers(1, 8)),
        w=draw(st.integers(1, 8)),
        up=up,
        k=3 if up == 2 else draw(st.sampled_from([1, 3])),
        demodulate=draw(st.booleans()),
        noise_mode=draw(st.sampled_from(NOISE_MODES)),
        act=draw(st.sampled_from(["lrelu", "linear"])),
        clamp=draw(st.sampled_from([None, 0.5])),
        dtype=draw(st.sampled_from([torch.float32, torch.float16])),
    )


@settings(deadline=None, max_examples=examples(20))
@given(layer_cases())
def test_triton_layer_matches_float64_reference(case):
    c = case
    x, weight, styles, bias = make_inputs(c["seed"], c["batch"], c["in_ch"], c["out_ch"], c["h"], c["w"], c["k"])
    noise, strength = make_noise(c["seed"], c["noise_mode"], c["batch"], c["h"] * c["up"], c["w"] * c["up"])
    kwargs = dict(up=c["up"], act=c["act"], clamp=c["clamp"])
    actual = modulated_conv2d_layer(
        x.to(c["dtype"]), weight.float(), styles.float(), bias=bias.float(),
        noise=None if noise is None else noise.float(), noise_strength=None if strength is None else float(strength),
        demodulate=c["demodulate"], impl="triton", **kwargs,
    )
    expected = expected_layer(x, weight, styles, bias, noise, strength, dtype=c["dtype"],
                              demodulate=c["demodulate"], **kwargs)
    assert actual.dtype == c["dtype"]
    assert_close(actual, expected, dtype=c["dtype"], reduction_length=c["in_ch"] * c["k"] ** 2)


CONFIG_CASES = [(index, dtype) for index, config in enumerate(MODCONV_CONFIGS)
                for dtype in (torch.float32, torch.float16) if config.applies_to(triton_dtype(dtype))]


@pytest.mark.parametrize(("index", "dtype"), CONFIG_CASES)
def test_every_config_matches_reference_across_tile_boundaries(index, dtype):
    # Just over one tile of pixels (3 x w > BLOCK_M), output channels (BLOCK_N + 5) and input
    # channels (BLOCK_K + 3), so every config crosses every tile boundary, in each dtype of its
    # space (tall tiles scale the weight tile, the others the activation tile); up=1 and up=2
    # alternate; x is channels-last and the styles transposed, to exercise the strides.
    config = MODCONV_CONFIGS[index]
    up, batch = (1, 2) if (index + (dtype == torch.float16)) % 2 == 0 else (2, 1)
    h, w = 3, config.meta["BLOCK_M"] // 3 + 1
    in_ch, out_ch = config.meta["BLOCK_K"] + 3, config.meta["BLOCK_N"] + 5
    x, weight, styles, bias = make_inputs(index, batch, in_ch, out_ch, h, w)
    noise, strength = make_noise(index, "random", batch, h * up, w * up)
    x_in = x.to(dtype).contiguous(memory_format=torch.channels_last)
    styles_in = styles.float().t().contiguous().t()
    actual = modulated_conv2d_triton(x_in, weight.float(), styles_in, bias.float(), noise.float(),
                                     strength.float().reshape(1), up=up, clamp=2.0, config=config)
    expected = expected_layer(x, weight, styles, bias, noise, strength, dtype=dtype, demodulate=True,
                              up=up, clamp=2.0)
    assert_close(actual, expected, dtype=dtype, reduction_length=in_ch * 9)


@pytest.mark.parametrize(("dtype", "pixels", "out_channels", "tile"), [
    ("fp16", 64 * 64, 64, (256, 64, 8)), ("fp32", 64 * 64, 64, (128, 64, 8)),
    ("fp16", 128 * 128, 32, (256, 32, 4)), ("fp32", 128 * 128, 32, (256, 32, 8)),
    ("fp16", 32 * 32, 32, (128, 32, 4)), ("fp16", 32 * 32, 64, (128, 64, 8)),
    ("fp16", 64 * 64, 512, (128, 128, 8)), ("fp32", 8 * 8, 512, (64, 64, 4)),
])
def test_untuned_tiles_follow_the_layer_and_its_dtype(dtype, pixels, out_channels, tile):
    # The tall tiles of the 64- and 32-channel layers are in the fp16 space only (in fp32 they spill).
    key = (("dtype", dtype), ("batch", 8), ("spatial", pixels), ("cin", 64), ("cout", out_channels), ("k", 3),
           ("up", 1))
    config = MODCONV_KERNEL.untuned_config(key)
    assert (config.meta["BLOCK_M"], config.meta["BLOCK_N"], config.num_warps) == tile
    assert config.applies_to(dtype)


def test_fp16_prenormalisation_is_nvlabs_scaling():
    # NVlabs (fp16, demodulated): w = weight / (sqrt(I*kh*kw) * max|weight[o]|) per output channel,
    # styles / max|styles[n]| per sample -- stated here on its own, since kernel and reference share
    # the helper that computes it.
    weight, styles = torch.randn(6, 5, 3, 3, dtype=F64) * 7, torch.randn(4, 5, dtype=F64) * 3
    w_eff, s_eff = fp16_prenormalize(weight, styles)
    torch.testing.assert_close(w_eff.abs().amax(dim=[1, 2, 3]), torch.full([6], 1 / math.sqrt(5 * 9), dtype=F64))
    torch.testing.assert_close(s_eff.abs().amax(dim=1), torch.ones(4, dtype=F64))
    torch.testing.assert_close(w_eff / weight, (w_eff / weight)[:, :1, :1, :1].expand_as(weight))
    torch.testing.assert_close(s_eff / styles, (s_eff / styles)[:, :1].expand_as(styles))
    assert (w_eff / weight > 0).all() and (s_eff / styles > 0).all()


@pytest.mark.parametrize("scale", [1e3, 1e-4])
def test_fp16_follows_nvlabs_prenormalisation(scale):
    # Large: |W * s| = 1e6 would overflow fp16 operands without the pre-normalisation. Small: the
    # un-normalised sum (W s)^2 ~ 1e-16 * K is below eps, so only a kernel that computes d from
    # the pre-normalised weights and styles (as NVlabs does in fp16) matches the reference.
    x, weight, styles, bias = make_inputs(7, 2, 5, 3, 4, 4)
    weight, styles = weight * scale, styles * scale
    actual = modulated_conv2d_layer(x.half(), weight.float(), styles.float(), bias=bias.float(), impl="triton")
    expected = expected_layer(x, weight, styles, bias, None, None, dtype=torch.float16, demodulate=True)
    assert_close(actual, expected, dtype=torch.float16, reduction_length=5 * 9)


def test_custom_op_under_torch_compile_equals_eager():
    x, weight, styles, bias = (t.float() for t in make_inputs(3, 2, 5, 3, 4, 4))
    noise, strength = (t.float() for t in make_noise(3, "random", 2, 8, 8))

    def layer(x, weight, styles, bias, noise, strength):
        return modulated_conv2d_layer(x, weight, styles, bias=bias, noise=noise, noise_strength=strength, up=2,
                                      clamp=1.0, impl="triton")

    eager = layer(x, weight, styles, bias, noise, strength)
    compiled = torch.compile(layer, fullgraph=True)(x, weight, styles, bias, noise, strength)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    assert compiled.stride() == eager.stride()


@pytest.mark.parametrize("channels_last", [True, False])
def test_custom_op_passes_opcheck(channels_last):
    x, weight, styles, bias = (t.float() for t in make_inputs(4, 1, 3, 2, 3, 3))
    noise, strength = (t.float() for t in make_noise(4, "const", 1, 3, 3))
    args = (x, weight, styles, bias, noise, strength.reshape(1), None, 1, True, "lrelu", 0.2, math.sqrt(2), None,
            channels_last)
    torch.library.opcheck(torch.ops.sgtriton.modulated_conv2d.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(up=3), "up=3"),
        (dict(noise=torch.zeros(2, 3, 4, 4)), "noise: expected a shape broadcastable"),
        (dict(bias=torch.zeros(4)), "bias: expected shape [3]"),
    ],
)
def test_triton_layer_rejects_bad_arguments(kwargs, message):
    x, weight, styles, _ = (t.float() for t in make_inputs(0, 2, 5, 3, 4, 4))
    kwargs = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        modulated_conv2d_triton(x, weight, styles, **kwargs)


def test_triton_layer_rejects_float64():
    x, weight, styles, _ = make_inputs(0, 1, 2, 2, 3, 3)
    with pytest.raises(TypeError, match="float64"):
        modulated_conv2d_triton(x, weight, styles)


def test_phase_weights_are_cached_per_weight_version():
    x, weight, styles, bias = (t.float() for t in make_inputs(8, 1, 3, 2, 3, 3))
    first = cached_phase_weights(weight, None)
    assert cached_phase_weights(weight, None) is first
    weight[0].add_(1.0)  # an in-place edit bumps the version counter: the kernel must see it
    assert cached_phase_weights(weight, None) is not first
    actual = modulated_conv2d_layer(x, weight, styles, bias=bias, up=2, impl="triton")
    expected = expected_layer(x.double(), weight.double(), styles.double(), bias.double(), None, None,
                              dtype=torch.float32, demodulate=True, up=2)
    assert_close(actual, expected, dtype=torch.float32, reduction_length=3 * 9)


def test_phase_weight_cache_does_not_keep_weights_alive():
    weight = torch.randn([2, 3, 3, 3], device=DEVICE)
    cached_phase_weights(weight, None)
    alive = weakref.ref(weight)
    del weight
    gc.collect()
    assert alive() is None
