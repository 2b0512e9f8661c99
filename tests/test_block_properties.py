"""Properties of the reference style layers that follow from their maths."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from sgtriton.blocks.adain import AdaINLayer
from sgtriton.blocks.nodes import LayerNode
from sgtriton.blocks.revised import RevisedLayer
from sgtriton.ops.modconv import modulated_conv2d_layer
from sgtriton.ops.normalization import rms_normalize_epilogue


def node(kind="conv", cin=5, cout=6, r=8, up=1, w_dim=7):
    return LayerNode(f"synthesis.b{r}.conv1", kind, resolution=r, in_channels=cin, out_channels=cout, up=up,
                     w_dim=w_dim, options={"resample_filter": (1, 3, 3, 1)})


@given(cin=st.integers(1, 6), cout=st.integers(1, 6), r=st.sampled_from([4, 8, 16]), up=st.sampled_from([1, 2]),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_adain_output_has_per_channel_mean_beta_and_std_gamma_plus_one(cin, cout, r, up, batch, seed):
    torch.manual_seed(seed)
    layer = AdaINLayer(node(cin=cin, cout=cout, r=r, up=up)).double()
    with torch.no_grad():
        layer.bias.normal_()
        layer.noise_weight.normal_()
    x = torch.randn(batch, cin, r // up, r // up, dtype=torch.float64)
    w = torch.randn(batch, 7, dtype=torch.float64)
    y = layer(x, w, noise_mode="const")
    style = layer.affine(w)
    gamma, beta = style[:, :cout], style[:, cout:]
    torch.testing.assert_close(y.mean(dim=[2, 3]), beta)
    # Instance norm uses the biased variance and eps 1e-8: std = |gamma + 1| * sqrt(var / (var + eps)).
    z = y - beta[:, :, None, None]
    pre = layer.conv(x) if layer.has_conv else x
    pre = pre + layer.noise_const * layer.noise_weight[None, :, None, None] + layer.bias[None, :, None, None]
    var = torch.nn.functional.leaky_relu(pre, 0.2).var(dim=[2, 3], unbiased=False)
    expected = (gamma + 1).abs() * (var / (var + 1e-8)).sqrt()
    torch.testing.assert_close(z.square().mean(dim=[2, 3]).sqrt(), expected)


def revised_normalised(layer, x, styles, fused_modconv):
    """The revised layer's conv output divided by its per-channel RMS (before noise, bias, activation)."""
    y = modulated_conv2d_layer(x, layer.weight, styles, up=layer.up, demodulate=False, act="linear", gain=1.0,
                               resample_filter=layer.resample_filter, fused_modconv=fused_modconv)
    return rms_normalize_epilogue(y)


@given(cin=st.integers(1, 6), cout=st.integers(1, 6), r=st.sampled_from([4, 8]), up=st.sampled_from([1, 2]),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_revised_normalised_output_has_unit_rms_per_channel(cin, cout, r, up, batch, seed):
    torch.manual_seed(seed)
    layer = RevisedLayer(node(cin=cin, cout=cout, r=r, up=up), (1, 3, 3, 1)).double()
    x = torch.randn(batch, cin, r // up, r // up, dtype=torch.float64)
    w = torch.randn(batch, 7, dtype=torch.float64)
    y = revised_normalised(layer, x, layer.affine(w), fused_modconv=True)
    mean_square = y.square().mean(dim=[2, 3])
    torch.testing.assert_close(mean_square, torch.ones_like(mean_square), rtol=1e-6, atol=1e-6)
    # The layer itself: noise and bias outside the normalisation, then lrelu * sqrt 2.
    with torch.no_grad():
        layer.bias.normal_()
        layer.noise_strength.fill_(0.5)
    expected = torch.nn.functional.leaky_relu(y + 0.5 * layer.noise_const + layer.bias[None, :, None, None], 0.2)
    torch.testing.assert_close(layer(x, w, noise_mode="const"), expected * 2**0.5)


@given(scale=st.floats(0.1, 10), seed=st.integers(0, 2**16))
def test_revised_layer_ignores_the_scale_of_its_styles(scale, seed):
    torch.manual_seed(seed)
    layer = RevisedLayer(node(), (1, 3, 3, 1)).double()
    x = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    s = torch.rand(2, 5, dtype=torch.float64) + 0.5
    a = revised_normalised(layer, x, s, fused_modconv=False)
    b = revised_normalised(layer, x, s * scale, fused_modconv=True)
    torch.testing.assert_close(a, b)
