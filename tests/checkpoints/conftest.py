"""Checkpoint tests run tiny generators: one intra-op thread is several times faster for them on a
shared machine than torch's default, so each test runs with one and restores the setting after."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
