"""Test set-up: ``sgtriton.ops`` selects Triton's interpreter on import when no GPU is present; every
kernel module imports it before decorating a kernel.

Kernel tests take their tensors' device from the ``device`` fixture (CUDA when present, else the
CPU with the interpreter); ``gpu``-marked tests are skipped cleanly without CUDA; a hypothesis test that
pins ``max_examples`` below the loaded profile's fails the collection."""

import pytest

import sgtriton.ops  # noqa: F401  (sets TRITON_INTERPRET before kernels are decorated)
from sgtriton.testing.devices import kernel_device, skip_gpu_tests_without_cuda
from sgtriton.testing.profiles import check_examples_follow_profile, load_profile

load_profile()


@pytest.fixture(scope="session")
def device():
    """The device kernel tests run on: ``cuda`` when present, else ``cpu`` (interpreter)."""
    return kernel_device()


def pytest_collection_modifyitems(config, items):
    skip_gpu_tests_without_cuda(items)
    check_examples_follow_profile(items)
