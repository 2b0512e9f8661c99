"""``sgtriton autotune``: explains itself without a GPU, shows and clears the cache, tunes on a (fake) GPU."""

import json

import pytest
from autotune_fakes import FAKE_ENV, FakeBenchmarker, ToyGenerator
from click.testing import CliRunner

from sgtriton.autotune import commands, tuner
from sgtriton.autotune.cache import CacheEntry, TuningCache, cache_files
from sgtriton.autotune.commands import autotune_command
from sgtriton.autotune.pruning import no_pruning


def run(*args):
    return CliRunner().invoke(autotune_command, list(args), catch_exceptions=False)


def test_without_a_gpu_it_explains_and_succeeds(isolated_autotune):
    result = run("--preset", "stylegan2-f", "--resolution", "64", "--batch", "1")
    assert result.exit_code == 0, result.output
    assert "no CUDA GPU" in result.output and "nothing to benchmark" in result.output
    assert "default config" in result.output
    assert cache_files() == []


def test_bad_arguments_name_the_option():
    assert "--batch='1,x'" in run("--preset", "stylegan2-f", "--batch", "1,x").output
    assert "--dtype='int8'" in run("--preset", "stylegan2-f", "--dtype", "int8").output
    assert "--network PATH or --preset" in run().output
    assert run("--preset", "stylegan2-f", "--resolution", "100").exit_code == 2
    assert "--export-table: no CUDA GPU" in run("--export-table", "t.json").output


def test_show_and_clear(isolated_autotune):
    assert "is empty" in run("--show").output
    TuningCache(FAKE_ENV).store([CacheEntry("modconv2d", "h1", "dtype=fp16,batch=8",
                                            {"meta": {"BLOCK": 128}, "num_warps": 8, "num_stages": 3},
                                            best_ms=0.25, default_ms=0.5, tuned_at="2026-01-01T00:00:00")])
    shown = run("--show").output
    assert "Fake GPU 9000 (sm_90), triton 3.9.0" in shown and "1 entries" in shown
    row = next(line for line in shown.splitlines() if "modconv2d" in line).split()
    assert row == ["modconv2d", "dtype=fp16,batch=8", "BLOCK=128,w8,s3", "0.2500", "0.5000", "2.00x",
                   "2026-01-01T00:00:00"]
    (isolated_autotune / "autotune" / "broken.json").write_text("{")
    assert "broken.json: unusable -- is not valid JSON" in run("--show").output
    cleared = run("--clear")
    assert "removed 2 tuning file(s)" in cleared.output and cache_files() == []


@pytest.fixture
def fake_gpu(monkeypatch, gpu_like, fake_spec):
    """The command's GPU path, with a fake device, a toy generator and fixed timings."""
    monkeypatch.setattr(commands, "current_environment", lambda *a: FAKE_ENV)
    monkeypatch.setattr(tuner, "current_environment", lambda *a: FAKE_ENV)
    monkeypatch.setattr(tuner, "gpu_benchmarker", FakeBenchmarker())
    monkeypatch.setattr(tuner, "default_pruner", lambda: no_pruning)
    monkeypatch.setattr(commands, "_open_generator", lambda *a: ToyGenerator(fake_spec).to("cpu"))
    return fake_spec


def test_on_a_gpu_it_tunes_prints_a_summary_and_exports_a_table(fake_gpu, tmp_path):
    result = run("--preset", "stylegan2-f", "--resolution", "64", "--batch", "1,8", "--device", "cuda",
                 "--export-table", str(tmp_path / "sm_90.json"))
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.startswith(fake_gpu.name)]
    assert [row[1] for row in rows] == ["dtype=fp32,batch=1,cin=8", "dtype=fp32,batch=8,cin=8"]
    assert all(row[2] == "BLOCK=128,w4,s1" and row[3] == "1.0000" and row[4] == "3.00x" for row in rows)
    assert "cache:" in result.output
    table = json.loads((tmp_path / "sm_90.json").read_text())
    assert table["measured"] is True and table["device"] == "Fake GPU 9000" and table["family"] == "sm_90"
    assert sorted(table["entries"]) == [f"{fake_gpu.name}|dtype=fp32,batch=1,cin=8",
                                        f"{fake_gpu.name}|dtype=fp32,batch=8,cin=8"]
    again = run("--preset", "stylegan2-f", "--resolution", "64", "--batch", "1", "--device", "cuda")
    assert "cache (tuned" in again.output
