"""Hypothesis profiles shared by sgtriton's tests and by plugin tests.

* ``ci`` (default): few examples per property, no deadline (interpreter runs are slow).
* ``thorough``: many examples, for GPU runs and before releases.

Select with ``SGTRITON_HYPOTHESIS_PROFILE=thorough`` (or hypothesis' ``--hypothesis-profile``).
A test that pins its own ``max_examples`` takes it from :func:`examples`, so the profile still raises
it; :func:`check_examples_follow_profile` (run on every collection) rejects a pin below the profile.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest
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


def pinned_below_profile(items: Iterable[pytest.Item]) -> list[str]:
    """Ids of the collected hypothesis tests that would run fewer examples than the loaded profile's
    count: a ``@settings(max_examples=...)`` pin below it, or a ``@given`` applied before the profile
    was loaded (it keeps the default of that moment)."""
    floor = settings.default.max_examples
    low = []
    for item in items:
        test = getattr(item, "obj", None)
        if test is None or not hasattr(test, "hypothesis"):
            continue
        # hypothesis keeps the settings a test runs with on the function (@settings, else the default).
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if own is not None and own.max_examples < floor:
            low.append(f"{item.nodeid} (max_examples={own.max_examples} < {floor})")
    return low


def check_examples_follow_profile(items: Iterable[pytest.Item]) -> None:
    """For ``pytest_collection_modifyitems``: fail the run when a test pins ``max_examples`` below the
    loaded profile's (pin it with :func:`examples` instead)."""
    low = pinned_below_profile(items)
    if low:
        raise pytest.UsageError(f"hypothesis tests ignore the {settings.get_current_profile_name()!r} profile's "
                                f"max_examples; pin them with sgtriton.testing.profiles.examples(): " + "; ".join(low))
