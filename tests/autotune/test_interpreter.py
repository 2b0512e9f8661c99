"""Under Triton's interpreter (this machine): the single-config path runs end to end, measures nothing."""

import pytest
import torch
import triton
import triton.language as tl
from autotune_fakes import ToyGenerator, never_benchmark

from sgtriton import build_generator
from sgtriton.autotune import install, tune_call, warmup
from sgtriton.autotune.cache import cache_files
from sgtriton.autotune.tuner import INTERPRETER_NOTE
from sgtriton.ops._runtime import KERNELS, KernelConfig, declare_kernel, interpreter_active, launch_config
from sgtriton.testing.devices import cuda_available

# What the interpreter path does; on a CUDA machine the compiled path is covered by tests/gpu.
pytestmark = pytest.mark.skipif(cuda_available(), reason="proves the interpreter path; this machine has CUDA")


@triton.jit
def _toy_scale_kernel(x_ptr, y_ptr, n, scale, BLOCK: tl.constexpr):
    """``y = x * scale`` over ``n`` contiguous fp32 elements, ``BLOCK`` per program."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask) * scale, mask=mask)


@pytest.fixture
def toy_spec():
    spec = declare_kernel("autotune_test_toy_scale", _toy_scale_kernel, [KernelConfig({"BLOCK": 16}, 1, 1)],
                          aot_signature=lambda c, d: ({}, {}), dtypes=("fp32",))
    yield spec
    KERNELS.pop(spec.name, None)


def toy_launch(spec, x):
    key = (("dtype", "fp32"), ("batch", x.shape[0]), ("elements", x[0].numel()))
    block = launch_config(spec, key).meta["BLOCK"]
    y = torch.empty_like(x)
    _toy_scale_kernel[(triton.cdiv(x.numel(), block),)](x, y, x.numel(), 3.0, BLOCK=block)
    return y


def test_a_real_kernel_runs_with_its_single_config_and_nothing_is_measured(toy_spec, isolated_autotune):
    assert interpreter_active()
    install("full")
    x = torch.arange(40.0).reshape(2, 20)
    outputs = []
    [result] = tune_call(lambda: outputs.append(toy_launch(toy_spec, x)), specs=[toy_spec],
                         benchmarker=never_benchmark)
    assert result.kernel == toy_spec.name and result.config == toy_spec.default_config
    assert result.source == "default" and result.note == INTERPRETER_NOTE and result.launches == 1
    assert [torch.equal(y, x * 3) for y in outputs] == [True]
    assert cache_files() == []  # nothing measured, nothing written
    assert "run" not in _toy_scale_kernel.__dict__


def test_warmup_under_the_interpreter_compiles_and_explains(toy_spec):
    G = ToyGenerator(toy_spec, launcher=toy_launch)
    report = warmup(G, batch_sizes=[1, 2], policy="full", benchmarker=never_benchmark)
    assert [r.kernel for r in report.results] == [toy_spec.name, toy_spec.name]
    assert any("interpreter" in note and "CUDA GPU" in note for note in report.notes)


def test_warmup_of_a_reference_generator_reports_no_kernels():
    G = build_generator("stylegan2-f", img_resolution=8, seed=0, backend="reference")
    report = warmup(G, batch_sizes=[1], dtypes=["fp32"], policy="full", benchmarker=never_benchmark)
    assert [run.batch_size for run in report.runs] == [1]
    assert report.results == []
    assert any("no Triton kernel" in note for note in report.notes)


def test_warmup_of_a_triton_generator_reports_its_kernels_with_their_defaults():
    G = build_generator("stylegan2-f", img_resolution=8, seed=0, backend="triton",
                        synthesis_kwargs={"channel_base": 64, "channel_max": 4}, z_dim=4, w_dim=4)
    report = warmup(G, batch_sizes=[1], dtypes=["fp32"], policy="full", benchmarker=never_benchmark)
    # One result per kernel function (modconv2d, modconv2d_up2 and torgb share theirs, named together).
    kernels = {name for r in report.results for name in r.kernel.split(", ")}
    assert {"mapping_chain", "truncate", "fully_connected", "modconv2d", "modconv2d_up2", "torgb"} <= kernels
    assert kernels <= set(KERNELS)
    assert all(r.source == "default" and r.note == INTERPRETER_NOTE for r in report.results)


def test_the_launch_hook_intercepts_a_compiled_triton_kernel_object(gpu_like):
    """What the tuner relies on in Triton itself: ``kernel[grid](...)`` calls the instance's ``run``."""
    from autotune_fakes import FAKE_ENV

    from sgtriton.autotune.pruning import no_pruning
    from sgtriton.ops._runtime import jit_function

    compiled = jit_function(_toy_scale_kernel)
    assert isinstance(compiled, triton.runtime.jit.JITFunction)
    launches = []

    def gpu_stand_in(*args, grid, warmup, **kwargs):  # where the real launch would happen
        launches.append((grid, kwargs["BLOCK"]))

    compiled.run = gpu_stand_in
    spec = declare_kernel("autotune_test_compiled", compiled, [KernelConfig({"BLOCK": 16}, 1, 1),
                                                              KernelConfig({"BLOCK": 32}, 1, 1)],
                          aot_signature=lambda c, d: ({}, {}))
    try:
        x, y = torch.ones(64), torch.empty(64)

        def call():
            block = launch_config(spec, (("batch", 1),)).meta["BLOCK"]
            compiled[(64 // block,)](x, y, 64, 3.0, BLOCK=block)

        def bench(fn, spec, config):
            fn()
            return {16: 2.0, 32: 1.0}[config.meta["BLOCK"]]

        [result] = tune_call(call, specs=[spec], environment=FAKE_ENV, pruner=no_pruning, benchmarker=bench)
        assert result.config.meta == {"BLOCK": 32} and result.speedup == 2.0
        # record, then per config: one replay under the benchmarker and the real launch
        assert launches == [((4,), 16), ((4,), 16), ((4,), 16), ((2,), 32), ((2,), 32)]
        assert compiled.__dict__["run"] is gpu_stand_in
    finally:
        KERNELS.pop(spec.name, None)
