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
