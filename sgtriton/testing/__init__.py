"""Public testing tools: the tolerance table, hypothesis profiles and, for any registered block,
the kernel-versus-reference equivalence harness (``block_equivalence_test``) and its backward
counterpart (``block_gradient_test``), and the host-work detector a CUDA-graph capture relies on
(``no_host_syncs``)."""

from sgtriton.testing.gradients import assert_block_gradients, block_gradient_test, check_layer_gradients
from sgtriton.testing.harness import (
    LayerCase,
    assert_block_equivalent,
    block_equivalence_test,
    check_layer_case,
    layer_cases,
)
from sgtriton.testing.host_sync import HostSyncError, no_host_syncs
from sgtriton.testing.tolerance import TOLERANCES, assert_close, generator_reduction_length, tolerance_for

__all__ = [
    "TOLERANCES",
    "HostSyncError",
    "LayerCase",
    "assert_block_equivalent",
    "assert_block_gradients",
    "assert_close",
    "block_equivalence_test",
    "block_gradient_test",
    "check_layer_case",
    "check_layer_gradients",
    "generator_reduction_length",
    "layer_cases",
    "no_host_syncs",
    "tolerance_for",
]
