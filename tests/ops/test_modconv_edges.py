"""Edge cases of the fused modulated conv where its epsilon and epilogue terms decide the result."""

import pytest
import torch

from sgtriton.ops.modconv import modulated_conv2d_layer
from sgtriton.testing import assert_close


def layer(x, weight, styles, impl, **kwargs):
    return modulated_conv2d_layer(x, weight, styles, impl=impl, **kwargs)


@pytest.mark.parametrize("up", [1, 2])
def test_zero_styles_demodulate_to_the_bias_alone(up):
    # Sum of squared modulated weights is 0: only the 1e-8 epsilon keeps rsqrt finite (d = 1e4, 0 * 1e4 = 0).
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=gen)
    weight = torch.randn(5, 3, 3, 3, generator=gen)
    bias = torch.randn(5, generator=gen)
    out = layer(x, weight, torch.zeros(2, 3), "triton", bias=bias, up=up)
    expected = torch.nn.functional.leaky_relu(bias, 0.2)[None, :, None, None].expand_as(out) * 2**0.5
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected)


def test_tiny_styles_feel_the_epsilon():
    # s^2 * Q comparable to eps: d depends on eps, and the kernel must match the reference that has it.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 5, 5, generator=gen)
    weight = torch.randn(3, 4, 3, 3, generator=gen)
    styles = torch.full([1, 4], 2e-5)
    actual = layer(x, weight, styles, "triton", act="linear", gain=1.0)
    expected = layer(x.double(), weight.double(), styles.double(), "ref", act="linear", gain=1.0)
    without_eps = expected * torch.sqrt(1 + 1e-8 / (styles.double()[0, 0] ** 2 *
                                                    weight.double().square().sum([1, 2, 3])))[None, :, None, None]
    assert (without_eps - expected).abs().max() > 0.1 * expected.abs().max()  # eps matters here
    assert_close(actual, expected, dtype=torch.float32, reduction_length=36)


def test_noise_strength_scales_the_noise():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 4, generator=gen)
    weight = torch.randn(2, 3, 3, 3, generator=gen)
    styles = torch.rand(2, 3, generator=gen) + 0.5
    noise = torch.randn(4, 4, generator=gen)
    base = layer(x, weight, styles, "triton", act="linear", gain=1.0)
    noisy = layer(x, weight, styles, "triton", act="linear", gain=1.0, noise=noise, noise_strength=torch.tensor(0.5))
    torch.testing.assert_close(noisy - base, (0.5 * noise).expand_as(base), rtol=1e-5, atol=1e-5)
