"""Kernel backward (and double backward) == float64 reference autograd, from sgtriton's public harness alone.

Beside the drawn cases, fixed ones make sure every run covers both bank regimes (unrolled and looped
kernels, also in the backward's transposed conv), up = 1 and up = 2, fp32 and fp16, a batch of three
with a style and a selection per sample, and noise (random and constant, with a non-zero strength).
"""

import dataclasses
import math

import pytest
import torch
from sgtriton.testing import block_gradient_test, check_layer_gradients
from sgtriton.testing.harness import production_layer_case

from sgtriton_adaptive_kernel.kernel import UNROLL_MAX_BANK

test_adaptive_kernel_gradients_match_reference = block_gradient_test("adaptive-kernel")

# (bank size, up, dtype, noise mode, conv clamp, gain): each bank regime meets each up and each dtype once.
CASES = [
    (3, 1, torch.float32, "random", None, 1.0),
    (3, 2, torch.float16, "const", 256.0, math.sqrt(0.5)),
    (UNROLL_MAX_BANK + 1, 1, torch.float16, "random", 0.5, 1.0),
    (UNROLL_MAX_BANK + 1, 2, torch.float32, "const", None, math.sqrt(0.5)),
]


def fixed_case(bank_size, up, dtype, noise_mode, clamp, gain, seed):
    case = production_layer_case("adaptive-kernel", "conv", up, 4, 3, dtype, 5, {"bank_size": bank_size}, seed=seed)
    node = dataclasses.replace(case.node, out_channels=6, w_dim=3, conv_clamp=clamp)
    return dataclasses.replace(case, node=node, noise_mode=noise_mode, gain=gain)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_fixed_cases_gradients_match_reference(device, index):
    case = fixed_case(*CASES[index], seed=100 + index)
    assert case.batch == 3 and case.node.use_noise
    check_layer_gradients(case, device)


def test_op_autograd_passes_opcheck(device):
    """Autograd registration and AOT dispatch (forward and backward traced as ``torch.compile`` does),
    for the up = 2 layer with noise and clamp and for the undemodulated up = 1 op the backward runs."""
    from sgtriton.ops.upfirdn2d import setup_filter

    gen = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(shape, generator=gen).to(device).requires_grad_()

    op = torch.ops.sgtriton_adaptive_kernel.adaptive_modulated_conv2d
    x, logits, styles, bias = leaf(2, 3, 4, 4), leaf(2, 2), leaf(2, 3), leaf(5)
    bank = leaf(2, 5, 3, 3, 3)
    f = setup_filter([1, 3, 3, 1]).to(device)
    for args in [(x, bank, logits, styles, bias, leaf(2, 1, 8, 8), leaf(1), f, 2, 0.2, 1.4, 0.5, True),
                 (x, bank, logits, styles, bias, None, None, None, 1, 1.0, 1.0, None, False)]:
        torch.library.opcheck(op, args, test_utils=("test_autograd_registration", "test_aot_dispatch_dynamic"))
