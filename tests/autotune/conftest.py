"""Fixtures for the autotune tests: an isolated cache folder, no policy left installed, fake kernels."""

import itertools

import pytest
from autotune_fakes import declare_fake, undeclare

from sgtriton.autotune import cache as cache_module
from sgtriton.autotune import policy as policy_module
from sgtriton.ops import _runtime
from sgtriton.ops._runtime import CACHE_ENV

_names = itertools.count()


@pytest.fixture(autouse=True)
def isolated_autotune(tmp_path, monkeypatch):
    """Each test gets its own cache root, an unset SGTRITON_AUTOTUNE and fresh 'reported once' state."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(policy_module.AUTOTUNE_ENV, raising=False)
    monkeypatch.setattr(cache_module, "_REPORTED", set())
    previous = _runtime._config_selector
    yield tmp_path / "cache"
    policy_module.uninstall()
    _runtime.set_config_selector(previous)


@pytest.fixture
def gpu_like(monkeypatch):
    """Launchers consult the selector (as on a GPU); the fake kernels run on CPU tensors."""
    monkeypatch.setenv(_runtime.INTERPRET_ENV, "0")


@pytest.fixture
def fake_spec():
    name = f"fake_kernel_{next(_names)}"
    spec = declare_fake(name)
    yield spec
    undeclare(name)


@pytest.fixture
def make_fake_spec():
    names = []

    def make(**kwargs):
        name = f"fake_kernel_{next(_names)}"
        names.append(name)
        return declare_fake(name, **kwargs)

    yield make
    undeclare(*names)
