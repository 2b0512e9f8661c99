"""Kernel == float64 reference for every built-in block, through the public harness."""

from sgtriton.testing import block_equivalence_test

test_moddemod_kernels_match_reference = block_equivalence_test("moddemod")
test_revised_kernels_match_reference = block_equivalence_test("revised")
test_adain_kernels_match_reference = block_equivalence_test("adain")
