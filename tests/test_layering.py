"""The package's layers import only the layers above them (``DESIGN.md``: ops -> blocks -> graph).

Each module of ``sgtriton`` is imported alone in a fresh interpreter (a child forked from one
that has imported torch, Triton, numpy and click but no ``sgtriton`` module, so each import costs
milliseconds), and what it loaded is read from ``sys.modules``. That sees every import a module
runs when it is imported, also those of the modules it imports, which a grep of its source
would not; imports inside functions run later and are not part of a module's layer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sgtriton"

# Imports each module named on stdin in its own forked child; prints {module: [loaded modules]}.
# "config" is imported first, before the parent has imported any third-party package, so its
# entry also shows whether it pulls in torch or Triton.
PROBE = r"""
import importlib, json, os, sys

def loaded_by(name, prefixes):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            out = sorted(m for m in sys.modules if m.startswith(prefixes))
        except BaseException as exc:
            out = {"error": repr(exc)}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 1 << 16):
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data)

names = sys.stdin.read().split()
result = {"fresh:sgtriton.config": loaded_by("sgtriton.config", ("sgtriton", "torch", "triton"))}
import click, numpy, torch, triton  # noqa: E401,F401  (shared by every child below)
for name in names:
    result[name] = loaded_by(name, ("sgtriton",))
print(json.dumps(result))
"""


def package_modules() -> list[str]:
    """Every module of the package by name, found on disk (importing packages to list them would
    load their modules in this process)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    if not hasattr(os, "fork"):
        pytest.skip("the probe forks one child per module")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-c", PROBE], input="\n".join(package_modules()), capture_output=True,
                         text=True, timeout=300, env=env, cwd=PACKAGE.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    errors = {name: mods["error"] for name, mods in result.items() if isinstance(mods, dict)}
    assert not errors, errors
    return result


def _outside(modules: list[str], allowed: tuple[str, ...]) -> list[str]:
    return [m for m in modules if m != "sgtriton" and not any(m == a or m.startswith(a + ".") for a in allowed)]


def test_every_module_is_probed(loaded):
    assert {"sgtriton.blocks.nodes", "sgtriton.ops.modconv", "sgtriton.graph.synthesis", "sgtriton.config",
            "sgtriton.inspection.compile_gate"} <= set(loaded)


def test_ops_import_only_ops(loaded):
    """``sgtriton/ops`` holds ops only and sits at the top: no registry, CLI, compile gate, blocks or graph."""
    for name, modules in loaded.items():
        if name.startswith("sgtriton.ops"):
            assert _outside(modules, ("sgtriton.ops", "sgtriton.filters")) == [], name


def test_blocks_import_nothing_from_the_graph(loaded):
    """Blocks consume the node spec (:mod:`sgtriton.blocks.nodes`), which the graph creates; the
    graph imports blocks, so blocks importing the graph would be a cycle."""
    for name, modules in loaded.items():
        if name.startswith("sgtriton.blocks"):
            assert _outside(modules, ("sgtriton.blocks", "sgtriton.ops", "sgtriton.backends", "sgtriton.filters")) \
                == [], name


def test_config_imports_no_kernel_module(loaded):
    """Declaring a configuration needs neither torch nor Triton: ``sgtriton.config`` loads only the filter taps."""
    fresh = loaded["fresh:sgtriton.config"]
    assert not [m for m in fresh if m.split(".")[0] in ("torch", "triton")], fresh
    assert _outside(loaded["sgtriton.config"], ("sgtriton.config", "sgtriton.filters")) == []


def test_inspection_is_imported_by_no_other_module(loaded):
    """The compile gate imports the ops and no module imports it (the CLI and the tuner load it on use)."""
    for name, modules in loaded.items():
        if not name.startswith(("sgtriton.inspection", "fresh:")):
            assert not [m for m in modules if m.startswith("sgtriton.inspection")], name


def test_the_probe_sees_an_indirect_import(loaded):
    """The check is not vacuous: a module that reaches the graph through another one is seen."""
    assert "sgtriton.graph.synthesis" in loaded["sgtriton.generator"]
    assert "sgtriton.ops.modconv" in loaded["sgtriton.blocks.moddemod"]
