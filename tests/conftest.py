"""Test set-up: sgtriton selects Triton's interpreter on import when no GPU is present, so it is
imported here before any test module imports a kernel."""

import sgtriton  # noqa: F401  (sets TRITON_INTERPRET before kernels are decorated)
from sgtriton.testing.profiles import load_profile

load_profile()
