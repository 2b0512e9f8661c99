"""Fixtures of the generation tests (helpers live in ``generation_helpers``)."""

from pathlib import Path

import pytest
from generation_helpers import small_generator

import sgtriton


@pytest.fixture(scope="session")
def small_network(tmp_path_factory) -> Path:
    """The small generator of ``generation_helpers`` as a native checkpoint."""
    path = tmp_path_factory.mktemp("network") / "small.safetensors"
    sgtriton.save(small_generator(), path)
    return path
