"""Hypothesis profiles shared by sgtriton's tests and by plugin tests.

* ``ci`` (default): few examples per property, no deadline (interpreter runs are slow).
* ``thorough``: many examples, for GPU runs and before releases.

Select with ``SGTRITON_HYPOTHESIS_PROFILE=thorough`` (or hypothesis' ``--hypothesis-profile``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_ENV = "SGTRITON_HYPOTHESIS_PROFILE"

settings.register_profile(
    "ci", max_examples=8, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def load_profile() -> str:
    """Load ``$SGTRITON_HYPOTHESIS_PROFILE`` (default ``ci``) and return its name."""
    name = os.environ.get(PROFILE_ENV, "ci")
    settings.load_profile(name)
    return name


def examples(ci_count: int) -> int:
    """``max_examples`` for a test that wants ``ci_count`` under ``ci``: never fewer than the loaded
    profile's own count, so ``thorough`` raises every test (call it when the test is decorated)."""
    return max(ci_count, settings.default.max_examples)
