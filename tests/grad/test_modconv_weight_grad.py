"""The modulated conv's weight-gradient kernel against float64 ``torch.nn.grad.conv2d_weight``.

Sizes straddle the default config's tiles (``BLOCK_O`` output channels, ``BLOCK_I`` input channels,
``BLOCK_P`` batch x pixel steps), with batch > 1 and non-square maps.
fp16 inputs are exact in float64 and the kernel accumulates in fp32, so both dtypes are held to the
fp32 row of the tolerance table, with the reduction length ``N H W`` of each weight entry.
"""

import pytest
import torch

from sgtriton.ops.modconv import MODCONV_WEIGHT_GRAD_KERNEL, modconv_weight_grad_triton
from sgtriton.testing import assert_close

F64 = torch.float64
TILE = MODCONV_WEIGHT_GRAD_KERNEL.default_config.meta
BO, BI, BP = TILE["BLOCK_O"], TILE["BLOCK_I"], TILE["BLOCK_P"]

# (batch, cin, cout, height, width, k)
CASES = [
    (2, 5, 3, 9, 9, 3),                      # one O and one I tile, pixels over several BLOCK_P steps
    (2, BI + 6, BO + 8, 3, 5, 3),            # O and I each cross a tile, pixels under one step
    (2, BI + 6, 3, 3, 4, 1),                 # 1x1 kernel
]


def test_cases_straddle_the_tiles():
    assert CASES[0][1] < BI < CASES[1][1] and CASES[0][2] < BO < CASES[1][2]
    assert CASES[1][0] * CASES[1][3] * CASES[1][4] < BP < CASES[0][0] * CASES[0][3] * CASES[0][4]
    assert CASES[0][0] * CASES[0][3] * CASES[0][4] % BP != 0


def draw(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch,cin,cout,height,width,k", CASES)
def test_weight_grad_kernel_matches_conv2d_weight(device, dtype, batch, cin, cout, height, width, k):
    x = draw((batch, cin, height, width), seed=1).to(dtype)
    g = draw((batch, cout, height, width), seed=2).to(dtype)
    expected = torch.nn.grad.conv2d_weight(x.to(F64), [cout, cin, k, k], g.to(F64), padding=k // 2)
    got = modconv_weight_grad_triton(x.to(device), g.to(device), k)
    assert got.dtype == torch.float32
    assert_close(got, expected, dtype=torch.float32, reduction_length=batch * height * width, name="dW")


def test_weight_grad_kernel_reads_strided_inputs(device):
    """Channels-last ``x`` and a phase-stacked (non-contiguous) ``g``, as the up=2 backward passes it."""
    x = draw((2, 4, 5, 6), seed=3).float()
    g = draw((2, 5, 6, 5), seed=4).float().transpose(2, 3)
    expected = torch.nn.grad.conv2d_weight(x.to(F64), [5, 4, 3, 3], g.to(F64), padding=1)
    got = modconv_weight_grad_triton(x.to(device).to(memory_format=torch.channels_last), g.to(device), 3)
    assert_close(got, expected, dtype=torch.float32, reduction_length=60, name="dW strided")


def test_weight_grad_op_backward_matches_conv2d_weight_autograd(device):
    """The op's own backward (what double backward of the modulated conv differentiates through)."""
    x = draw((2, 3, 5, 4), seed=5)
    g = draw((2, 4, 5, 4), seed=6)
    cotangent = draw((4, 3, 3, 3), seed=7)
    x64, g64 = x.clone().requires_grad_(), g.clone().requires_grad_()
    expected = torch.autograd.grad(
        (torch.nn.grad.conv2d_weight(x64, [4, 3, 3, 3], g64, padding=1) * cotangent).sum(), [x64, g64])
    x32, g32 = x.float().to(device).requires_grad_(), g.float().to(device).requires_grad_()
    got = torch.autograd.grad((torch.ops.sgtriton.modconv_weight_grad(x32, g32, 3) * cotangent.to(device)).sum(),
                              [x32, g32])
    assert_close(got[0], expected[0], reduction_length=4 * 9, name="d/dx")
    assert_close(got[1], expected[1], reduction_length=3 * 9, name="d/dg")


def test_weight_grad_rejects_bad_input(device):
    x = torch.zeros(2, 3, 4, 4, device=device)
    with pytest.raises(ValueError, match="x, g"):
        modconv_weight_grad_triton(x, torch.zeros(2, 5, 4, 3, device=device), 3)
    with pytest.raises(ValueError, match="g: expected dtype"):
        modconv_weight_grad_triton(x, torch.zeros(2, 5, 4, 4, device=device, dtype=torch.float16), 3)
    with pytest.raises(ValueError, match="k: expected"):
        modconv_weight_grad_triton(x, torch.zeros(2, 5, 4, 4, device=device), 2)
