"""The persistent tuning cache: one JSON file per GPU under the user cache directory.

Location: ``$SGTRITON_CACHE_DIR/autotune/<gpu-slug>.json`` (default root ``$XDG_CACHE_HOME/sgtriton``,
else ``~/.cache/sgtriton``), for example ``~/.cache/sgtriton/autotune/nvidia-h100-80gb-hbm3-sm90.json``::

    {"schema": 1,
     "environment": {"gpu": "NVIDIA H100 80GB HBM3", "capability": 90, "triton": "3.9.0", "torch": "2.13.0"},
     "entries": {"<kernel>|<source hash>|<bucket>": {"config": {"meta": {...}, "num_warps": 4,
                 "num_stages": 2}, "best_ms": ..., "default_ms": ..., "timings": {...}, ...}}}

An entry is found by kernel name, the kernel's :func:`~sgtriton.autotune.environment.source_hash`
and the shape bucket (which carries the dtype); the file as a whole belongs to one
:class:`~sgtriton.autotune.environment.Environment`. A file written by other Triton or torch
versions is *stale*: reported once (a :class:`TuningCacheWarning`), ignored, and replaced by the
next write. A file that cannot be used at all -- unreadable, not UTF-8, not JSON, nested deeper
than :data:`MAX_JSON_NESTING`, numbers too long or not finite, a folder where the file should be --
is *corrupt*: reported once, renamed aside to ``<file>.corrupt-<time>`` (so it is kept for
inspection and can never wedge the cache) and rebuilt from scratch. Nothing here raises on a bad
file or an unwritable directory.

Writes are atomic (:func:`sgtriton.files.atomic_write`: a temporary file in the same directory,
fsync, ``os.replace``; permissions follow the umask) and merge under a lock file
(``<file>.lock``), so two processes tuning at once both keep their entries.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgtriton.autotune.environment import Environment
from sgtriton.files import atomic_write
from sgtriton.ops._runtime import KernelConfig, KernelSpec, default_cache_root

SCHEMA = 1
LOCK_TIMEOUT_S = 60.0
#: Deepest JSON nesting a tuning file may have (ours: 5).
MAX_JSON_NESTING = 16
#: Suffix of a corrupt tuning file set aside (followed by a UTC time stamp).
CORRUPT_SUFFIX = ".corrupt-"


class TuningCacheWarning(UserWarning):
    """A tuning cache or table file was stale, corrupt or unwritable (and was worked around)."""


_REPORTED: set[tuple[str, str]] = set()


def report_once(subject: str, kind: str, message: str) -> None:
    """Warn about ``subject`` (a path) once per process and ``kind`` of problem."""
    if (subject, kind) in _REPORTED:
        return
    _REPORTED.add((subject, kind))
    warnings.warn(message, TuningCacheWarning, stacklevel=3)


def autotune_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the tuning files under cache root ``root`` (default :func:`default_cache_root`)."""
    return (Path(root).expanduser() if root is not None else default_cache_root()) / "autotune"


# --------------------------------------------------------------------------------------------
# Configs and entries as JSON
# --------------------------------------------------------------------------------------------


def config_to_json(config: KernelConfig) -> dict[str, Any]:
    return {"meta": dict(config.meta), "num_warps": config.num_warps, "num_stages": config.num_stages}


def config_from_json(spec: KernelSpec, data: Any) -> KernelConfig | None:
    """The config of ``spec``'s declared space that ``data`` describes, or ``None`` if it is not one.

    Only declared configs are ever returned, so a file can never make a launcher run a config
    its kernel does not declare.
    """
    if not isinstance(data, dict) or not isinstance(data.get("meta"), dict):
        return None
    try:
        wanted = KernelConfig(dict(data["meta"]), int(data["num_warps"]), int(data["num_stages"]))
    except (KeyError, TypeError, ValueError):
        return None
    return next((c for c in spec.configs if c == wanted), None)


@dataclass
class CacheEntry:
    """One tuned (kernel, source, bucket): the winning config and what was measured."""

    kernel: str
    source_hash: str
    bucket: str
    config: dict[str, Any]
    best_ms: float | None = None
    default_ms: float | None = None
    #: ``str(config) -> median ms`` for every config tried (``None``: it failed to run).
    timings: dict[str, float | None] = field(default_factory=dict)
    tuning_s: float = 0.0
    tuned_at: str = ""

    @property
    def key(self) -> str:
        return entry_key(self.kernel, self.source_hash, self.bucket)

    @property
    def speedup(self) -> float | None:
        if self.best_ms and self.default_ms:
            return self.default_ms / self.best_ms
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> CacheEntry | None:
        """Parse one entry; ``None`` if it is malformed."""
        if not isinstance(data, dict):
            return None
        try:
            entry = cls(
                kernel=str(data["kernel"]), source_hash=str(data["source_hash"]), bucket=str(data["bucket"]),
                config=dict(data["config"]),
                best_ms=_optional_float(data.get("best_ms")),
                default_ms=_optional_float(data.get("default_ms")),
                timings={str(k): _optional_float(v) for k, v in dict(data.get("timings", {})).items()},
                tuning_s=float(data.get("tuning_s", 0.0)), tuned_at=str(data.get("tuned_at", "")),
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        return entry if isinstance(entry.config.get("meta"), dict) else None


def entry_key(kernel: str, source_hash: str, bucket: str) -> str:
    return f"{kernel}|{source_hash}|{bucket}"


def _optional_float(value: Any) -> float | None:
    """``None`` or a finite float (anything else makes the entry malformed)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{number} is not finite")
    return number


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


@dataclass
class CacheFile:
    """What a tuning file holds: its environment, its valid entries, and what was wrong with it."""

    path: Path
    environment: Environment | None
    entries: dict[str, CacheEntry]
    problem: str | None = None  # None, or why the file was not usable (corrupt / wrong schema)
    skipped: int = 0  # malformed entries dropped from an otherwise valid file


def read_cache_file(path: Path) -> CacheFile:
    """Read one tuning file without raising; a missing file is an empty, problem-free one."""
    try:
        return _parse_cache_file(path)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError, MemoryError) as exc:
        return CacheFile(path, None, {}, problem=f"is not a valid tuning table ({type(exc).__name__}: "
                                                 f"{str(exc)[:120]})")


def _parse_cache_file(path: Path) -> CacheFile:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return CacheFile(path, None, {})
    except OSError as exc:  # a folder named *.json, no permission ...
        return CacheFile(path, None, {}, problem=f"cannot be read ({exc.strerror or exc})")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        return CacheFile(path, None, {}, problem=f"is not UTF-8 text ({exc})")
    except RecursionError:
        return CacheFile(path, None, {}, problem="is nested too deeply to be a tuning table")
    except ValueError as exc:  # JSONDecodeError, integers over Python's digit limit, NaN / Infinity
        return CacheFile(path, None, {}, problem=f"is not valid JSON ({str(exc)[:120]})")
    if _depth(data) > MAX_JSON_NESTING:
        return CacheFile(path, None, {}, problem=f"nests more than {MAX_JSON_NESTING} levels deep")
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        return CacheFile(path, None, {}, problem="does not hold a tuning table (no 'entries' object)")
    if data.get("schema") != SCHEMA:
        return CacheFile(path, None, {}, problem=f"has schema {str(data.get('schema'))[:40]}, expected {SCHEMA}")
    environment = Environment.from_dict(data.get("environment"))
    if environment is None:
        return CacheFile(path, None, {}, problem="has no valid 'environment' record")
    entries: dict[str, CacheEntry] = {}
    skipped = 0
    for raw_entry in data["entries"].values():
        entry = CacheEntry.from_json(raw_entry)
        if entry is None:
            skipped += 1
        else:
            entries[entry.key] = entry
    return CacheFile(path, environment, entries, skipped=skipped)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (iterative: the parser already bounded it by the recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def set_aside(path: Path) -> Path | None:
    """Rename a corrupt tuning file (or folder) to ``<name>.corrupt-<UTC time>``; ``None`` if it is gone."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    return aside


def cache_files(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every tuning file under cache root ``root``, sorted."""
    folder = autotune_dir(root)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def clear_cache(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Delete every tuning file (with lock, temporary and set-aside files, and any folder wrongly
    named like one) under ``root``; return the tuning files removed."""
    removed: list[Path] = []
    folder = autotune_dir(root)
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        name = path.name
        if not (name.endswith((".json", ".json.lock", ".json.part", ".tmp")) or f".json{CORRUPT_SUFFIX}" in name):
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            if name.endswith(".json"):
                removed.append(path)
    return removed


# --------------------------------------------------------------------------------------------
# The cache of one environment
# --------------------------------------------------------------------------------------------


class TuningCache:
    """The tuning entries of one :class:`Environment`, backed by one JSON file.

    The file is read on first use and again by every :meth:`store` (under the lock, so entries
    other processes wrote meanwhile are kept). :attr:`generation` increases whenever the entries
    held in memory change, so selectors can drop what they memoised.
    """

    def __init__(self, environment: Environment, root: str | os.PathLike[str] | None = None) -> None:
        self.environment = environment
        self.path = autotune_dir(root) / f"{environment.slug}.json"
        self.generation = 0
        self._entries: dict[str, CacheEntry] | None = None

    # -- reading ---------------------------------------------------------------------------

    def _load(self) -> dict[str, CacheEntry]:
        if self._entries is None:
            self._entries = self._usable_entries(read_cache_file(self.path))
            self.generation += 1
        return self._entries

    def _usable_entries(self, file: CacheFile, locked: bool = False) -> dict[str, CacheEntry]:
        """The entries of ``file`` that belong to this environment (reporting a bad file once).

        A corrupt file is set aside (under the lock, after reading it again, so a good file another
        process has just written is never moved) and the cache starts empty.
        """
        if file.problem is not None:
            aside = None
            try:
                if locked:
                    aside = set_aside(self.path) if read_cache_file(self.path).problem else None
                else:
                    with _file_lock(self.path.with_name(self.path.name + ".lock")):
                        aside = set_aside(self.path) if read_cache_file(self.path).problem else None
            except OSError:
                pass  # reported below; the next store tries again
            where = f"moved it to {aside.name}" if aside is not None else "ignoring it"
            report_once(str(self.path), "corrupt", f"sgtriton autotune cache {self.path} {file.problem}; "
                        f"{where} and ignoring it (a fresh file is written by the next tuning run)")
            return {}
        if file.environment is not None and file.environment != self.environment:
            old, new = file.environment, self.environment
            report_once(str(self.path), "stale", f"sgtriton autotune cache {self.path} was tuned with "
                        f"triton {old.triton} / torch {old.torch} on {old.gpu}, not triton {new.triton} / "
                        f"torch {new.torch} on {new.gpu}; ignoring its {len(file.entries)} entries "
                        f"(they will be re-tuned and the file rewritten)")
            return {}
        if file.skipped:
            report_once(str(self.path), "entries", f"sgtriton autotune cache {self.path}: ignoring "
                        f"{file.skipped} malformed entries")
        return file.entries

    def lookup(self, kernel: str, source_hash: str, bucket: str) -> CacheEntry | None:
        """The entry tuned for this kernel source and bucket, or ``None``."""
        return self._load().get(entry_key(kernel, source_hash, bucket))

    def entries(self) -> list[CacheEntry]:
        return list(self._load().values())

    def reload(self) -> None:
        """Forget what was read, so the next lookup reads the file again."""
        self._entries = None

    # -- writing ---------------------------------------------------------------------------

    def store(self, entries: Iterable[CacheEntry]) -> bool:
        """Merge ``entries`` into the file (atomically, under the lock); return whether it was written.

        Entries of the same kernel with another source hash are dropped: their code is gone. On a
        write failure the entries are still kept in memory for this process, and the failure is
        reported once.
        """
        new = list(entries)
        if not new:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _file_lock(self.path.with_name(self.path.name + ".lock")):
                merged = self._usable_entries(read_cache_file(self.path), locked=True)
                merged = _merge(merged, new)
                _atomic_write_json(self.path, {
                    "schema": SCHEMA,
                    "environment": self.environment.as_dict(),
                    "entries": {key: entry.to_json() for key, entry in sorted(merged.items())},
                })
            written = True
        except OSError as exc:
            report_once(str(self.path), "write", f"sgtriton autotune cache {self.path} could not be written "
                        f"({exc}); tuning results are kept for this process only")
            merged = _merge(dict(self._entries or {}), new)
            written = False
        self._entries = merged
        self.generation += 1
        return written


def _merge(existing: dict[str, CacheEntry], new: list[CacheEntry]) -> dict[str, CacheEntry]:
    live_hash = {e.kernel: e.source_hash for e in new}
    merged = {k: e for k, e in existing.items() if live_hash.get(e.kernel, e.source_hash) == e.source_hash}
    for entry in new:
        merged[entry.key] = entry
    return merged


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An inter-process lock on ``path`` (``filelock``, a torch dependency; else ``fcntl``).

    A lock that cannot be taken within :data:`LOCK_TIMEOUT_S` is reported and skipped: the write
    is still atomic, it may only lose an entry another process wrote at the same instant.
    """
    release = _acquire_lock(path)
    try:
        yield
    finally:
        if release is not None:
            release()


def _acquire_lock(path: Path) -> Callable[[], None] | None:
    try:
        import filelock
    except ImportError:  # pragma: no cover - torch depends on filelock
        return _acquire_fcntl_lock(path)
    lock = filelock.FileLock(str(path), timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except filelock.Timeout:
        _report_lock_timeout(path)
        return None
    return lock.release


def _acquire_fcntl_lock(path: Path) -> Callable[[], None] | None:  # pragma: no cover - fallback
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(path, "a+")  # closed by the returned release function
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                _report_lock_timeout(path)
                return None
            time.sleep(0.01)

    def release() -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()

    return release


def _report_lock_timeout(path: Path) -> None:
    report_once(str(path), "lock", f"sgtriton autotune: could not lock {path} within {LOCK_TIMEOUT_S:.0f} s; "
                f"writing without the lock")
