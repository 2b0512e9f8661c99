"""SGTRITON_AUTOTUNE=off|cached|full as the installed config selector, tables, and warmup."""

import pytest
import torch
from autotune_fakes import FAKE_ENV, FakeBenchmarker, ToyGenerator, never_benchmark

from sgtriton.autotune import tables
from sgtriton.autotune.cache import CacheEntry, TuningCache, config_to_json
from sgtriton.autotune.environment import source_hash
from sgtriton.autotune.policy import ConfigPolicy, install, installed_policy, resolve_policy, uninstall
from sgtriton.autotune.pruning import no_pruning
from sgtriton.autotune.warmup import normalize_dtype, warmup
from sgtriton.ops._runtime import launch_config

KEY = (("dtype", "fp32"), ("batch", 3), ("cin", 5))
BUCKET = "dtype=fp32,batch=4,cin=5"


def store(spec, index, bucket=BUCKET):
    TuningCache(FAKE_ENV).store([CacheEntry(spec.name, source_hash(spec), bucket,
                                            config_to_json(spec.configs[index]), best_ms=1.0, default_ms=2.0)])


@pytest.fixture
def table_for(monkeypatch):
    """Ship a measured sm_90 table giving ``spec`` config ``index`` at BUCKET."""

    def ship(spec, index, bucket=BUCKET, measured=True):
        table = {"schema": 1, "family": "sm_90", "measured": measured,
                 "entries": {f"{spec.name}|{bucket}": {"config": config_to_json(spec.configs[index])}}}
        monkeypatch.setattr(tables, "load_table", lambda family: table if family == "sm_90" else None)

    return ship


def test_policy_comes_from_the_argument_or_the_environment(monkeypatch):
    assert resolve_policy() == "cached"
    monkeypatch.setenv("SGTRITON_AUTOTUNE", "FULL")
    assert resolve_policy() == "full"
    assert resolve_policy("off") == "off"
    monkeypatch.setenv("SGTRITON_AUTOTUNE", "sometimes")
    with pytest.raises(ValueError, match=r"SGTRITON_AUTOTUNE='sometimes': expected one of off, cached, full"):
        resolve_policy()
    with pytest.raises(ValueError, match=r"policy='fast'"):
        install("fast")


def test_cached_uses_cache_then_table_then_default(gpu_like, fake_spec, table_for):
    install("cached", environment=FAKE_ENV)
    assert launch_config(fake_spec, KEY) == fake_spec.default_config
    table_for(fake_spec, 2)
    install("cached", environment=FAKE_ENV)
    assert launch_config(fake_spec, KEY) == fake_spec.configs[2]
    store(fake_spec, 1)
    install("cached", environment=FAKE_ENV)
    assert launch_config(fake_spec, KEY) == fake_spec.configs[1]
    assert launch_config(fake_spec, (("dtype", "fp32"), ("batch", 4), ("cin", 5))) == fake_spec.configs[1]
    assert launch_config(fake_spec, (("dtype", "fp16"), ("batch", 4), ("cin", 5))) == fake_spec.default_config


def test_off_ignores_the_cache_uses_the_table_and_never_benchmarks(gpu_like, fake_spec, table_for):
    store(fake_spec, 1)
    install("off", environment=FAKE_ENV)
    assert launch_config(fake_spec, KEY) == fake_spec.default_config
    table_for(fake_spec, 3)
    install("off", environment=FAKE_ENV)
    assert launch_config(fake_spec, KEY) == fake_spec.configs[3]
    G = ToyGenerator(fake_spec)
    report = warmup(G, batch_sizes=[1, 8], benchmarker=never_benchmark, pruner=no_pruning)
    assert report.policy == "off" and report.tuned == [] and len(G.calls) == 2
    assert {r.source for r in report.results} == {"default"}  # no table entry for these buckets


def test_unmeasured_tables_and_configs_outside_the_space_are_ignored(gpu_like, fake_spec, table_for):
    table_for(fake_spec, 2, measured=False)
    assert tables.table_config(fake_spec, BUCKET, "sm_90") is None
    table_for(fake_spec, 2)
    assert tables.table_config(fake_spec, BUCKET, "sm_90") == fake_spec.configs[2]
    tables.load_table("sm_90")["entries"][f"{fake_spec.name}|{BUCKET}"]["config"]["meta"]["BLOCK"] = 999
    assert tables.table_config(fake_spec, BUCKET, "sm_90") is None


def test_shipped_tables_are_placeholders_marked_not_measured():
    for family in ("sm_80", "sm_90"):
        table = tables.load_table(family)
        assert table["family"] == family and table["measured"] is False and table["entries"] == {}
        assert "not yet measured" in table["note"]
    assert tables.load_table("sm_75") is None and tables.load_table("../etc") is None


def test_full_records_misses_and_warmup_tunes_them(gpu_like, fake_spec):
    policy = install("full", environment=FAKE_ENV)
    assert launch_config(fake_spec, KEY) == fake_spec.default_config
    assert list(policy.missing) == [(fake_spec.name, BUCKET)]
    G = ToyGenerator(fake_spec)
    bench = FakeBenchmarker()
    report = warmup(G, batch_sizes=[3], dtypes=["fp32"], benchmarker=bench, pruner=no_pruning)
    [result] = report.tuned
    assert result.bucket == "dtype=fp32,batch=4,cin=8" and result.config.meta == {"BLOCK": 128}
    assert len(bench.trials) == len(fake_spec.configs)
    # The installed policy sees the new entry at once (its memo follows the cache's generation).
    assert launch_config(fake_spec, (("dtype", "fp32"), ("batch", 3), ("cin", 8))) == fake_spec.configs[1]
    # A second warmup finds everything cached and measures nothing.
    again = warmup(G, batch_sizes=[3], benchmarker=never_benchmark, pruner=no_pruning)
    assert [r.source for r in again.results] == ["cache"]


def test_warmup_runs_each_batch_size_and_precision(gpu_like, fake_spec):
    install("cached", environment=FAKE_ENV)
    G = ToyGenerator(fake_spec)
    report = warmup(G, batch_sizes=(1, 2), dtypes=(torch.float32, "fp16"), benchmarker=never_benchmark)
    # On CPU fp16 layers never run, so fp16 collapses into fp32 (with a note).
    assert [(run.batch_size, run.dtype) for run in report.runs] == [(1, "fp32"), (2, "fp32")]
    assert G.calls == [{"batch": 1, "force_fp32": True}, {"batch": 2, "force_fp32": True}]
    assert any("fp16" in note for note in report.notes) and any("nothing was benchmarked" in n for n in report.notes)
    assert fake_spec.name in report.format()
    with pytest.raises(ValueError, match="batch_sizes"):
        warmup(G, batch_sizes=[0])
    with pytest.raises(ValueError, match="dtypes: 'bf16'"):
        warmup(G, dtypes=["bf16"])
    assert normalize_dtype(torch.float16) == normalize_dtype("half") == "fp16"


def test_install_and_uninstall(gpu_like, fake_spec):
    store(fake_spec, 1)
    policy = install(ConfigPolicy("cached", environment=FAKE_ENV))
    assert installed_policy() is policy and launch_config(fake_spec, KEY) == fake_spec.configs[1]
    uninstall()
    assert installed_policy() is None and launch_config(fake_spec, KEY) == fake_spec.default_config


def test_no_gpu_means_default_configs(gpu_like, fake_spec):
    store(fake_spec, 1)
    install("cached", environment=None)
    assert launch_config(fake_spec, KEY) == fake_spec.default_config


def test_the_interpreter_never_asks_the_policy(fake_spec):
    store(fake_spec, 1)
    install("cached", environment=FAKE_ENV)
    assert launch_config(fake_spec, KEY) == fake_spec.default_config
