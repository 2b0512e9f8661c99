"""Two gloo ranks on the CPU under ``torchrun --standalone``: every file byte-identical to a single
process, the manifest too; resume after deleting files and after killing a rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from generation_helpers import file_digests, run_cli, torchrun, torchrun_command, torchrun_env

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists() or sys.platform != "linux",
                                reason="finding a rank's process to kill reads /proc (Linux)")

HERE = Path(__file__).parent


def generate_args(network, outdir, *extra):
    return ["generate", "--network", network, "--seeds", "0-23", "--batch-size", 4, "--outdir", outdir, *extra]


def test_two_ranks_write_the_single_process_files_and_resume_restores_exactly_the_damaged_ones(
        small_network, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert run_cli(generate_args(small_network, single, "--no-grid")).exit_code == 0
    log = torchrun(generate_args(small_network, sharded))
    assert "wrote 24 image(s)" in log and "on 2 ranks" in log, log
    expected = file_digests(single)
    assert len(expected) == 24 and file_digests(sharded) == expected
    assert (sharded / "manifest.jsonl").read_bytes() == (single / "manifest.jsonl").read_bytes()
    assert sorted(p.name for p in sharded.iterdir()) == sorted(p.name for p in single.iterdir())

    times = {p.name: p.stat().st_mtime_ns for p in sharded.glob("seed*")}
    damaged = {"seed0002.png", "seed0013.png", "seed0014.png", "seed0023.png"}
    (sharded / "seed0002.png").unlink()
    (sharded / "seed0013.png").unlink()
    (sharded / "seed0014.png").write_bytes((sharded / "seed0014.png").read_bytes()[:100])
    (sharded / "seed0023.png").write_bytes(b"")
    log = torchrun(generate_args(small_network, sharded, "--resume"))
    assert "wrote 4 image(s)" in log and "kept 20 verified" in log, log
    assert file_digests(sharded) == expected
    assert (sharded / "manifest.jsonl").read_bytes() == (single / "manifest.jsonl").read_bytes()
    changed = {p.name for p in sharded.glob("seed*") if p.stat().st_mtime_ns != times[p.name]}
    assert changed == damaged


def test_class_trunc_random_noise_and_projected_ws_shard_bit_identically(tmp_path):
    from torchrun_jobs import JOBS, run_job

    torchrun([str(HERE / "torchrun_jobs.py"), tmp_path / "sharded"], module=False)
    for job in JOBS:
        run_job(job, tmp_path / "single")
        expected = file_digests(tmp_path / "single" / job, "*.*")
        assert len(expected) >= 8, job
        assert file_digests(tmp_path / "sharded" / job, "*.*") == expected, job


def _rank_processes(root: int) -> dict[int, int]:
    """``{rank: pid}`` of the processes below ``root`` that torchrun started (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    ranks, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
        except OSError:
            env = {}
        if "RANK" in env and "LOCAL_RANK" in env:
            ranks[int(env["RANK"])] = pid
        todo += children.get(pid, [])
    return ranks


def test_a_killed_rank_loses_only_unfinished_batches_and_resume_completes_the_job(small_network, tmp_path):
    out = tmp_path / "killed"
    args = ["generate", "--network", small_network, "--seeds", "0-59", "--batch-size", 2, "--outdir", out]
    job = subprocess.Popen(torchrun_command(args), env=torchrun_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    parts = out / "manifest.parts"
    deadline = time.monotonic() + 180
    ranks: dict[int, int] = {}
    while len(ranks) < 2 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        ranks = _rank_processes(job.pid)
    # Kill rank 1 about half-way through its 15 batches (found beforehand, so the kill is immediate).
    while len(list(parts.glob("batch-*.jsonl"))) < 14 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert job.poll() is None and 1 in ranks, "the job ended before a rank could be killed"
    os.kill(ranks[1], signal.SIGKILL)
    log = job.communicate(timeout=120)[0]
    assert job.returncode != 0 and not (out / "manifest.jsonl").exists(), log

    from sgtriton.generation import manifest

    _, recorded = manifest.read_manifest(out)
    assert 28 <= len(recorded) < 60
    assert all(manifest.file_matches(out, e, e["file"]) for e in recorded.values())  # parts only name whole files
    kept_times = {e["file"]: (out / e["file"]).stat().st_mtime_ns for e in recorded.values()}
    # Resume in one process: the split of the job over ranks is not part of what is resumed.
    result = run_cli([*args, "--resume", "--no-grid"])
    assert result.exit_code == 0, result.output
    assert f"wrote {60 - len(recorded)} image(s)" in result.output and f"kept {len(recorded)}" in result.output
    _, final = manifest.read_manifest(out)
    assert sorted(final) == list(range(60)) and not parts.exists()
    assert all(manifest.file_matches(out, e, e["file"]) for e in final.values())
    assert {f: (out / f).stat().st_mtime_ns for f in kept_times} == kept_times
    # Every file equals an uninterrupted run's (seeds 0-7 are the first 4 batches of both jobs).
    reference = tmp_path / "reference"
    assert run_cli(["generate", "--network", small_network, "--seeds", "0-7", "--batch-size", 2, "--no-grid",
                    "--outdir", reference]).exit_code == 0
    expected = file_digests(reference)
    assert {name: digest for name, digest in file_digests(out).items() if name in expected} == expected
