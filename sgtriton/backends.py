"""Backends: which implementation runs each node.

* ``reference`` -- the PyTorch reference ops, any device, float64-capable.
* ``triton``    -- the Triton kernels; on CUDA compiled, elsewhere under Triton's interpreter.
* ``auto``      -- ``triton`` for CUDA tensors when the block type provides it, else ``reference``.

``SGTRITON_BACKEND`` sets the default for generators built without an explicit ``backend``.
"""

from __future__ import annotations

import os

import torch

BACKENDS = ("reference", "triton", "auto")
BACKEND_ENV = "SGTRITON_BACKEND"
#: Block implementations -> the ``impl`` argument of the ops (NVlabs' ``impl='ref'`` convention).
OP_IMPL = {"reference": "ref", "triton": "triton"}


def op_impl(impl: str) -> str:
    """``'reference'`` -> ``'ref'``, ``'triton'`` -> ``'triton'`` (the ops' own vocabulary)."""
    if impl not in OP_IMPL:
        raise ValueError(f"impl={impl!r}: expected one of {tuple(OP_IMPL)}")
    return OP_IMPL[impl]


def default_device() -> str:
    """``'cuda'`` when a CUDA device is present, else ``'cpu'`` (the CLI's default ``--device``)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_backend() -> str:
    """``$SGTRITON_BACKEND`` or ``'auto'``; an invalid value raises naming the variable."""
    value = os.environ.get(BACKEND_ENV, "auto")
    return check_backend(value, BACKEND_ENV)


def check_backend(backend: str, name: str = "backend") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"{name}={backend!r}: expected one of {BACKENDS}")
    return backend


def resolve_impl(backend: str, device: torch.device, implementations: tuple[str, ...]) -> str:
    """The implementation (``'reference'`` or ``'triton'``) a node runs for tensors on ``device``."""
    if backend == "reference":
        return "reference"
    if backend == "triton":
        if "triton" not in implementations:
            raise ValueError(f"backend='triton': this block type provides only {implementations}")
        return "triton"
    return "triton" if device.type == "cuda" and "triton" in implementations else "reference"
