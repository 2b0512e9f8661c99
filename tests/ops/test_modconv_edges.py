"""Edge cases of the fused modulated conv where its epsilon and epilogue terms decide the result."""

import pytest
import torch

from sgtriton.ops.bias_act import ACTIVATIONS
from sgtriton.ops.modconv import modulated_conv2d_layer
from sgtriton.testing import assert_close


def layer(x, weight, styles, impl, **kwargs):
    return modulated_conv2d_layer(x, weight, styles, impl=impl, **kwargs)


def on(device, *tensors):
    return [t.to(device) for t in tensors]


@pytest.mark.parametrize("up", [1, 2])
def test_zero_styles_demodulate_to_the_bias_alone(up, device):
    # Sum of squared modulated weights is 0: only the 1e-8 epsilon keeps rsqrt finite (d = 1e4, 0 * 1e4 = 0).
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=gen)
    weight = torch.randn(5, 3, 3, 3, generator=gen)
    bias = torch.randn(5, generator=gen)
    x, weight, bias, styles = on(device, x, weight, bias, torch.zeros(2, 3))
    out = layer(x, weight, styles, "triton", bias=bias, up=up)
    expected = torch.nn.functional.leaky_relu(bias, 0.2)[None, :, None, None].expand_as(out) * 2**0.5
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected)


def test_tiny_styles_feel_the_epsilon(device):
    # s^2 * Q comparable to eps: d depends on eps, and the kernel must match the reference that has it.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 5, 5, generator=gen)
    weight = torch.randn(3, 4, 3, 3, generator=gen)
    styles = torch.full([1, 4], 2e-5)
    actual = layer(*on(device, x, weight, styles), "triton", act="linear", gain=1.0)
    expected = layer(x.double(), weight.double(), styles.double(), "ref", act="linear", gain=1.0)
    without_eps = expected * torch.sqrt(1 + 1e-8 / (styles.double()[0, 0] ** 2 *
                                                    weight.double().square().sum([1, 2, 3])))[None, :, None, None]
    assert (without_eps - expected).abs().max() > 0.1 * expected.abs().max()  # eps matters here
    assert_close(actual, expected, dtype=torch.float32, reduction_length=36)


@pytest.mark.parametrize("noise_shape", [(4, 4), (2, 1, 4, 4)])
def test_noise_strength_scales_the_noise(noise_shape, device):
    # Compared with the float64 reference, and the noise term checked to be large enough to matter.
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    weight = torch.randn(2, 3, 3, 3, generator=gen, dtype=torch.float64)
    styles = torch.rand(2, 3, generator=gen, dtype=torch.float64) + 0.5
    noise = torch.randn(noise_shape, generator=gen, dtype=torch.float64)
    strength = torch.tensor(0.5, dtype=torch.float64)
    kwargs = dict(act="linear", gain=1.0)
    expected = layer(x, weight, styles, "ref", noise=noise, noise_strength=strength, **kwargs)
    quiet = layer(x, weight, styles, "ref", **kwargs)
    assert (expected - quiet).abs().max() > 0.1
    actual = layer(*on(device, x.float(), weight.float(), styles.float()), "triton",
                   noise=noise.float().to(device), noise_strength=strength.float().to(device), **kwargs)
    assert_close(actual, expected, dtype=torch.float32, reduction_length=27, name="noisy layer")


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("alpha", [None, 0.3])
def test_every_activation_and_alpha_match_the_reference(act, alpha, device):
    # The kernel's epilogue reads the same ACTIVATIONS table as the reference: relu ignores alpha.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    styles = torch.randn(2, 3, generator=gen, dtype=torch.float64) + 1
    bias = torch.randn(4, generator=gen, dtype=torch.float64)
    expected = layer(x, weight, styles, "ref", bias=bias, act=act, alpha=alpha)
    assert (layer(x, weight, styles, "ref", bias=bias, act="linear") < 0).any()  # the negative side is tested
    actual = layer(*on(device, x.float(), weight.float(), styles.float()), "triton",
                   bias=bias.float().to(device), act=act, alpha=alpha)
    assert_close(actual, expected, dtype=torch.float32, reduction_length=27, name=f"act={act} alpha={alpha}")
