"""Public testing tools: the tolerance table, hypothesis profiles and (for any registered block)
the kernel-versus-reference equivalence harness."""

from sgtriton.testing.tolerance import TOLERANCES, assert_close, tolerance_for

__all__ = ["TOLERANCES", "assert_close", "tolerance_for"]
