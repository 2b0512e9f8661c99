"""Kernel backward (and double backward) == float64 reference autograd, from sgtriton's public harness alone."""

from sgtriton.testing import block_gradient_test

test_adaptive_kernel_gradients_match_reference = block_gradient_test("adaptive-kernel")
