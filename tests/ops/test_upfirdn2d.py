"""``upfirdn2d`` / ``upsample2d``: the Triton kernel against the float64 reference, reference properties
(StyleGAN's ``[1,3,3,1]`` up-sampling of a constant image) and argument errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import sgtriton  # noqa: F401  (selects Triton's interpreter before any kernel module is imported)
from sgtriton.ops.upfirdn2d import setup_filter, upfirdn2d, upsample2d
from sgtriton.testing.profiles import examples
from sgtriton.testing.tolerance import assert_close

DTYPES = (torch.float32, torch.float16)
IMPLS = ("ref", "triton")


def output_size(size: int, up: int, down: int, pad0: int, pad1: int, taps: int) -> int:
    return (size * up + pad0 + pad1 - taps + down) // down


@st.composite
def upfirdn2d_cases(draw):
    kind = draw(st.sampled_from(["2d", "separable", "none"]))
    if kind == "2d":
        fshape = [draw(st.integers(1, 5)), draw(st.integers(1, 5))]
    elif kind == "separable":
        fshape = [draw(st.integers(1, 7))]
    else:
        fshape = None
    fh, fw = (1, 1) if fshape is None else (fshape[0], fshape[-1])
    up = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    down = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.lists(st.integers(-2, 4), min_size=4, max_size=4))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    px0, px1, py0, py1 = padding
    assume(output_size(h, up[1], down[1], py0, py1, fh) >= 1)
    assume(output_size(w, up[0], down[0], px0, px1, fw) >= 1)
    return dict(
        shape=[draw(st.integers(1, 4)), draw(st.integers(1, 3)), h, w],
        fshape=fshape, up=up, down=down, padding=padding,
        flip_filter=draw(st.booleans()),
        gain=draw(st.sampled_from([1.0, 4.0, 0.5])),
        transposed=draw(st.booleans()),  # a non-contiguous input (the kernel takes strides)
        dtype=draw(st.sampled_from(DTYPES)),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(deadline=None, max_examples=examples(80))
@given(case=upfirdn2d_cases())
def test_triton_matches_float64_reference(case, device):
    gen = torch.Generator().manual_seed(case["seed"])
    dtype = case["dtype"]
    n, c, h, w = case["shape"]
    x = torch.randn([n, c, w, h], generator=gen).transpose(2, 3) if case["transposed"] else \
        torch.randn([n, c, h, w], generator=gen)
    x = x.to(dtype)
    f = None if case["fshape"] is None else torch.randn(case["fshape"], generator=gen)
    kwargs = dict(up=case["up"], down=case["down"], padding=case["padding"], flip_filter=case["flip_filter"],
                  gain=case["gain"])

    actual = upfirdn2d(x.to(device), None if f is None else f.to(device), impl="triton", **kwargs)
    expected = upfirdn2d(x.double(), None if f is None else f.double(), impl="ref", **kwargs)

    taps = 1 if f is None else f.numel() ** (2 if f.ndim == 1 else 1)
    assert actual.dtype == dtype
    assert_close(actual, expected, dtype=dtype, reduction_length=taps)


@settings(deadline=None, max_examples=examples(25))
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
    taps=st.sampled_from([[1, 3, 3, 1], [1, 2, 1], [1, 1], list(range(1, 9))]),
    up=st.integers(1, 3),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_upsample2d_triton_matches_float64_reference(shape, taps, up, dtype, seed, device):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    f = setup_filter(taps)
    actual = upsample2d(x.to(device), f.to(device), up=up, impl="triton")
    expected = upsample2d(x.double(), f.double(), up=up, impl="ref")
    assert actual.shape == (shape[0], shape[1], shape[2] * up, shape[3] * up)
    assert_close(actual, expected, dtype=dtype, reduction_length=f.numel() ** (2 if f.ndim == 1 else 1))


@pytest.mark.parametrize("impl", IMPLS)
def test_upsample_constant_image_interior_edges_corners(impl, device):
    """[1,3,3,1] x2 with zero padding: interior unchanged, edges x3/4, corners x9/16 (spec 1.5)."""
    value = 2.0
    x = torch.full([1, 2, 5, 6], value, device=device)
    y = upsample2d(x, setup_filter([1, 3, 3, 1]).to(device), impl=impl)
    assert y.shape == (1, 2, 10, 12)
    torch.testing.assert_close(y[:, :, 1:-1, 1:-1], torch.full_like(y[:, :, 1:-1, 1:-1], value))
    for edge in (y[:, :, 0, 1:-1], y[:, :, -1, 1:-1], y[:, :, 1:-1, 0], y[:, :, 1:-1, -1]):
        torch.testing.assert_close(edge, torch.full_like(edge, value * 3 / 4))
    for corner in (y[:, :, 0, 0], y[:, :, 0, -1], y[:, :, -1, 0], y[:, :, -1, -1]):
        torch.testing.assert_close(corner, torch.full_like(corner, value * 9 / 16))


@pytest.mark.parametrize("impl", IMPLS)
def test_upsample_1d_formula(impl, device):
    """Per axis ``y[2i] = (x[i-1] + 3 x[i]) / 4`` and ``y[2i+1] = (3 x[i] + x[i+1]) / 4`` (zeros outside).

    The image is constant down its columns, so away from the top and bottom edges only the
    horizontal formula acts.
    """
    row = torch.tensor([1.0, -2.0, 4.0, 0.5])
    x = row.reshape(1, 1, 1, 4).expand(1, 1, 5, 4).to(device)
    y = upsample2d(x, setup_filter([1, 3, 3, 1]).to(device), impl=impl)[0, 0, 1:-1].double().cpu()
    padded = torch.cat([torch.zeros(1), row, torch.zeros(1)]).double()
    want = torch.stack([(padded[:-2] + 3 * padded[1:-1]) / 4, (3 * padded[1:-1] + padded[2:]) / 4], dim=1)
    assert_close(y, want.flatten().expand_as(y), dtype=torch.float32)


@pytest.mark.parametrize("impl", IMPLS)
def test_identity_filter_is_exact(impl, device):
    x = torch.randn(2, 3, 5, 7, device=device)
    assert torch.equal(upfirdn2d(x, None, impl=impl), x)


@pytest.mark.parametrize("impl", IMPLS)
def test_separable_equals_outer_product(impl, device):
    taps = torch.randn(9, dtype=torch.float64)
    x = torch.randn(1, 2, 6, 5, dtype=torch.float32)
    a = upfirdn2d(x.to(device), taps.float().to(device), up=2, down=1, padding=[3, 4, 4, 3], gain=4.0, impl=impl)
    b = upfirdn2d(x.double(), torch.outer(taps, taps), up=2, down=1, padding=[3, 4, 4, 3], gain=4.0, impl="ref")
    assert_close(a, b, dtype=torch.float32, reduction_length=81)


def test_fp16_accumulates_in_fp32(device):
    """fp16 in, fp32 accumulation, one rounding: equals the fp32 kernel's result rounded to fp16."""
    x = torch.randn(2, 3, 7, 5, generator=torch.Generator().manual_seed(3)).half().to(device)
    f = setup_filter([1, 3, 3, 1]).to(device)
    assert torch.equal(upsample2d(x, f, impl="triton"), upsample2d(x.float(), f, impl="triton").half())


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(up=0), "up"),
        (dict(up=(1, 2, 3)), "up"),
        (dict(down=-1), "down"),
        (dict(padding=[1, 2, 3]), "padding"),
        (dict(padding=-3), "padding"),  # output would be empty
        (dict(x=torch.zeros(3, 4, 4)), "x"),
        (dict(x=torch.zeros(1, 1, 4, 4, dtype=torch.int64)), "x"),
        (dict(x=torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16)), "x"),
        (dict(f=torch.zeros(2, 2, 2)), "f"),
        (dict(f=torch.zeros(0)), "f"),
        (dict(impl="cuda"), "impl"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    args = dict(x=torch.zeros(1, 1, 4, 4), f=setup_filter([1, 3, 3, 1]), impl="triton") | kwargs
    with pytest.raises((ValueError, TypeError), match=rf"\b{argument}\b"):
        upfirdn2d(**args)


def test_custom_op_passes_opcheck(device):
    x = torch.randn(2, 3, 5, 4, device=device)
    f = setup_filter([1, 3, 3, 1]).to(device)
    torch.library.opcheck(torch.ops.sgtriton.upfirdn2d.default, (x, f, [2, 2], [1, 1], [2, 1, 2, 1], False, 4.0))
