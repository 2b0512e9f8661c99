"""sgtriton: StyleGAN generators compiled onto Triton kernels, proven against PyTorch references.

The public names are imported on first use (module ``__getattr__``), so ``import sgtriton`` and
the command line's ``--help`` / ``--version`` do not pay for importing torch and Triton. The
interpreter switch that must precede every kernel module lives in :mod:`sgtriton.ops`, which
every kernel module imports first.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it.
_EXPORTS = {
    "PRESETS": "sgtriton.config",
    "GeneratorConfig": "sgtriton.config",
    "MappingConfig": "sgtriton.config",
    "SynthesisConfig": "sgtriton.config",
    "make_config": "sgtriton.config",
    "Generator": "sgtriton.generator",
    "build_generator": "sgtriton.generator",
    "load": "sgtriton.checkpoints",
    "save": "sgtriton.checkpoints",
    "CudaGraphSynthesis": "sgtriton.cuda_graph",
    "available_blocks": "sgtriton.registry",
    "register_block": "sgtriton.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib import metadata

        value = metadata.version("sgtriton")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'sgtriton' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "__version__"])
