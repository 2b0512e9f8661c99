"""Every built-in block: Triton backward (and double backward) == float64 reference autograd, one line each."""

from sgtriton.testing import block_gradient_test

test_moddemod_gradients = block_gradient_test("moddemod")
test_revised_gradients = block_gradient_test("revised")
test_adain_gradients = block_gradient_test("adain")
