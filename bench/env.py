"""Provenance of a benchmark run: device, versions, commit, date. No number without it."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str]) -> str | None:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=20, cwd=REPO_ROOT, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def git_commit() -> tuple[str | None, bool | None]:
    """``(HEAD commit, whether the work tree has uncommitted changes)`` (read-only git calls)."""
    commit = _run(["git", "rev-parse", "HEAD"])
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return commit, (bool(status) if status is not None else None)


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    """Everything needed to reproduce or discount a result."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    commit, dirty = git_commit()
    now = datetime.datetime.now(datetime.timezone.utc)
    info: dict[str, Any] = {
        "date": now.date().isoformat(),
        "timestamp": now.isoformat(timespec="seconds"),
        "device_type": device.type,
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": triton_version,
        "git_commit": commit,
        "git_dirty": dirty,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            sm_count=props.multi_processor_count,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            driver=_run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        )
    else:
        info.update(device_name=info["cpu_model"], compute_capability=None, cuda=None, driver=None)
    return info


def device_slug(info: dict[str, Any]) -> str:
    """A file-name-safe device name: ``nvidia-h100-80gb-hbm3``, or for a CPU with its core and torch
    thread counts, ``intel-xeon-processor-2cores-t2``."""
    name = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$", "", info["device_name"], flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if info["device_type"] != "cuda":
        slug += f"-{info['cpu_cores']}cores-t{info['torch_threads']}"
    return slug
