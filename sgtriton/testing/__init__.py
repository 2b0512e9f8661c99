"""Public testing tools: the tolerance table, hypothesis profiles and, for any registered block,
the kernel-versus-reference equivalence harness (``block_equivalence_test``)."""

from sgtriton.testing.harness import (
    LayerCase,
    assert_block_equivalent,
    block_equivalence_test,
    check_layer_case,
    layer_cases,
)
from sgtriton.testing.tolerance import TOLERANCES, assert_close, generator_reduction_length, tolerance_for

__all__ = [
    "TOLERANCES",
    "LayerCase",
    "assert_block_equivalent",
    "assert_close",
    "block_equivalence_test",
    "check_layer_case",
    "generator_reduction_length",
    "layer_cases",
    "tolerance_for",
]
