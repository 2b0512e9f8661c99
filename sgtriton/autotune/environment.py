"""What a tuning result depends on besides the shape: the GPU, the software, the kernel's source.

A tuned config is only trusted on the GPU model it was measured on (name and compute
capability), with the Triton and torch versions that compiled it, for the kernel source and
tuning space it was measured with. :class:`Environment` holds the first four;
:func:`source_hash` the last.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

from sgtriton.ops._runtime import SHARED_MEMORY_BY_CAPABILITY, kernel_source_hash


@dataclass(frozen=True)
class Environment:
    """The device and software a tuning result was measured with."""

    gpu: str
    capability: int
    triton: str
    torch: str

    @property
    def family(self) -> str:
        """GPU family of the shipped tables, e.g. ``'sm_90'``."""
        return f"sm_{self.capability}"

    @property
    def slug(self) -> str:
        """File-name form: ``'nvidia-h100-80gb-hbm3-sm90'``."""
        name = re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-") or "gpu"
        return f"{name}-sm{self.capability}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Environment | None:
        """The environment recorded in a file, or ``None`` if ``data`` is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["gpu"]), int(data["capability"]), str(data["triton"]), str(data["torch"]))
        except (KeyError, TypeError, ValueError):
            return None


def current_environment(device_index: int | None = None) -> Environment | None:
    """The environment of CUDA device ``device_index`` (default: current), or ``None`` without one.

    Under Triton's interpreter there is nothing to tune (only default configs run), so this is
    ``None`` there too.
    """
    import torch
    import triton

    from sgtriton.ops._runtime import interpreter_active

    if interpreter_active() or not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device() if device_index is None else device_index
    major, minor = torch.cuda.get_device_capability(index)
    return Environment(torch.cuda.get_device_name(index), major * 10 + minor, triton.__version__,
                       torch.__version__)


def shared_memory_limit(capability: int) -> int | None:
    """Bytes of shared memory one block may use on a GPU of ``capability`` (``None`` if unknown).

    Asks a present CUDA device of that capability, else :data:`SHARED_MEMORY_BY_CAPABILITY`.
    """
    import torch

    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            if major * 10 + minor == capability:
                props = torch.cuda.get_device_properties(index)
                limit = getattr(props, "shared_memory_per_block_optin", None)
                if limit:
                    return int(limit)
    return SHARED_MEMORY_BY_CAPABILITY.get(capability)


_SOURCE_HASHES: dict[tuple[str, int], str] = {}


def source_hash(spec: Any) -> str:
    """Hash of a kernel's source (with the jit functions it calls) and of its declared configs.

    Editing the kernel, a helper it calls or its tuning space changes the hash, so entries tuned
    for the old code are never used for the new one.
    """
    memo_key = (spec.name, id(spec.fn))
    cached = _SOURCE_HASHES.get(memo_key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    digest.update(kernel_source_hash(spec.fn).encode())
    digest.update(repr([str(c) for c in spec.configs]).encode())
    value = digest.hexdigest()[:16]
    _SOURCE_HASHES[memo_key] = value
    return value
