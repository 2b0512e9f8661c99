"""The persistent cache: hits and misses, atomic merged writes, corrupt and stale files, two writers."""

import dataclasses
import json
import multiprocessing
import os
import stat
import warnings

import pytest
from autotune_fakes import FAKE_ENV, write_entries

from sgtriton.autotune.cache import (
    CacheEntry,
    TuningCache,
    TuningCacheWarning,
    autotune_dir,
    cache_files,
    clear_cache,
)
from sgtriton.ops._runtime import default_cache_root

CONFIG = {"meta": {"BLOCK": 128}, "num_warps": 4, "num_stages": 1}


def entry(bucket="dtype=fp16,batch=8", source="h1", kernel="modconv", best=1.0):
    return CacheEntry(kernel=kernel, source_hash=source, bucket=bucket, config=dict(CONFIG), best_ms=best,
                      default_ms=2.0, timings={"BLOCK=128,w4,s1": best, "BLOCK=64,w4,s1": 2.0, "x": None})


def test_store_then_lookup_hits_across_instances_and_misses_other_keys(isolated_autotune):
    cache = TuningCache(FAKE_ENV)
    assert cache.path == isolated_autotune / "autotune" / "fake-gpu-9000-sm90.json"
    assert cache.lookup("modconv", "h1", "dtype=fp16,batch=8") is None
    assert cache.store([entry()])
    again = TuningCache(FAKE_ENV)
    hit = again.lookup("modconv", "h1", "dtype=fp16,batch=8")
    assert hit == entry() and hit.speedup == 2.0
    assert again.lookup("modconv", "h2", "dtype=fp16,batch=8") is None  # other kernel source
    assert again.lookup("modconv", "h1", "dtype=fp32,batch=8") is None  # other dtype / bucket
    data = json.loads(cache.path.read_text())
    assert data["schema"] == 1 and data["environment"] == dataclasses.asdict(FAKE_ENV)
    # Only the file and its lock remain: the temporary file was renamed into place.
    assert sorted(p.name for p in cache.path.parent.iterdir()) == [cache.path.name, cache.path.name + ".lock"]


def test_new_source_hash_replaces_the_kernels_old_entries():
    cache = TuningCache(FAKE_ENV)
    cache.store([entry(bucket="a"), entry(bucket="b"), entry(kernel="other", bucket="a")])
    cache.store([entry(bucket="a", source="h2")])
    fresh = TuningCache(FAKE_ENV)
    keys = sorted((e.kernel, e.source_hash, e.bucket) for e in fresh.entries())
    assert keys == [("modconv", "h2", "a"), ("other", "h1", "a")]


def test_generation_changes_when_entries_change():
    cache = TuningCache(FAKE_ENV)
    cache.lookup("modconv", "h1", "a")
    before = cache.generation
    cache.store([entry()])
    assert cache.generation > before


@pytest.mark.parametrize("content", ["{not json", '{"schema": 1}', '[1, 2]', '{"schema": 99, "entries": {}}',
                                     '{"schema": 1, "entries": {}, "environment": "x"}'])
def test_corrupt_file_is_reported_once_ignored_and_rewritten(content):
    cache = TuningCache(FAKE_ENV)
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text(content)
    with pytest.warns(TuningCacheWarning, match="ignoring it"):
        assert cache.lookup("modconv", "h1", "dtype=fp16,batch=8") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TuningCache(FAKE_ENV).lookup("modconv", "h1", "x") is None  # reported once per process
        assert cache.store([entry()])
    assert TuningCache(FAKE_ENV).lookup("modconv", "h1", "dtype=fp16,batch=8") == entry()


def test_malformed_entries_are_skipped_and_the_rest_used():
    cache = TuningCache(FAKE_ENV)
    cache.store([entry()])
    data = json.loads(cache.path.read_text())
    data["entries"]["junk"] = {"kernel": "modconv"}
    cache.path.write_text(json.dumps(data))
    with pytest.warns(TuningCacheWarning, match="1 malformed"):
        assert TuningCache(FAKE_ENV).lookup("modconv", "h1", "dtype=fp16,batch=8") == entry()


@pytest.mark.parametrize("field,value", [("triton", "3.8.0"), ("torch", "2.12.0")])
def test_version_change_invalidates_the_file_which_is_then_rewritten(field, value):
    old_env = dataclasses.replace(FAKE_ENV, **{field: value})
    TuningCache(old_env).store([entry(bucket="old")])
    cache = TuningCache(FAKE_ENV)
    assert cache.path == TuningCache(old_env).path  # same GPU, same file
    with pytest.warns(TuningCacheWarning, match=f"{value}.*re-tuned"):
        assert cache.lookup("modconv", "h1", "old") is None
    cache.store([entry(bucket="new")])
    data = json.loads(cache.path.read_text())
    assert data["environment"][field] == getattr(FAKE_ENV, field)
    assert [e["bucket"] for e in data["entries"].values()] == ["new"]


def test_unwritable_cache_is_reported_and_kept_in_memory(isolated_autotune):
    isolated_autotune.mkdir(parents=True)
    (isolated_autotune / "autotune").write_text("a file where the folder should be")
    cache = TuningCache(FAKE_ENV)
    with pytest.warns(TuningCacheWarning, match="could not be written"):
        assert cache.store([entry()]) is False
    assert cache.lookup("modconv", "h1", "dtype=fp16,batch=8") == entry()


def test_cache_root_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SGTRITON_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_root() == tmp_path / "mine"
    monkeypatch.delenv("SGTRITON_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "sgtriton"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_root().parts[-2:] == (".cache", "sgtriton")
    assert TuningCache(FAKE_ENV, tmp_path / "explicit").path.parent == tmp_path / "explicit" / "autotune"


def test_clear_removes_every_tuning_file():
    TuningCache(FAKE_ENV).store([entry()])
    TuningCache(dataclasses.replace(FAKE_ENV, gpu="Other", capability=80)).store([entry()])
    assert len(cache_files()) == 2
    removed = clear_cache()
    assert len(removed) == 2 and cache_files() == [] and list(autotune_dir().iterdir()) == []


def test_two_processes_writing_at_once_keep_every_entry(isolated_autotune):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    count = 12
    workers = [context.Process(target=write_entries, args=(str(isolated_autotune), tag, count, barrier))
               for tag in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    cache = TuningCache(FAKE_ENV)
    buckets = sorted(e.bucket for e in cache.entries())
    assert buckets == sorted(f"{tag}-{i}" for tag in "ab" for i in range(count))
    assert not [p for p in cache.path.parent.iterdir() if p.name.endswith(".part")]


DEEP = "[" * 100_000 + "]" * 100_000


def _bad_file(path, kind):
    good = {"schema": 1, "environment": dataclasses.asdict(FAKE_ENV), "entries": {}}
    if kind == "not-utf8":
        path.write_bytes(b'{"schema": 1, "entries": {"\xff\xfe": 1}}')
    elif kind == "deep":
        path.write_text(DEEP)
    elif kind == "huge-int":
        path.write_text(json.dumps(good).replace('"capability": 90', '"capability": ' + "9" * 4400))
    elif kind == "infinity":
        path.write_text(json.dumps(good).replace('"capability": 90', '"capability": Infinity'))
    elif kind == "directory":
        path.mkdir()
        (path / "inside").write_text("x")


@pytest.mark.parametrize("kind", ["not-utf8", "deep", "huge-int", "infinity", "directory"])
def test_unusable_file_is_warned_once_set_aside_and_rebuilt(kind):
    cache = TuningCache(FAKE_ENV)
    cache.path.parent.mkdir(parents=True)
    _bad_file(cache.path, kind)
    with pytest.warns(TuningCacheWarning, match="moved it to .*corrupt-"):
        assert cache.lookup("modconv", "h1", "dtype=fp16,batch=8") is None
    aside = [p for p in cache.path.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and not cache.path.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once per process
        assert cache.store([entry()])
    assert TuningCache(FAKE_ENV).lookup("modconv", "h1", "dtype=fp16,batch=8") == entry()
    assert len(clear_cache()) == 1 and list(autotune_dir().iterdir()) == []


@pytest.mark.parametrize("kind", ["not-utf8", "deep", "huge-int", "infinity", "directory"])
def test_store_repairs_a_corrupt_file_without_a_lookup_first(kind):
    cache = TuningCache(FAKE_ENV)
    cache.path.parent.mkdir(parents=True)
    _bad_file(cache.path, kind)
    with pytest.warns(TuningCacheWarning):
        assert cache.store([entry()])
    assert TuningCache(FAKE_ENV).lookup("modconv", "h1", "dtype=fp16,batch=8") == entry()


def test_entries_with_non_finite_numbers_are_skipped():
    cache = TuningCache(FAKE_ENV)
    cache.store([entry(), entry(bucket="b")])
    cache.path.write_text(cache.path.read_text().replace('"best_ms": 1.0', '"best_ms": 1e999', 1))
    with pytest.warns(TuningCacheWarning, match="1 malformed"):
        assert len(TuningCache(FAKE_ENV).entries()) == 1


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_cache_file_permissions_follow_the_umask(umask, mode):
    old = os.umask(umask)
    try:
        cache = TuningCache(FAKE_ENV)
        cache.store([entry()])
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.path.stat().st_mode) == mode


def test_show_reports_unusable_files_in_one_line(isolated_autotune):
    from click.testing import CliRunner

    from sgtriton.autotune.commands import autotune_command

    folder = autotune_dir()
    folder.mkdir(parents=True)
    for i, kind in enumerate(["not-utf8", "deep", "huge-int", "infinity", "directory"]):
        _bad_file(folder / f"gpu{i}.json", kind)
    result = CliRunner().invoke(autotune_command, ["--show"])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert result.output.count("unusable --") == 5
    result = CliRunner().invoke(autotune_command, ["--clear"])
    assert result.exit_code == 0 and "removed 5" in result.output and list(folder.iterdir()) == []
