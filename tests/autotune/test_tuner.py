"""The tuner against fake kernels and a benchmarker with fixed timings (launchers behave as on a GPU)."""

import pytest
import torch
from autotune_fakes import FAKE_ENV, TIMES, FakeBar, FakeBenchmarker, launch

from sgtriton.autotune.cache import TuningCache
from sgtriton.autotune.pruning import no_pruning, reject_by_compile_results, split_candidates
from sgtriton.autotune.tuner import INTERPRETER_NOTE, format_results, pick_best, tune_call
from sgtriton.ops._runtime import KernelConfig, launch_config


def tune(call, spec, **kwargs):
    kwargs.setdefault("environment", FAKE_ENV)
    kwargs.setdefault("pruner", no_pruning)
    kwargs.setdefault("benchmarker", FakeBenchmarker())
    return tune_call(call, specs=[spec], **kwargs)


def block_of(config):
    return config.meta["BLOCK"]


def test_fastest_config_is_chosen_measured_against_the_default(gpu_like, fake_spec):
    x = torch.arange(12.0).reshape(3, 4)
    outputs = []
    bench = FakeBenchmarker()
    [result] = tune(lambda: outputs.append(launch(fake_spec, x)), fake_spec, benchmarker=bench)
    assert block_of(result.config) == 128 and result.source == "tuned"
    assert result.bucket == "dtype=fp32,batch=4,cin=4"
    assert (result.best_ms, result.default_ms, result.speedup) == (1.0, 3.0, 3.0)
    assert result.timings == {str(c): TIMES[block_of(c)] for c in fake_spec.configs}
    assert sorted(bench.trials) == sorted((fake_spec.name, b) for b in TIMES)  # each config once
    # call() ran once to record and once per config; every run produced the right output.
    assert len(outputs) == 1 + len(TIMES) and all(torch.equal(y, x * 2) for y in outputs)
    # Every config really launched (the launcher derived the grid from the forced config).
    assert sorted(set(fake_spec.fn.blocks)) == sorted(TIMES)


def test_result_is_stored_and_the_next_run_hits_the_cache(gpu_like, fake_spec):
    x = torch.ones(2, 3)
    tune(lambda: launch(fake_spec, x), fake_spec)
    stored = TuningCache(FAKE_ENV).entries()
    assert [(e.kernel, e.bucket, e.config["meta"]) for e in stored] == [
        (fake_spec.name, "dtype=fp32,batch=2,cin=3", {"BLOCK": 128})]
    bench = FakeBenchmarker()
    [again] = tune(lambda: launch(fake_spec, x), fake_spec, benchmarker=bench)
    assert bench.trials == [] and again.source == "cache" and block_of(again.config) == 128
    assert again.speedup == 3.0
    [retuned] = tune(lambda: launch(fake_spec, x), fake_spec, benchmarker=FakeBenchmarker({**TIMES, 32: 0.5}),
                     retune=True)
    assert retuned.source == "tuned" and block_of(retuned.config) == 32
    assert TuningCache(FAKE_ENV).entries()[0].config["meta"] == {"BLOCK": 32}


def test_each_bucket_is_tuned_separately(gpu_like, fake_spec):
    def call():
        launch(fake_spec, torch.ones(1, 3))
        launch(fake_spec, torch.ones(3, 3))
        launch(fake_spec, torch.ones(4, 3))  # same bucket as batch 3

    results = tune(call, fake_spec, benchmarker=FakeBenchmarker())
    assert [r.bucket for r in results] == ["dtype=fp32,batch=1,cin=3", "dtype=fp32,batch=4,cin=3"]
    assert [r.launches for r in results] == [1, 2]


def test_pruned_configs_are_never_benchmarked_but_the_default_always_is(gpu_like, fake_spec):
    default, fast = fake_spec.configs[0], fake_spec.configs[1]
    seen = []

    def pruner(spec, dtype, capability):
        seen.append((spec.name, dtype, capability))
        return [default, fast]

    bench = FakeBenchmarker()
    [result] = tune(lambda: launch(fake_spec, torch.ones(2, 2)), fake_spec, pruner=pruner, benchmarker=bench)
    assert seen == [(fake_spec.name, "fp32", 90)]
    assert (fake_spec.name, 128) not in bench.trials and (fake_spec.name, 64) in bench.trials
    assert block_of(result.config) == 256 and result.pruned == (str(fast),)


def test_compile_report_rules_reject_spills_errors_and_shared_memory_over_the_limit(fake_spec):
    reports = {64: {"spills": 0, "shared": 1000}, 128: {"spills": 8, "shared": 1000},
               256: {"spills": 0, "shared": 300_000}, 32: None}
    pruner = reject_by_compile_results(lambda spec, config, dtype, cap: reports[block_of(config)],
                                       shared_limit=232448)
    assert [block_of(c) for c in pruner(fake_spec, "fp16", 90)] == [128, 256]
    errors = reject_by_compile_results(lambda spec, config, dtype, cap: {"error": "boom"} if dtype == "fp16" else {})
    assert len(list(errors(fake_spec, None, 90))) == len(fake_spec.configs)  # any declared dtype failing
    assert list(errors(fake_spec, "fp32", 90)) == []
    kept, pruned = split_candidates(fake_spec, "fp16", 90, pruner)
    assert [block_of(c) for c in kept] == [64, 32] and [block_of(c) for c in pruned] == [128, 256]


def test_a_broken_pruner_is_reported_and_nothing_is_pruned(fake_spec):
    def broken(spec, dtype, capability):
        raise KeyError("no report")

    with pytest.warns(UserWarning, match="pruning"):
        kept, pruned = split_candidates(fake_spec, None, 90, broken)
    assert kept == list(fake_spec.configs) and pruned == []


def test_in_place_kernels_are_restored_between_trials(gpu_like, make_fake_spec):
    base = torch.zeros(2, 3)
    for mutates, expected in (((), None), (("x_ptr",), 1.0)):
        spec = make_fake_spec(in_place=True)
        spec.extra["mutates"] = mutates
        outputs = []

        def call(spec=spec, outputs=outputs):
            buffer = base.clone()
            launch(spec, buffer)
            outputs.append(buffer)

        tune(call, spec, benchmarker=FakeBenchmarker(calls_per_trial=3))
        if expected is None:  # without the declaration the replays leak into the real result
            assert any(float(y.max()) > 1 for y in outputs)
        else:
            assert all(torch.equal(y, base + expected) for y in outputs)


def test_restore_can_be_given_per_call(gpu_like, make_fake_spec):
    spec = make_fake_spec(in_place=True)
    buffers = []

    def call():
        buffers.append(torch.zeros(2, 2))
        launch(spec, buffers[-1])

    tune(call, spec, benchmarker=FakeBenchmarker(calls_per_trial=2), restore={spec.name: ["x_ptr"]})
    assert all(torch.equal(b, torch.ones(2, 2)) for b in buffers)
    with pytest.raises(ValueError, match="mutates: kernel argument 'nope'"):
        tune(call, spec, retune=True, restore={spec.name: ["nope"]})


def test_configs_that_fail_are_skipped(gpu_like, make_fake_spec):
    spec = make_fake_spec(fail_block=128)  # the real launch raises, like an out-of-resources error
    outputs = []
    [result] = tune(lambda: outputs.append(launch(spec, torch.ones(2, 2))), spec,
                    benchmarker=FakeBenchmarker(fail_blocks={256}))
    assert block_of(result.config) == 64  # 128 and 256 failed; 64 (3 ms) beats 32 (5 ms)
    assert result.timings[str(spec.configs[1])] is None and result.timings[str(spec.configs[2])] is None
    assert "2 config(s) failed" in result.note
    assert all(torch.equal(y, torch.full((2, 2), 2.0)) for y in outputs)


def test_ties_keep_the_default_and_pick_best_ignores_failures():
    assert pick_best({0: 1.0, 1: 1.0, 2: 2.0}) == 0
    assert pick_best({0: None, 1: float("inf"), 2: 2.0, 3: float("nan")}) == 2
    assert pick_best({0: None}) is None


def test_progress_bar_counts_every_trial(gpu_like, fake_spec):
    bar = FakeBar()
    tune(lambda: launch(fake_spec, torch.ones(1, 1)), fake_spec, progress=bar)
    assert bar.total == bar.n == len(fake_spec.configs)
    assert fake_spec.name in bar.postfix


def test_record_only_policies_report_and_never_benchmark(gpu_like, fake_spec):
    bench = FakeBenchmarker()
    for policy in ("off", "cached"):
        [result] = tune(lambda: launch(fake_spec, torch.ones(1, 1)), fake_spec, policy=policy, benchmarker=bench)
        assert result.source == "default" and result.config == fake_spec.default_config
    assert bench.trials == []


def test_single_config_kernels_need_no_benchmark(gpu_like, fake_spec):
    only_default = [c for c in fake_spec.configs[1:]]
    bench = FakeBenchmarker()
    [result] = tune(lambda: launch(fake_spec, torch.ones(1, 1)), fake_spec, benchmarker=bench,
                    pruner=lambda spec, dtype, cap: only_default)
    assert bench.trials == [] and result.source == "default" and "single candidate" in result.note


def test_without_a_gpu_nothing_is_benchmarked(gpu_like, fake_spec):
    bench = FakeBenchmarker()
    [result] = tune(lambda: launch(fake_spec, torch.ones(1, 1)), fake_spec, environment=None, benchmarker=bench)
    assert bench.trials == [] and "no CUDA GPU" in result.note


def test_under_the_interpreter_only_launches_are_reported(fake_spec):
    bench = FakeBenchmarker()
    [result] = tune(lambda: launch(fake_spec, torch.ones(1, 1)), fake_spec, benchmarker=bench)
    assert bench.trials == [] and result.note == INTERPRETER_NOTE and result.bucket is None
    assert fake_spec.fn.blocks == [64]  # launch_config gave the default


def test_tuning_leaves_the_selector_and_kernels_as_they_were(gpu_like, fake_spec):
    marker = KernelConfig({"BLOCK": 32}, 4, 1)

    def selector(spec, key):
        return marker

    from sgtriton.ops._runtime import set_config_selector

    set_config_selector(selector)
    tune(lambda: launch(fake_spec, torch.ones(1, 1)), fake_spec)
    assert launch_config(fake_spec, ()) is marker
    assert "run" not in fake_spec.fn.__dict__


def test_summary_table_lists_kernel_bucket_config_time_speedup():
    from sgtriton.autotune.tuner import TuneResult

    text = format_results([TuneResult("modconv", "dtype=fp16,batch=8", KernelConfig({"BLOCK": 128}, 4, 1), "tuned",
                                      best_ms=0.5, default_ms=1.0, tuning_s=2.25)])
    header, rule, row = text.splitlines()
    assert header.split()[:3] == ["kernel", "shape", "bucket"]
    assert row.split() == ["modconv", "dtype=fp16,batch=8", "BLOCK=128,w4,s1", "0.5000", "2.00x", "2.2", "tuned"]


def test_specs_sharing_one_kernel_function_are_tuned_apart(gpu_like, fake_spec):
    from autotune_fakes import undeclare

    from sgtriton.ops._runtime import declare_kernel

    twin = declare_kernel(fake_spec.name + "_up2", fake_spec.fn, fake_spec.configs, fake_spec.aot_signature)
    try:
        times = {(fake_spec.name, 128): 1.0, (twin.name, 32): 1.0}

        def bench(fn, spec, config):
            fn()
            return times.get((spec.name, block_of(config)), 4.0)

        def call():
            launch(fake_spec, torch.ones(2, 2))
            launch(twin, torch.ones(2, 2))
            # A launch given its config explicitly (no launch_config before it) is not measured.
            fake_spec.fn[(1,)](torch.ones(1), torch.ones(1), 1, BLOCK=999)

        results = tune_call(call, specs=[fake_spec, twin], environment=FAKE_ENV, pruner=no_pruning, benchmarker=bench)
        assert [(r.kernel, block_of(r.config), r.launches) for r in results] == [
            (fake_spec.name, 128, 1), (twin.name, 32, 1)]
    finally:
        undeclare(twin.name)
