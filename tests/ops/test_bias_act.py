"""``bias_act``: the Triton kernel against the float64 reference, reference properties, argument errors,
and the ``sgtriton::bias_act`` custom op under ``torch.compile``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sgtriton  # noqa: F401  (selects Triton's interpreter before any kernel module is imported)
from sgtriton.ops.bias_act import ACTIVATIONS, bias_act
from sgtriton.testing.profiles import examples
from sgtriton.testing.tolerance import assert_close

DTYPES = (torch.float32, torch.float16)


@st.composite
def bias_act_cases(draw):
    ndim = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(1, 7), min_size=ndim, max_size=ndim))
    if ndim >= 2 and draw(st.booleans()):
        shape[-1] = draw(st.sampled_from([33, 130]))  # rows longer than one power-of-two tile
    return dict(
        shape=shape,
        dim=draw(st.integers(-ndim, ndim - 1)),
        has_bias=draw(st.booleans()),
        act=draw(st.sampled_from(sorted(ACTIVATIONS))),
        alpha=draw(st.one_of(st.none(), st.floats(0.0, 0.5))),
        gain=draw(st.one_of(st.none(), st.floats(0.25, 3.0))),
        clamp=draw(st.one_of(st.none(), st.floats(0.0, 2.0), st.just(-1.0))),
        dtype=draw(st.sampled_from(DTYPES)),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(deadline=None, max_examples=examples(100))
@given(case=bias_act_cases())
def test_triton_matches_float64_reference(case, device):
    gen = torch.Generator().manual_seed(case["seed"])
    dtype = case["dtype"]
    x = torch.randn(case["shape"], generator=gen).to(dtype)
    b = torch.randn([x.shape[case["dim"]]], generator=gen) if case["has_bias"] else None
    kwargs = dict(dim=case["dim"], act=case["act"], alpha=case["alpha"], gain=case["gain"], clamp=case["clamp"])

    actual = bias_act(x.to(device), None if b is None else b.to(device), impl="triton", **kwargs)
    expected = bias_act(x.double(), None if b is None else b.double(), impl="ref", **kwargs)

    assert actual.dtype == dtype
    assert_close(actual, expected, dtype=dtype)


def test_order_of_operations_bias_act_gain_clamp(device):
    """x + b first, then the activation, then the gain, then the clamp (NVlabs order), hand-computed."""
    x = torch.tensor([[-1.0, 1.0, 0.25]], device=device)
    b = torch.tensor([0.5, 0.5, 0.5], device=device)
    # lrelu(-0.5) = -0.1 -> x10 = -1 -> clamp 0.5 = -0.5;  lrelu(1.5) = 1.5 -> 15 -> 0.5;  0.75 -> 7.5 -> 0.5
    want = torch.tensor([[-0.5, 0.5, 0.5]], device=device)
    unclamped = torch.tensor([[-1.0, 15.0, 7.5]], device=device)
    for impl in ("ref", "triton"):
        got = bias_act(x, b, act="lrelu", alpha=0.2, gain=10.0, clamp=0.5, impl=impl)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        got = bias_act(x, b, act="lrelu", alpha=0.2, gain=10.0, impl=impl)
        torch.testing.assert_close(got, unclamped, rtol=0, atol=1e-5)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_default_gain_and_alpha_come_from_the_table(act, device):
    spec = ACTIVATIONS[act]
    x = torch.linspace(-2, 2, 9, device=device).reshape(1, 9)
    want = spec.func(x.double(), spec.default_alpha) * spec.default_gain
    for impl in ("ref", "triton"):
        assert_close(bias_act(x, act=act, impl=impl), want, dtype=torch.float32)
    assert ACTIVATIONS["lrelu"].default_gain == pytest.approx(math.sqrt(2))


def test_negative_clamp_disables_clamping(device):
    x = torch.linspace(-5, 5, 11, device=device).reshape(1, 11)
    for impl in ("ref", "triton"):
        torch.testing.assert_close(bias_act(x, clamp=-1.0, impl=impl), x)


def test_fp16_rounds_once(device):
    """The kernel computes in fp32 and rounds once: it equals the fp32 result rounded to fp16."""
    x = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(0)).half().to(device)
    b = torch.randn(6, generator=torch.Generator().manual_seed(1)).to(device)
    got = bias_act(x, b, act="lrelu", clamp=1.3, impl="triton")
    want = bias_act(x.float(), b, act="lrelu", clamp=1.3, impl="triton").half()
    assert torch.equal(got, want)


def test_empty_input(device):
    x = torch.empty(0, 3, 4, device=device)
    assert bias_act(x, torch.zeros(3, device=device), act="lrelu", impl="triton").shape == (0, 3, 4)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(act="swish"), "act"),
        (dict(impl="cuda"), "impl"),
        (dict(b=torch.zeros(4)), "b"),
        (dict(b=torch.zeros(3, 1)), "b"),
        (dict(b=torch.zeros(3), dim=5), "dim"),
        (dict(x=torch.zeros(2, 3, dtype=torch.int32)), "x"),
        (dict(x=torch.zeros(2, 3, dtype=torch.bfloat16)), "x"),
        (dict(x=[1.0, 2.0]), "x"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    args = dict(x=torch.zeros(2, 3), b=None, impl="triton") | kwargs
    with pytest.raises((ValueError, TypeError), match=rf"\b{argument}\b"):
        bias_act(**args)


def test_custom_op_passes_opcheck(device):
    x = torch.randn(2, 5, 3, device=device)
    b = torch.randn(5, device=device)
    torch.library.opcheck(torch.ops.sgtriton.bias_act.default, (x, b, 1, "lrelu", 0.2, math.sqrt(2), 0.8))
    torch.library.opcheck(torch.ops.sgtriton.bias_act.default, (x.half(), None, 1, "linear", 0.0, 1.0, None))


def test_torch_compile_fullgraph_equals_eager(device):
    def layer(x, b):
        return bias_act(x, b, act="lrelu", clamp=0.7, impl="triton")

    x = torch.randn(2, 5, 3, 3, device=device)
    b = torch.randn(5, device=device)
    compiled = torch.compile(layer, fullgraph=True)  # Inductor; the op stays one opaque extern node
    torch.testing.assert_close(compiled(x, b), layer(x, b), rtol=0, atol=0)
