"""The modulated conv keeps an fp32 accumulator over a long reduction of fp16 operands.

With zero-mean draws the partial sums of ``sum_{i,k} x * W s`` are a random walk no larger than the
result, so an accumulator rounded to fp16 at every K step (``tl.dot(..., out_dtype=float16)``, or
the fp32 accumulator cast down and back) stays inside the fp16 tolerance row and no other test sees
it. Here the partial sums climb far above the result before they cancel: ``x`` has mean 16 and the
weights are signed along the kernel's reduction order (taps row by row, input channels within a
tap), positive in its first half and negative in its second. An fp16 accumulator then loses
``~2^-11`` of the peak per step, while an fp32 one stays well inside the fp16 row (under the
interpreter the fp32 accumulator's worst error is about a tenth of the bound; an accumulator rounded
to fp16 per step breaks it at 5 to 21 of the 48 outputs of each case).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sgtriton.ops.modconv import fp16_prenormalize, modulated_conv2d_layer
from sgtriton.testing.tolerance import assert_close

F64 = torch.float64
MEAN = 16.0
#: The peak partial sum must dwarf the result, or the case does not test the accumulator.
MIN_PEAK_RATIO = 10.0


def cancelling_case(seed: int, in_ch: int, out_ch: int, k: int, h: int, w: int):
    """``x [1, I, h, w]`` of mean ``MEAN``, ``weight [O, I, k, k]``, ``styles [1, I]`` (positive) and
    the weight mask of the reduction's first half, in float64 on the CPU.

    ``k = 3``: taps 0..3 (row-major) carry ``|r| + 1/4``, tap 4 a signed ``r``, taps 5..8 minus
    taps 3..0, so an interior pixel's sum peaks after four taps and then cancels. ``k = 1``: input
    channels ``< I/2`` positive, the rest negative.
    """
    gen = torch.Generator().manual_seed(seed)
    x = MEAN + 0.5 * torch.randn([1, in_ch, h, w], generator=gen, dtype=F64)
    magnitude = torch.randn([out_ch, in_ch, k * k], generator=gen, dtype=F64).abs() + 0.25
    if k == 3:
        half = magnitude[..., :4]
        centre = torch.randn([out_ch, in_ch, 1], generator=gen, dtype=F64)
        weight = torch.cat([half, centre, -half.flip(-1)], dim=-1).reshape(out_ch, in_ch, 3, 3)
        first_half = torch.zeros(3, 3, dtype=F64).flatten().index_fill(0, torch.arange(4), 1.0).reshape(1, 1, 3, 3)
    else:
        sign = torch.ones(in_ch, dtype=F64)
        sign[in_ch // 2:] = -1
        weight = magnitude.reshape(out_ch, in_ch, 1, 1) * sign[None, :, None, None]
        first_half = (sign > 0).to(F64)[None, :, None, None]
    styles = 1 + 0.2 * torch.rand([1, in_ch], generator=gen, dtype=F64)
    return x, weight, styles, first_half


@pytest.mark.parametrize(
    ("k", "in_ch", "seed"),
    [(3, 256, 0), (3, 256, 1), (1, 512, 2)],  # 72 and 16 K steps of the default BLOCK_K = 32
)
def test_fp16_layer_accumulates_in_fp32_over_a_long_cancelling_reduction(device, k, in_ch, seed):
    out_ch, h, w = 4, 3, 4
    x, weight, styles, first_half = cancelling_case(seed, in_ch, out_ch, k, h, w)
    x16 = x.to(torch.float16)
    weight32, styles32 = weight.float(), styles.float()
    actual = modulated_conv2d_layer(x16.to(device), weight32.to(device), styles32.to(device), act="linear",
                                    gain=1.0, impl="triton")

    # The kernel sees x rounded to fp16 and fp32 parameters, pre-normalised as NVlabs does in fp16.
    x_ref = x16.to(F64)
    weight_ref, styles_ref = fp16_prenormalize(weight32.to(F64), styles32.to(F64))
    expected = modulated_conv2d_layer(x_ref, weight_ref, styles_ref, act="linear", gain=1.0, impl="ref")

    # The case bites: the reduction's first half (demodulated like the result) dwarfs the result.
    modulated = weight_ref * styles_ref[0][None, :, None, None]
    demod = (modulated.square().sum(dim=[1, 2, 3]) + 1e-8).rsqrt()[None, :, None, None]
    peak = F.conv2d(x_ref, modulated * first_half, padding=k // 2) * demod
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1)) if k == 3 else (...,)
    ratio = peak[interior].abs().amax() / expected[interior].abs().amax()
    assert ratio > MIN_PEAK_RATIO, f"peak partial sum only {ratio:.1f}x the result"

    assert actual.dtype == torch.float16
    assert_close(actual, expected, dtype=torch.float16, reduction_length=in_ch * k * k,
                 name=f"fp16 layer k={k} I={in_ch}")
