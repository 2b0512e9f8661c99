"""Shipped tuning tables: package data, one JSON file per GPU family (``sm_80.json``, ``sm_90.json``).

A table is what ``sgtriton autotune --export-table`` writes from a GPU's cache: the tuned config
per ``"<kernel>|<bucket>"``, the device it was measured on, the versions and the date::

    {"schema": 1, "family": "sm_90", "measured": true, "device": "NVIDIA H100 80GB HBM3",
     "triton": "3.9.0", "torch": "2.13.0", "date": "2026-05-01", "note": "...",
     "entries": {"bias_act|dtype=fp16,...": {"config": {...}, "best_ms": ..., "default_ms": ...}}}

Tables are used when the user's cache has no entry (policies ``off`` and ``cached``). Unlike
cache entries they are not tied to the kernel's source hash -- a table is a good starting point
that survives small kernel edits -- but a config is only used while it is still in the kernel's
declared space. A table with ``"measured": false`` is a placeholder and is never used.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import re
from importlib import resources
from typing import Any

from sgtriton.autotune.cache import SCHEMA, CacheEntry, config_from_json, report_once
from sgtriton.autotune.environment import Environment
from sgtriton.ops._runtime import KernelConfig, KernelSpec

_FAMILY = re.compile(r"^sm_\d+$")


def table_key(kernel: str, bucket: str) -> str:
    return f"{kernel}|{bucket}"


@functools.cache
def load_table(family: str) -> dict[str, Any] | None:
    """The shipped table of GPU ``family`` (``'sm_90'``) as parsed JSON, or ``None`` if none ships.

    A malformed table is reported once and treated as absent.
    """
    if not _FAMILY.match(family):
        return None
    resource = resources.files(__name__) / f"{family}.json"
    try:
        text = resource.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        report_once(str(resource), "corrupt", f"sgtriton: shipped tuning table {family}.json is not valid "
                    f"JSON ({exc}); ignoring it")
        return None
    valid = isinstance(data, dict) and data.get("schema") == SCHEMA and isinstance(data.get("entries"), dict)
    if not valid:
        report_once(str(resource), "corrupt", f"sgtriton: shipped tuning table {family}.json does not have "
                    f"schema {SCHEMA} with an 'entries' object; ignoring it")
        return None
    return data


def table_config(spec: KernelSpec, bucket: str, family: str) -> KernelConfig | None:
    """The config the ``family`` table gives ``spec`` for ``bucket`` (``None``: no measured entry)."""
    table = load_table(family)
    if table is None or table.get("measured") is not True:
        return None
    entry = table["entries"].get(table_key(spec.name, bucket))
    if not isinstance(entry, dict):
        return None
    return config_from_json(spec, entry.get("config"))


def table_from_cache(entries: list[CacheEntry], environment: Environment, date: str | None = None,
                     note: str = "") -> dict[str, Any]:
    """A shippable table (JSON-ready) from the cache entries measured on ``environment``."""
    return {
        "schema": SCHEMA,
        "family": environment.family,
        "measured": True,
        "note": note or f"tuned with sgtriton autotune on {environment.gpu}",
        "device": environment.gpu,
        "triton": environment.triton,
        "torch": environment.torch,
        "date": date or _dt.date.today().isoformat(),
        "entries": {
            table_key(e.kernel, e.bucket): {
                "config": e.config, "best_ms": e.best_ms, "default_ms": e.default_ms,
                "source_hash": e.source_hash,
            }
            for e in sorted(entries, key=lambda e: (e.kernel, e.bucket))
        },
    }
