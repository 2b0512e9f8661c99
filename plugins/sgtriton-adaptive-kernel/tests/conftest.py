"""Plugin test set-up, the same as sgtriton's own: import sgtriton first (it selects Triton's interpreter
when there is no GPU, before any kernel is decorated), load the shared hypothesis profile, and take the
kernel device from sgtriton's testing tools (CUDA when present, else the CPU with the interpreter); a test
that pins max_examples below the profile fails the collection."""

import pytest
import sgtriton  # noqa: F401
from sgtriton.testing.devices import kernel_device, skip_gpu_tests_without_cuda
from sgtriton.testing.profiles import check_examples_follow_profile, load_profile

load_profile()


@pytest.fixture(scope="session")
def device():
    return kernel_device()


def pytest_collection_modifyitems(config, items):
    skip_gpu_tests_without_cuda(items)
    check_examples_follow_profile(items)
