"""The device kernel tests run on: CUDA when present (compiled kernels), else the CPU (kernels
under Triton's interpreter, which sgtriton selects on import when there is no GPU).

Tests never hard-code CPU tensors for a kernel: they take :func:`kernel_device` (or the pytest
fixture ``device`` built on it in ``tests/conftest.py``), so the same suite proves the compiled
kernels on a GPU host and the interpreted ones elsewhere. Tests marked ``gpu`` are skipped
cleanly when :func:`cuda_available` is false (:func:`skip_gpu_tests_without_cuda`).
"""

from __future__ import annotations

import pytest
import torch

#: Reason shown for every ``gpu``-marked test skipped on a machine without CUDA.
NO_CUDA_REASON = "needs a CUDA device (gpu tier); this machine has none"


def cuda_available() -> bool:
    return torch.cuda.is_available()


def kernel_device() -> torch.device:
    """``cuda`` when a CUDA device is present, else ``cpu`` (interpreter)."""
    return torch.device("cuda" if cuda_available() else "cpu")


def skip_gpu_tests_without_cuda(items: list[pytest.Item]) -> None:
    """For ``pytest_collection_modifyitems``: skip every ``gpu``-marked item when there is no CUDA."""
    if cuda_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
