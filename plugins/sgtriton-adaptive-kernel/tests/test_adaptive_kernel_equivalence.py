"""Kernel == reference for every layer of the block, from sgtriton's public harness alone."""

from sgtriton.testing import block_equivalence_test

test_adaptive_kernel_matches_reference = block_equivalence_test("adaptive-kernel")
