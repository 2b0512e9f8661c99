"""The output folder's manifest: which file holds which sample, its checksum, and the job that made it.

Layout of an output folder::

    seed0000.png ...                 the images (or proj00.png ... for projected ws)
    manifest.jsonl                   the whole job, written by rank 0 when the job ends
    manifest.parts/header.json       the job's header, written before any image
    manifest.parts/batch-00000042.jsonl   one part per finished batch, written by the rank that made it

``manifest.jsonl`` is JSON lines: a header line ``{"manifest": 1, "network": {...}, "options": {...}}``
then one line per image, in job order: ``{"seed": 7, "file": "seed0007.png", "sha256": "...",
"shape": [H, W, C]}`` (for projected ws ``seed`` is the row index of the w). The parts are the
journal while the job runs: each is written atomically once every file of its batch is complete, so a
crash anywhere leaves whole parts only, and :func:`read_manifest` reads ``manifest.jsonl`` and the parts
together (a part overrides an older line for the same seed). When the job ends, the parts are folded
into ``manifest.jsonl`` and removed.

The network's identity is ``sha256`` over its configuration (sorted JSON) and every state-dict tensor
(name, dtype, shape, bytes): the same weights give the same identity whatever file format they came
from. ``options`` holds every setting that changes a file's bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sgtriton.files import atomic_write

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"
PARTS_NAME = "manifest.parts"
HEADER_NAME = "header.json"


class ManifestError(ValueError):
    """A manifest that cannot be read, or that belongs to a different job."""


def network_identity(G) -> dict[str, Any]:
    """``{"sha256": ..., "config": {...}}`` for generator ``G`` (see the module docstring)."""
    import torch

    digest = hashlib.sha256()
    config = G.config.to_dict()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(G.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"\n{name}:{t.dtype}:{list(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"sha256": digest.hexdigest(), "config": config}


def make_header(network: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    # A JSON round trip makes the header compare equal to one read back from disk (tuples -> lists).
    return json.loads(json.dumps({"manifest": MANIFEST_VERSION, "network": network, "options": options},
                                 sort_keys=True))


def entry(seed: int, file: str, sha256: str, shape: Iterable[int]) -> dict[str, Any]:
    return {"seed": int(seed), "file": file, "sha256": sha256, "shape": [int(n) for n in shape]}


def _lines(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


def _parts_folder(outdir: Path) -> Path:
    """``outdir/manifest.parts`` as a real folder: a planted link in its place is removed, not followed."""
    folder = outdir / PARTS_NAME
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):
        folder.unlink()
    folder.mkdir(exist_ok=True)
    return folder


def start_job(outdir: Path, header: dict[str, Any], fresh: bool, file_prefix: str = "") -> None:
    """Rank 0, before any image: remove the temporary files a killed run left behind (``atomic_write``'s
    ``.<name>.*.tmp`` for names starting with ``file_prefix``, the manifest and its parts); for a fresh
    job remove the previous job's manifest and parts; then record ``header`` in the parts folder."""
    outdir = Path(outdir)
    stale = [*outdir.glob(f".{file_prefix}*.tmp"), *outdir.glob(f".{MANIFEST_NAME}.*.tmp"),
             *(outdir / PARTS_NAME).glob(".*.tmp")] if file_prefix else []
    for path in stale:
        path.unlink(missing_ok=True)
    if fresh:
        remove_parts(outdir)
        (outdir / MANIFEST_NAME).unlink(missing_ok=True)
    atomic_write(_parts_folder(outdir) / HEADER_NAME, json.dumps(header, sort_keys=True) + "\n")


def write_part(outdir: Path, batch_index: int, entries: list[dict[str, Any]]) -> None:
    """The journal record of one finished batch (every one of its files is complete)."""
    atomic_write(Path(outdir) / PARTS_NAME / f"batch-{batch_index:08d}.jsonl", _lines(entries))


def finish_job(outdir: Path, header: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """Rank 0, after every rank is done: the whole manifest, then the parts are dropped."""
    atomic_write(Path(outdir) / MANIFEST_NAME, _lines([header, *entries]))
    remove_parts(Path(outdir))


def remove_parts(outdir: Path) -> None:
    folder = Path(outdir) / PARTS_NAME
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.is_dir():
        shutil.rmtree(folder)


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}:{number}: expected a JSON object per line ({exc})") from None
        if not isinstance(record, dict):
            raise ManifestError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def read_manifest(outdir: Path) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    """The recorded header (``None`` when the folder has no manifest) and ``{seed: entry}``."""
    outdir = Path(outdir)
    headers: list[tuple[Path, dict[str, Any]]] = []
    entries: dict[int, dict[str, Any]] = {}
    whole = outdir / MANIFEST_NAME
    if whole.is_file():
        records = _read_json_lines(whole)
        if records:
            headers.append((whole, records[0]))
            entries.update({r["seed"]: r for r in records[1:] if isinstance(r.get("seed"), int)})
    parts = outdir / PARTS_NAME
    if parts.is_dir() and not parts.is_symlink():
        header_path = parts / HEADER_NAME
        if header_path.is_file():
            headers.append((header_path, _read_json_lines(header_path)[0]))
        for part in sorted(parts.glob("batch-*.jsonl")):
            entries.update({r["seed"]: r for r in _read_json_lines(part) if isinstance(r.get("seed"), int)})
    if not headers:
        return None, {}
    (first_path, header), *others = headers
    for path, other in others:
        if other != header:
            raise ManifestError(f"{first_path} and {path} describe different jobs; remove {outdir / PARTS_NAME} "
                                f"or start over without --resume")
    if header.get("manifest") != MANIFEST_VERSION:
        raise ManifestError(f"{first_path}: manifest version {header.get('manifest')!r}, expected {MANIFEST_VERSION}")
    return header, entries


def _differences(recorded: dict[str, Any], wanted: dict[str, Any], prefix: str) -> list[str]:
    lines = []
    for key in sorted(set(recorded) | set(wanted)):
        a, b = recorded.get(key), wanted.get(key)
        if a != b:
            if key == "config":
                a, b = "(another architecture)", "(this network's)"
            lines.append(f"{prefix}{key}: recorded {a!r}, this run {b!r}")
    return lines


def check_same_job(outdir: Path, recorded: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse to resume a job with different options or a different network, naming each difference."""
    lines = _differences(recorded.get("network", {}), wanted["network"], "network ")
    lines += _differences(recorded.get("options", {}), wanted["options"], "")
    if lines:
        raise ManifestError(f"--resume: {outdir} holds a different job:\n  " + "\n  ".join(lines)
                            + "\nrerun with the recorded options, or without --resume to start over, "
                              "or use another --outdir")


def file_matches(outdir: Path, recorded: dict[str, Any] | None, file_name: str) -> bool:
    """Whether ``outdir/file_name`` is a regular file (not a link) whose bytes hash to the recorded sha256."""
    if recorded is None or recorded.get("file") != file_name:
        return False
    path = Path(outdir) / file_name
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        data = path.read_bytes()
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == recorded.get("sha256")
