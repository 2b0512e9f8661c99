"""The block registry: block types by name, from entry points and from in-process registration.

Built-in block types and outside packages register the same way: a class in the
``sgtriton.blocks`` entry-point group (``name = "package.module:BlockClass"``). Entry points are
loaded once, on first use; a plugin that fails to import or breaks the contract is skipped with a
warning naming it, so one broken plugin never stops the rest. :func:`register_block` registers a
class from running code (a notebook, a test).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from sgtriton.blocks.base import IMPLEMENTATIONS, BlockType

ENTRY_POINT_GROUP = "sgtriton.blocks"
REQUIRED_METHODS = ("make_layer", "make_torgb")


class BlockRegistrationError(ValueError):
    """A block type cannot be registered (duplicate name or a missing part)."""


@dataclass(frozen=True)
class RegisteredBlock:
    """A registry entry: the block class and where it came from."""

    name: str
    cls: type[BlockType]
    source: str  # distribution name for entry points, the module for register_block

    @property
    def description(self) -> str:
        return self.cls.description

    @property
    def implementations(self) -> tuple[str, ...]:
        return tuple(self.cls.implementations)


_blocks: dict[str, RegisteredBlock] = {}
_entry_points_loaded = False


def validate_block_class(cls: Any, name: str) -> None:
    """Check the contract of :class:`~sgtriton.blocks.base.BlockType`; raise naming what is missing."""
    if not (inspect.isclass(cls) and issubclass(cls, BlockType)):
        raise BlockRegistrationError(f"block {name!r}: expected a subclass of sgtriton.blocks.base.BlockType, "
                                     f"got {cls!r}")
    if not isinstance(cls.name, str) or not cls.name:
        raise BlockRegistrationError(f"block {name!r}: missing required part 'name' (a non-empty str)")
    if cls.name != name:
        raise BlockRegistrationError(f"block {name!r}: class {cls.__name__}.name is {cls.name!r}; they must agree")
    if not isinstance(cls.description, str) or not cls.description:
        raise BlockRegistrationError(f"block {name!r}: missing required part 'description' (a non-empty str)")
    missing = [m for m in REQUIRED_METHODS
               if not callable(getattr(cls, m, None)) or getattr(getattr(cls, m), "__isabstractmethod__", False)]
    if missing:
        raise BlockRegistrationError(f"block {name!r}: missing required part(s) {missing} (methods)")
    impls = tuple(cls.implementations)
    if "reference" not in impls or not set(impls) <= set(IMPLEMENTATIONS):
        raise BlockRegistrationError(f"block {name!r}: implementations={impls!r}: expected 'reference' and "
                                     f"optionally others from {IMPLEMENTATIONS}")


def _add(name: str, cls: type[BlockType], source: str) -> None:
    validate_block_class(cls, name)
    if name in _blocks:
        other = _blocks[name]
        raise BlockRegistrationError(f"block {name!r} from {source} is already registered (from {other.source})")
    _blocks[name] = RegisteredBlock(name, cls, source)


def register_block(cls: type[BlockType]) -> type[BlockType]:
    """Class decorator: register ``cls`` under ``cls.name``. Duplicates and missing parts raise."""
    _load_entry_points()
    _add(getattr(cls, "name", ""), cls, cls.__module__)
    return cls


def unregister_block(name: str) -> None:
    """Remove a block registered in this process (tests, notebooks)."""
    _blocks.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        source = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
        try:
            cls = ep.load()
            _add(ep.name, cls, source)
        except Exception as exc:  # a broken plugin must not take the others down
            warnings.warn(f"sgtriton: skipping block plugin {ep.name!r} from {source!r}: "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)


def available_blocks() -> list[RegisteredBlock]:
    """Every registered block type, in name order."""
    _load_entry_points()
    return [_blocks[name] for name in sorted(_blocks)]


def get_block_class(name: str) -> type[BlockType]:
    """The class registered as ``name``; unknown names raise listing the known ones."""
    _load_entry_points()
    if name not in _blocks:
        raise ValueError(f"block={name!r}: no such block type; registered: {sorted(_blocks)}")
    return _blocks[name].cls


def create_block(name: str, block_kwargs: dict[str, Any] | None = None) -> BlockType:
    """An instance of block type ``name`` configured with ``block_kwargs``."""
    return get_block_class(name)(**(block_kwargs or {}))
