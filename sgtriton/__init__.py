"""sgtriton: StyleGAN generators compiled onto Triton kernels, proven against PyTorch references."""

from importlib import metadata as _metadata

from sgtriton.ops._runtime import configure_interpreter

# Must run before any kernel module is imported: Triton picks interpreter vs GPU at decoration.
configure_interpreter()

from sgtriton.checkpoints import load, save
from sgtriton.config import PRESETS, GeneratorConfig, MappingConfig, SynthesisConfig, make_config
from sgtriton.generator import Generator, build_generator
from sgtriton.registry import available_blocks, register_block

__version__ = _metadata.version("sgtriton")

__all__ = [
    "PRESETS",
    "Generator",
    "GeneratorConfig",
    "MappingConfig",
    "SynthesisConfig",
    "available_blocks",
    "build_generator",
    "load",
    "make_config",
    "register_block",
    "save",
]
