"""The two errors every checkpoint reader raises, and how a bad value is quoted in them.

:class:`CheckpointError` covers files that cannot become a generator: unknown or corrupt
formats, truncated data, a missing ``G_ema``, shapes that contradict the recovered
configuration, networks sgtriton does not implement, budgets a file exceeds. Its message names
the file, the part (key, tensor, configuration field) and what was expected.
:class:`UnsafePickleError` is the subset raised when a pickle names a global outside the
allow-list; nothing from that pickle has run.
"""

from __future__ import annotations

import pickle
from typing import Any

#: Longest quotation of a value in an error message.
QUOTE_LIMIT = 80


class CheckpointError(ValueError):
    """A checkpoint could not be read into a generator; the message says why and where."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list and was refused before anything ran."""

    def __init__(self, global_name: str, context: str) -> None:
        self.global_name = global_name
        super().__init__(
            f"refusing to load {context}: it references the global {quote(global_name)}, which is not on "
            f"the allow-list of inert names (nothing from this file has been executed)"
        )


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters, safe for any value a hostile file can hold.

    Huge integers (``repr`` refuses more than 4300 digits), deep or cyclic containers and objects
    whose ``repr`` fails are described instead of printed.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    if isinstance(value, (str, bytes, bytearray)) and len(value) > 4 * limit:
        value = value[: 4 * limit]
    try:
        text = repr(value)
    except (RecursionError, ValueError, TypeError, AttributeError, RuntimeError, OverflowError, MemoryError):
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def in_source(exc: CheckpointError, source: str) -> CheckpointError:
    """``exc`` with ``source`` (the file) at the front of its message, unless it already names it."""
    message = str(exc)
    if source in message or isinstance(exc, UnsafePickleError):
        return exc
    wrapped = CheckpointError(f"{source}: {message}")
    wrapped.__cause__ = exc.__cause__
    return wrapped
