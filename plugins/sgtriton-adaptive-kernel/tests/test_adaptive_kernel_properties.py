"""Properties of the adaptive-kernel block that follow from its maths.

* a bank of one kernel is ``moddemod`` (the softmax over one entry is exactly 1);
* the selection weights are a probability vector per sample;
* a one-hot selection (a huge selector bias on entry ``j``, zero selector weights) is ``moddemod``
  with kernel ``W_j``;
* the Gram form of the demodulation equals the direct one, and the two NVlabs formulations agree.

``moddemod`` comparisons of the float64 reference use the tolerance table's float64 row: the mixed
kernel is bitwise ``W`` (tested), but batched and unbatched BLAS reductions round in different orders.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sgtriton.blocks.nodes import LayerNode
from sgtriton.registry import create_block
from sgtriton.testing import assert_close

from sgtriton_adaptive_kernel.reference import bank_gram, mix_bank, selection_quadratic

W_DIM = 4


def conv_node(cin: int, cout: int, up: int, resolution: int = 8, clamp: float | None = 256.0) -> LayerNode:
    return LayerNode(f"synthesis.b{resolution}.conv{0 if up > 1 else 1}", "conv", resolution=resolution,
                     in_channels=cin, out_channels=cout, up=up, w_dim=W_DIM, conv_clamp=clamp,
                     options={"resample_filter": (1, 3, 3, 1)})


def layers(node: LayerNode, bank_size: int, entry: int, seed: int):
    """An adaptive-kernel layer and the moddemod layer holding its bank entry ``entry`` (same affine,
    noise, bias), with random parameters; the selector is left to the caller."""
    torch.manual_seed(seed)
    adaptive = create_block("adaptive-kernel", {"bank_size": bank_size}).make_layer(node)
    moddemod = create_block("moddemod").make_layer(node)
    with torch.no_grad():
        for module in (adaptive, moddemod):
            for name, tensor in module.named_parameters():
                tensor.copy_(torch.randn(tensor.shape) * 0.5 + (1.0 if name == "affine.bias" else 0.0))
        moddemod.affine.load_state_dict(adaptive.affine.state_dict())
        moddemod.weight.copy_(adaptive.weight_bank[entry])
        moddemod.noise_strength.copy_(adaptive.noise_strength)
        moddemod.bias.copy_(adaptive.bias)
        moddemod.noise_const.copy_(adaptive.noise_const)
    return adaptive, moddemod


def inputs(node: LayerNode, batch: int, dtype: torch.dtype = torch.float64):
    r_in = node.resolution // node.up
    return (torch.randn(batch, node.in_channels, r_in, r_in, dtype=dtype),
            torch.randn(batch, W_DIM, dtype=torch.float64 if dtype == torch.float64 else torch.float32))


def reduction_length(node: LayerNode) -> int:
    return create_block("adaptive-kernel").reduction_length(node)


@given(cin=st.sampled_from([1, 3, 8]), cout=st.sampled_from([1, 5]), up=st.sampled_from([1, 2]),
       batch=st.integers(1, 3), fused=st.booleans(), noise_mode=st.sampled_from(["const", "none"]),
       seed=st.integers(0, 2**16))
def test_bank_of_one_is_moddemod(cin, cout, up, batch, fused, noise_mode, seed):
    node = conv_node(cin, cout, up)
    adaptive, moddemod = layers(node, bank_size=1, entry=0, seed=seed)
    adaptive, moddemod = adaptive.double(), moddemod.double()
    x, w = inputs(node, batch)
    selection = adaptive.selection_weights(w)
    assert torch.equal(selection, torch.ones_like(selection))
    assert torch.equal(mix_bank(adaptive.weight_bank, selection)[0], moddemod.weight)
    got = adaptive(x, w, noise_mode=noise_mode, fused_modconv=fused, gain=0.5)
    expected = moddemod(x, w, noise_mode=noise_mode, fused_modconv=fused, gain=0.5)
    assert_close(got, expected, dtype=torch.float64, reduction_length=reduction_length(node), name="bank_size=1")


@pytest.mark.parametrize("up", [1, 2])
def test_bank_of_one_kernel_matches_moddemod_kernel(up, device):
    node = conv_node(5, 6, up)
    adaptive, moddemod = layers(node, bank_size=1, entry=0, seed=up)
    x, w = inputs(node, 2, torch.float32)
    got = adaptive.to(device)(x.to(device), w.to(device), noise_mode="const", impl="triton")
    expected = moddemod.double()(x.double(), w.double(), noise_mode="const", impl="reference")
    assert_close(got, expected, reduction_length=reduction_length(node), name=f"triton bank_size=1 up={up}")


@given(bank_size=st.integers(1, 6), batch=st.integers(1, 5), scale=st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**16))
def test_selection_weights_are_a_probability_vector(bank_size, batch, scale, dtype, seed):
    node = conv_node(3, 2, 1)
    torch.manual_seed(seed)
    layer = create_block("adaptive-kernel", {"bank_size": bank_size}).make_layer(node).to(dtype)
    with torch.no_grad():
        layer.selector.weight.normal_(0, scale)
        layer.selector.bias.normal_(0, scale)
    a = layer.selection_weights(torch.randn(batch, W_DIM, dtype=dtype))
    assert a.shape == (batch, bank_size)
    assert bool((a >= 0).all()) and bool((a <= 1).all())
    torch.testing.assert_close(a.sum(dim=1), torch.ones(batch, dtype=dtype))


def one_hot_selector(layer, entry: int) -> None:
    with torch.no_grad():
        layer.selector.weight.zero_()
        layer.selector.bias.zero_()
        layer.selector.bias[entry] = 1e4  # exp(-1e4) is 0: the selection is exactly one-hot


@given(bank_size=st.integers(2, 4), data=st.data(), up=st.sampled_from([1, 2]), fused=st.booleans(),
       seed=st.integers(0, 2**16))
def test_one_hot_selection_reproduces_that_bank_entry(bank_size, data, up, fused, seed):
    entry = data.draw(st.integers(0, bank_size - 1))
    node = conv_node(4, 3, up)
    adaptive, moddemod = layers(node, bank_size, entry, seed)
    one_hot_selector(adaptive, entry)
    adaptive, moddemod = adaptive.double(), moddemod.double()
    x, w = inputs(node, 2)
    selection = adaptive.selection_weights(w)
    assert torch.equal(selection, torch.nn.functional.one_hot(torch.full([2], entry), bank_size).double())
    assert torch.equal(mix_bank(adaptive.weight_bank, selection)[1], moddemod.weight)
    got = adaptive(x, w, noise_mode="const", fused_modconv=fused)
    expected = moddemod(x, w, noise_mode="const", fused_modconv=fused)
    assert_close(got, expected, dtype=torch.float64, reduction_length=reduction_length(node), name="one-hot")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_one_hot_selection_in_the_kernel(dtype, device):
    node = conv_node(6, 5, 2)
    adaptive, moddemod = layers(node, bank_size=3, entry=2, seed=7)
    one_hot_selector(adaptive, 2)
    x, w = inputs(node, 2, dtype)
    got = adaptive.to(device)(x.to(device), w.to(device), noise_mode="const", impl="triton")
    expected = moddemod.double()(x.double(), w.double(), noise_mode="const", impl="reference")
    assert_close(got, expected, dtype=dtype, reduction_length=reduction_length(node), name=f"one-hot {dtype}")


@given(bank_size=st.integers(1, 5), cin=st.integers(1, 6), cout=st.integers(1, 6), batch=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_gram_demodulation_equals_the_mixed_kernels_energy(bank_size, cin, cout, batch, seed):
    torch.manual_seed(seed)
    bank = torch.randn(bank_size, cout, cin, 3, 3, dtype=torch.float64)
    selection = torch.randn(batch, bank_size, dtype=torch.float64).softmax(dim=1)
    direct = mix_bank(bank, selection).square().sum(dim=[3, 4])
    torch.testing.assert_close(selection_quadratic(bank_gram(bank), selection), direct, rtol=1e-12, atol=1e-12)


@given(bank_size=st.integers(1, 4), up=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_fused_and_unfused_formulations_agree(bank_size, up, seed):
    node = conv_node(5, 4, up)
    torch.manual_seed(seed)
    layer = create_block("adaptive-kernel", {"bank_size": bank_size}).make_layer(node).double()
    with torch.no_grad():
        layer.selector.weight.normal_()
        layer.bias.normal_()
    x, w = inputs(node, 3)
    assert_close(layer(x, w, noise_mode="const", fused_modconv=False),
                 layer(x, w, noise_mode="const", fused_modconv=True),
                 dtype=torch.float64, reduction_length=reduction_length(node), name="fused vs unfused")
