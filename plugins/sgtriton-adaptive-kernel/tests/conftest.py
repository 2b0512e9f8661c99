"""Plugin test set-up, the same as sgtriton's own: import sgtriton first (it selects Triton's interpreter
when there is no GPU, before any kernel is decorated) and load the shared hypothesis profile."""

import sgtriton  # noqa: F401
from sgtriton.testing.profiles import load_profile

load_profile()
