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


def test_an_output_clamped_to_a_clamp_that_fp16_rounds_down_counts_as_clamped():
    clamp = 0.5 * 0.7071067811865476  # conv_clamp * gain; fp16 stores it as 0.35352
    kernel = torch.tensor([clamp, -clamp, 0.3], dtype=torch.float16)
    reference = torch.tensor([clamp, -clamp, 0.3], dtype=torch.float64)
    assert not kink_disagreement(kernel, reference, clamp).any()
    assert kink_disagreement(kernel, torch.tensor([0.35, -clamp, 0.3], dtype=torch.float64), clamp).tolist() == [
        True, False, False]
