"""Configs limited to some dtypes (``KernelConfig.dtypes``): kept out of the other dtypes' tuning,
tables, compiles and untuned choices."""

import pytest
from autotune_fakes import FakeKernel, undeclare

from sgtriton.autotune.pruning import no_pruning, split_candidates
from sgtriton.inspection.compile_gate import plan_jobs
from sgtriton.ops._runtime import KernelConfig, declare_kernel, key_dtype, launch_config, set_config_selector

GENERAL = KernelConfig({"BLOCK": 8}, num_warps=4, num_stages=1)
WIDE_FP16 = KernelConfig({"BLOCK": 64}, num_warps=4, num_stages=1, dtypes=("fp16",))
FP32_KEY = (("dtype", "fp32"), ("batch", 2))
FP16_KEY = (("dtype", "fp16"), ("batch", 2))


@pytest.fixture
def spec():
    declared = declare_kernel("fake_dtype_space", FakeKernel(), [GENERAL, WIDE_FP16],
                              aot_signature=lambda config, dtype: ({}, {}))
    yield declared
    undeclare("fake_dtype_space")


def test_a_config_belongs_to_the_space_of_its_dtypes(spec):
    assert spec.configs_for("fp32") == (GENERAL,)
    assert spec.configs_for("fp16") == (GENERAL, WIDE_FP16)
    assert spec.configs_for(None) == spec.configs
    assert WIDE_FP16 == KernelConfig({"BLOCK": 64}, num_warps=4, num_stages=1)  # the same point, named alike
    assert str(WIDE_FP16) == "BLOCK=64,w4,s1"
    assert key_dtype(FP16_KEY) == "fp16" and key_dtype((("batch", 2),)) is None


def test_declaring_refuses_a_limited_default_and_unknown_dtypes():
    with pytest.raises(ValueError, match="first config is its default, for every dtype"):
        declare_kernel("fake_bad_default", FakeKernel(), [WIDE_FP16, GENERAL])
    odd = KernelConfig({"BLOCK": 16}, dtypes=("fp8",))
    with pytest.raises(ValueError, match=r"names dtypes \('fp8',\); expected some of the kernel's"):
        declare_kernel("fake_bad_dtype", FakeKernel(), [GENERAL, odd])
    with pytest.raises(ValueError, match=r"names dtypes \(\)"):
        declare_kernel("fake_no_dtype", FakeKernel(), [GENERAL, KernelConfig({"BLOCK": 16}, dtypes=())])
    with pytest.raises(ValueError, match=r"names dtypes \[\]"):
        declare_kernel("fake_no_dtype", FakeKernel(), [GENERAL, KernelConfig({"BLOCK": 16}, dtypes=[])])


def test_a_selected_config_outside_the_launch_dtype_falls_back_to_the_untuned_one(spec, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # launchers consult the selector, as on a GPU
    set_config_selector(lambda s, key: WIDE_FP16)  # e.g. a hand-edited table naming the fp16 tile for fp32
    try:
        assert launch_config(spec, FP16_KEY) is WIDE_FP16
        assert launch_config(spec, FP32_KEY) == GENERAL
    finally:
        set_config_selector(None)


def test_tuning_candidates_are_the_launch_dtype_space(spec):
    assert split_candidates(spec, "fp32", 90, no_pruning) == ([GENERAL], [])
    assert split_candidates(spec, "fp16", 90, no_pruning) == ([GENERAL, WIDE_FP16], [])


def test_the_compile_gate_compiles_a_limited_config_only_in_its_dtypes(spec):
    jobs, failed = plan_jobs([spec], [90], default_config_only=False)
    assert not failed
    assert sorted((job.config, job.dtype) for job in jobs) == [
        ("BLOCK=64,w4,s1", "fp16"), ("BLOCK=8,w4,s1", "fp16"), ("BLOCK=8,w4,s1", "fp32")]
