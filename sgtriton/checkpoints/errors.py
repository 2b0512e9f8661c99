"""The two errors every checkpoint reader raises.

:class:`CheckpointError` covers files that cannot become a generator: unknown or corrupt
formats, truncated data, a missing ``G_ema``, shapes that contradict the recovered
configuration, networks sgtriton does not implement. :class:`UnsafePickleError` is the subset
raised when a pickle names a global outside the allow-list; nothing from that pickle has run.
"""

from __future__ import annotations

import pickle


class CheckpointError(ValueError):
    """A checkpoint could not be read into a generator; the message says why and where."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list and was refused before anything ran."""

    def __init__(self, global_name: str, context: str) -> None:
        self.global_name = global_name
        super().__init__(
            f"refusing to load {context}: it references the global {global_name!r}, which is not on "
            f"the allow-list of inert names (nothing from this file has been executed)"
        )
