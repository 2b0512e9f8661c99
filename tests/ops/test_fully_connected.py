"""Mapping-network ops -- pixel norm, the equalised-lr FC layer, the fused FC chain and truncation:
the Triton kernels against the float64 references, reference properties and argument errors."""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kernel_tensors import randn, zeros

import sgtriton  # noqa: F401  (selects Triton's interpreter before any kernel module is imported)
from sgtriton.ops import fully_connected as fc_module
from sgtriton.ops.fully_connected import (
    FULLY_CONNECTED_KERNEL,
    MAPPING_CHAIN_KERNEL,
    fully_connected,
    mapping_chain,
    normalize_2nd_moment,
    truncate,
)
from sgtriton.testing.harness import tile_boundaries
from sgtriton.testing.profiles import examples
from sgtriton.testing.tolerance import assert_close

DTYPES = (torch.float32, torch.float16)
LR = 0.01  # the mapping network's lr multiplier: weights are stored N(0, 1) / lr
#: StyleGAN2's z_dim and w_dim; a conditional network's first layer reads ``[z, embed(c)]``, twice as wide.
WIDTH = 512
FC_TILE = FULLY_CONNECTED_KERNEL.default_config.meta
CHAIN_TILE = MAPPING_CHAIN_KERNEL.default_config.meta


def widths(block: int) -> list[int]:
    """Feature counts on both sides of a ``block``-wide tile, and StyleGAN2's width."""
    return sorted(set(tile_boundaries(block)) | {WIDTH})


def batches(block: int) -> list[int]:
    """Small batches and the batches either side of one ``block``-row tile (kept small: the
    interpreter's cost grows with the rows)."""
    return [1, 2, 3, block - 1, block + 1]


def equalised_layer(gen: torch.Generator, out_features: int, in_features: int, lr: float = LR):
    """Stored weight and bias of a NVlabs FC layer and its runtime gains."""
    weight = randn([out_features, in_features], generator=gen) / lr
    bias = randn([out_features], generator=gen) / lr
    return weight, bias, lr / math.sqrt(in_features), lr


@settings(deadline=None, max_examples=examples(60))
@given(
    batch=st.integers(1, 4), in_features=st.integers(1, 40), out_features=st.integers(1, 70),
    act=st.sampled_from(["linear", "relu", "lrelu"]), has_bias=st.booleans(),
    act_gain=st.one_of(st.none(), st.floats(0.5, 2.0)), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
)
def test_fully_connected_matches_float64_reference(batch, in_features, out_features, act, has_bias, act_gain,
                                                   dtype, seed):
    check_fully_connected(batch, in_features, out_features, act, has_bias, act_gain, dtype, seed)


@settings(deadline=None, max_examples=examples(8))
@given(
    batch=st.sampled_from(batches(FC_TILE["BLOCK_M"])),
    in_features=st.sampled_from([*widths(FC_TILE["BLOCK_K"]), 2 * WIDTH]),
    out_features=st.sampled_from(widths(FC_TILE["BLOCK_N"])), act=st.sampled_from(["linear", "lrelu"]),
    dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
)
@example(batch=2, in_features=WIDTH, out_features=WIDTH, act="lrelu", dtype=torch.float32, seed=0)  # a mapping layer
@example(batch=3, in_features=2 * WIDTH, out_features=WIDTH, act="lrelu", dtype=torch.float16, seed=1)  # [z, embed(c)]
@example(batch=FC_TILE["BLOCK_M"] + 1, in_features=FC_TILE["BLOCK_K"] + 1, out_features=FC_TILE["BLOCK_N"] + 1,
         act="linear", dtype=torch.float32, seed=2)  # one past every tile
@example(batch=FC_TILE["BLOCK_M"], in_features=FC_TILE["BLOCK_K"], out_features=FC_TILE["BLOCK_N"],
         act="lrelu", dtype=torch.float16, seed=3)  # exactly one tile
def test_fully_connected_at_tile_boundaries_and_mapping_widths(batch, in_features, out_features, act, dtype, seed):
    check_fully_connected(batch, in_features, out_features, act, True, None, dtype, seed)


def check_fully_connected(batch, in_features, out_features, act, has_bias, act_gain, dtype, seed):
    """The Triton layer on drawn operands against the float64 reference."""
    gen = torch.Generator().manual_seed(seed)
    x = randn([batch, in_features], generator=gen).to(dtype)
    weight, bias, weight_gain, bias_gain = equalised_layer(gen, out_features, in_features)
    bias = bias if has_bias else None

    actual = fully_connected(x, weight, bias, weight_gain, bias_gain, act, act_gain, impl="triton")
    expected = fully_connected(x.double(), weight.double(), None if bias is None else bias.double(),
                               weight_gain, bias_gain, act, act_gain, impl="ref")
    assert actual.dtype == dtype
    assert_close(actual, expected, dtype=dtype, reduction_length=in_features)


@st.composite
def chain_cases(draw):
    num_layers = draw(st.integers(1, 4))
    return dict(
        batch=draw(st.integers(1, 4)), in_features=draw(st.integers(1, 40)), features=draw(st.integers(1, 40)),
        num_layers=num_layers, normalize_input=draw(st.booleans()), act=draw(st.sampled_from(["lrelu", "linear"])),
        has_bias=draw(st.booleans()),
        stylegan1=draw(st.booleans()),  # sqrt 2 in the weight gain, act_gain 1
        fused=draw(st.booleans()),  # False forces the one-launch-per-layer path
        dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2**16)),
    )


@settings(deadline=None, max_examples=examples(80))
@given(case=chain_cases())
def test_mapping_chain_matches_float64_reference(case):
    check_mapping_chain(case)


@st.composite
def wide_chain_cases(draw):
    """Chains whose widths straddle the one-launch kernel's tiles or are StyleGAN2's 512 (z_dim
    512, or 1024 for a conditional network's ``[z, embed(c)]``; w_dim 512)."""
    return dict(
        batch=draw(st.sampled_from(batches(CHAIN_TILE["BLOCK_M"]))),
        in_features=draw(st.sampled_from([*widths(CHAIN_TILE["BLOCK_K"]), 2 * WIDTH])),
        features=draw(st.sampled_from(widths(CHAIN_TILE["BLOCK_N"]))),
        num_layers=draw(st.integers(1, 3)), normalize_input=draw(st.booleans()), act="lrelu", has_bias=True,
        stylegan1=draw(st.booleans()), fused=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)),
        seed=draw(st.integers(0, 2**16)),
    )


def chain_case(**overrides):
    """A pinned chain case: StyleGAN2's mapping at batch 2 (three of its eight layers), one launch."""
    case = dict(batch=2, in_features=WIDTH, features=WIDTH, num_layers=3, normalize_input=True, act="lrelu",
                has_bias=True, stylegan1=False, fused=True, dtype=torch.float32, seed=0)
    return {**case, **overrides}


@settings(deadline=None, max_examples=examples(8))
@given(case=wide_chain_cases())
@example(case=chain_case())
@example(case=chain_case(num_layers=2, stylegan1=True, dtype=torch.float16, seed=1))  # even hop count, StyleGAN1
@example(case=chain_case(in_features=2 * WIDTH, normalize_input=False, batch=3, seed=2))  # conditional: z, c normed
@example(case=chain_case(batch=CHAIN_TILE["BLOCK_M"] + 1, in_features=CHAIN_TILE["BLOCK_K"] + 1,
                         features=CHAIN_TILE["BLOCK_N"] + 1, seed=3))  # one past every tile, two programs
@example(case=chain_case(batch=CHAIN_TILE["BLOCK_M"], in_features=CHAIN_TILE["BLOCK_K"],
                         features=CHAIN_TILE["BLOCK_N"], num_layers=2, seed=4))  # exactly one tile
@example(case=chain_case(fused=False, num_layers=2, seed=5))  # one launch per layer at 512
def test_mapping_chain_at_tile_boundaries_and_mapping_widths(case):
    check_mapping_chain(case)


def check_mapping_chain(case):
    """The Triton chain (fused, or one launch per layer) on a drawn case against float64."""
    gen = torch.Generator().manual_seed(case["seed"])
    x = randn([case["batch"], case["in_features"]], generator=gen).to(case["dtype"])
    weights, biases, gains = [], [], []
    in_features = case["in_features"]
    scale = math.sqrt(2) if case["stylegan1"] else 1.0
    for _ in range(case["num_layers"]):
        weight, bias, weight_gain, bias_gain = equalised_layer(gen, case["features"], in_features)
        weights.append(weight)
        biases.append(bias)
        gains.append(weight_gain * scale)
        in_features = case["features"]
    biases = biases if case["has_bias"] else None
    kwargs = dict(act=case["act"], act_gain=1.0 if case["stylegan1"] else None,
                  normalize_input=case["normalize_input"])

    max_batch = fc_module.CHAIN_MAX_BATCH if case["fused"] else 0
    with mock.patch.object(fc_module, "CHAIN_MAX_BATCH", max_batch):
        actual = mapping_chain(x, weights, biases, gains, LR, impl="triton", **kwargs)
    expected = mapping_chain(x.double(), [w.double() for w in weights],
                             None if biases is None else [b.double() for b in biases], gains, LR, impl="ref",
                             **kwargs)

    # The chain computes in fp32 whatever its input dtype. Each layer roughly preserves the second
    # moment, so rounding errors of successive layers add up: K = all the terms summed on the way.
    assert actual.dtype == torch.float32
    reduction = case["in_features"] * (1 + case["normalize_input"]) + case["features"] * (case["num_layers"] - 1)
    assert_close(actual, expected, dtype=torch.float32, reduction_length=reduction)


def test_mapping_chain_is_normalize_then_layers():
    """The reference chain is exactly pixel norm followed by ``fully_connected`` per layer."""
    gen = torch.Generator().manual_seed(0)
    x = randn([3, 12], generator=gen, dtype=torch.float64)
    layers = [equalised_layer(gen, 8, 12), equalised_layer(gen, 8, 8)]
    want = normalize_2nd_moment(x)
    for weight, bias, weight_gain, bias_gain in layers:
        want = fully_connected(want.double(), weight.double(), bias.double(), weight_gain, bias_gain, "lrelu")
    got = mapping_chain(x, [w.double() for w, *_ in layers], [b.double() for _, b, *_ in layers],
                        [g for *_, g, _ in layers], LR)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("normalize_input", [True, False])
def test_mapping_chain_with_other_layer_widths_falls_back_per_layer(normalize_input):
    """NVlabs' ``layer_features``: hidden layers narrower than the output (``[7, 6]``, ``[7, 7]``, ``[12, 7]``)."""
    gen = torch.Generator().manual_seed(3)
    x = randn([3, 6], generator=gen)
    layers = [equalised_layer(gen, 7, 6), equalised_layer(gen, 7, 7), equalised_layer(gen, 12, 7)]
    weights, biases, gains = [w for w, *_ in layers], [b for _, b, *_ in layers], [g for *_, g, _ in layers]
    actual = mapping_chain(x, weights, biases, gains, LR, normalize_input=normalize_input, impl="triton")
    expected = mapping_chain(x.double(), [w.double() for w in weights], [b.double() for b in biases], gains, LR,
                             normalize_input=normalize_input)
    assert actual.shape == (3, 12)
    assert_close(actual, expected, dtype=torch.float32, reduction_length=6 * 2 + 7 * 2)


def test_mapping_chain_unequal_gains_falls_back_per_layer():
    """Layers 1.. with different gains cannot share the fused kernel; the per-layer path is used."""
    gen = torch.Generator().manual_seed(1)
    x = randn([2, 6], generator=gen)
    layers = [equalised_layer(gen, 5, 6), equalised_layer(gen, 5, 5), equalised_layer(gen, 5, 5)]
    weights = [w for w, *_ in layers]
    biases = [b for _, b, *_ in layers]
    gains = [0.3, 0.2, 0.1]
    actual = mapping_chain(x, weights, biases, gains, LR, impl="triton")
    expected = mapping_chain(x.double(), [w.double() for w in weights], [b.double() for b in biases], gains, LR)
    assert_close(actual, expected, dtype=torch.float32, reduction_length=6 * 2 + 5 * 2)


@settings(deadline=None, max_examples=examples(30))
@given(batch=st.integers(1, 6), features=st.sampled_from([1, 3, 17, 64, 300, 513]),
       dtype=st.sampled_from(DTYPES), scale=st.sampled_from([1e-3, 1.0, 100.0]), seed=st.integers(0, 2**16))
def test_pixel_norm_matches_float64_reference(batch, features, dtype, scale, seed):
    x = (randn([batch, features], generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)
    actual = normalize_2nd_moment(x, impl="triton")
    expected = normalize_2nd_moment(x.double(), impl="ref")
    assert_close(actual, expected, dtype=dtype, reduction_length=features)


@settings(deadline=None, max_examples=examples(50))
@given(batch=st.integers(1, 4), features=st.integers(1, 40), num_ws=st.integers(1, 18),
       psi=st.sampled_from([1.0, 0.7, 0.0, -0.5, 1.5]), cutoff=st.one_of(st.none(), st.integers(0, 20)),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_truncate_matches_float64_reference(batch, features, num_ws, psi, cutoff, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    w = randn([batch, features], generator=gen).to(dtype)
    w_avg = randn([features], generator=gen)
    actual = truncate(w, w_avg, num_ws, psi, cutoff, impl="triton")
    expected = truncate(w.double(), w_avg.double(), num_ws, psi, cutoff, impl="ref")
    assert actual.shape == (batch, num_ws, features)
    assert actual.dtype == dtype
    assert_close(actual, expected, dtype=dtype)


@pytest.mark.parametrize("impl", ["ref", "triton"])
def test_truncate_properties(impl):
    """psi = 1 is a plain broadcast; psi = 0 gives w_avg up to the cutoff and w after it."""
    w = randn(2, 7)
    w_avg = randn(7)
    assert torch.equal(truncate(w, w_avg, 5, 1.0, None, impl=impl), w[:, None].expand(2, 5, 7))
    ws = truncate(w, w_avg, 5, 0.0, 3, impl=impl)
    assert torch.equal(ws[:, :3], w_avg.expand(2, 3, 7))
    assert torch.equal(ws[:, 3:], w[:, None].expand(2, 2, 7))


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: fully_connected(zeros(2, 4), zeros(3, 5), None, 1.0, 1.0, impl="triton"), "x"),
        (lambda: fully_connected(zeros(2, 5), zeros(3, 5), zeros(4), 1.0, 1.0, impl="triton"),
         "bias"),
        (lambda: fully_connected(zeros(2, 5), zeros(5), None, 1.0, 1.0, impl="triton"), "weight"),
        (lambda: fully_connected(zeros(2, 5), zeros(3, 5), None, 1.0, 1.0, act="gelu", impl="triton"),
         "act"),
        (lambda: fully_connected(zeros(2, 5), zeros(3, 5), None, 1.0, 1.0, impl="cuda"), "impl"),
        (lambda: mapping_chain(zeros(2, 5), [zeros(3, 5), zeros(3, 4)], None, 1.0, 1.0,
                               impl="triton"), r"weights\[1\]"),
        (lambda: mapping_chain(zeros(2, 5), [], None, 1.0, 1.0, impl="triton"), "weights"),
        (lambda: mapping_chain(zeros(2, 5), [zeros(3, 5)], [zeros(3)] * 2, 1.0, 1.0,
                               impl="triton"), "biases"),
        (lambda: mapping_chain(zeros(2, 5), [zeros(3, 5)], [zeros(4)], 1.0, 1.0,
                               impl="triton"), r"biases\[0\]"),
        (lambda: mapping_chain(zeros(2, 5), [zeros(3, 5)], None, [1.0, 2.0], 1.0, impl="triton"),
         "weight_gains"),
        (lambda: mapping_chain(zeros(2, 5, dtype=torch.bfloat16), [zeros(3, 5)], None, 1.0, 1.0,
                               impl="triton"), "x"),
        (lambda: normalize_2nd_moment(zeros(2, 5), dim=0, impl="triton"), "dim"),
        (lambda: normalize_2nd_moment(zeros(2, 5, 3), impl="triton"), "x"),
        (lambda: truncate(zeros(2, 5), zeros(4), 3, impl="triton"), "w_avg"),
        (lambda: truncate(zeros(2, 5), zeros(5), 0, impl="triton"), "num_ws"),
        (lambda: truncate(zeros(2, 5), zeros(5), 3, 0.5, -1, impl="triton"), "cutoff"),
        (lambda: truncate(zeros(5), zeros(5), 3, impl="triton"), "w"),
    ],
)
def test_bad_arguments_name_the_argument(call, argument):
    with pytest.raises((ValueError, TypeError), match=rf"(^|\W){argument}(?!\w)"):
        call()


def test_custom_ops_pass_opcheck():
    gen = torch.Generator().manual_seed(2)
    x = randn(3, 6, generator=gen)
    w0, b0, g0, _ = equalised_layer(gen, 4, 6)
    w1, b1, g1, _ = equalised_layer(gen, 4, 4)
    ops = torch.ops.sgtriton
    torch.library.opcheck(ops.pixel_norm.default, (x, 1e-8))
    torch.library.opcheck(ops.fully_connected.default, (x, w0, b0, g0, LR, "lrelu", 0.2, math.sqrt(2)))
    torch.library.opcheck(ops.mapping_chain.default,
                          (x, [w0, w1], [b0, b1], [g0, g1], LR, "lrelu", 0.2, math.sqrt(2), True, 1e-8))
    torch.library.opcheck(ops.truncate.default, (x, randn(6, generator=gen), 5, 0.7, 3))
