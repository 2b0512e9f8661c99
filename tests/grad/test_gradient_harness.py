"""The gradient harness compares backwards only where both forwards take the same side of every kink."""

import torch

from sgtriton.testing.gradients import kink_disagreement


def test_kink_disagreement_flags_only_outputs_that_straddle_a_kink():
    reference = torch.tensor([-0.3, 1e-4, -1e-4, 0.49999, 0.5, -0.5, 0.2], dtype=torch.float64)
    kernel = torch.tensor([-0.3, -1e-4, -2e-4, 0.5, 0.5, -0.499, 0.2001], dtype=torch.float16)
    flagged = kink_disagreement(kernel, reference, clamp=0.5)
    # sign flip at 1e-4; the clamp reached by one side only at 0.49999 and -0.5; rounding elsewhere.
    assert flagged.tolist() == [False, True, False, True, False, True, False]
    assert kink_disagreement(kernel, reference, clamp=None).tolist() == [False, True, False, False, False,
                                                                           False, False]
