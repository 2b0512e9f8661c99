"""The gpu tier: every declared kernel, compiled, at production shapes, against float64.

Skipped without CUDA (``pytest -m gpu``). Style layers are 512 channels at 4^2..64^2, batch 1
and 8, in every dtype the kernel declares (fp32 runs tf32x3 dots; fp16 with the NVlabs
pre-normalisation and ``conv_clamp``), with random noise and a different style per sample; the
whole-generator presets run at full width against their float64 reference.
:data:`RUNNERS` names, for every kernel in :data:`~sgtriton.ops._runtime.KERNELS`, the case that
launches it (``tests/test_gpu_tier.py`` checks that none is missing).
"""

from __future__ import annotations

import math
import re

import pytest
import sgtriton_adaptive_kernel.ops  # noqa: F401  (declares the plugin's kernels)
import torch

import sgtriton.ops.bias_act
import sgtriton.ops.fully_connected as fc
import sgtriton.ops.modconv as modconv
import sgtriton.ops.normalization
import sgtriton.ops.torgb
import sgtriton.ops.upfirdn2d as fir
from sgtriton import build_generator
from sgtriton.ops._runtime import KERNELS, TORCH_TO_TRITON
from sgtriton.testing import assert_close, generator_reduction_length
from sgtriton.testing.harness import check_layer_case, production_layer_case

pytestmark = pytest.mark.gpu

CHANNELS = 512
RESOLUTIONS = (4, 16, 64)
BATCHES = (1, 8)
DTYPES = {name: dtype for dtype, name in
          ((getattr(torch, t), n) for t, n in TORCH_TO_TRITON.items() if n != "fp64")}


def layer_runner(block, kind, up=1, **block_kwargs):
    def run(dtype, batch, resolution):
        check_layer_case(production_layer_case(block, kind, up, resolution, batch, dtype, CHANNELS,
                                               block_kwargs), torch.device("cuda"))
    return run


def randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to("cuda", dtype)


def run_bias_act(dtype, batch, resolution):
    x, b = randn(batch, CHANNELS, resolution, resolution), randn(CHANNELS, seed=1)
    actual = sgtriton.ops.bias_act.bias_act(x.to(dtype), b.float(), act="lrelu", clamp=256.0, impl="triton")
    expected = sgtriton.ops.bias_act.bias_act(x.to(dtype).double(), b.float().double(), act="lrelu", clamp=256.0)
    assert_close(actual, expected, dtype=dtype, name="bias_act")


def run_upfirdn2d(dtype, batch, resolution):
    x, f = randn(batch, CHANNELS, resolution, resolution), fir.setup_filter(fir.STYLEGAN_FILTER).to("cuda")
    actual = fir.upsample2d(x.to(dtype), f, impl="triton")
    expected = fir.upsample2d(x.to(dtype).double(), f.double(), impl="ref")
    assert_close(actual, expected, dtype=dtype, reduction_length=16, name="upsample2d")


def run_pixel_norm(dtype, batch, resolution):
    x = randn(batch * resolution, CHANNELS)
    assert_close(fc.normalize_2nd_moment(x.to(dtype), impl="triton"), fc.normalize_2nd_moment(x.to(dtype).double()),
                 dtype=dtype, reduction_length=CHANNELS, name="pixel_norm")


def mapping_operands(layers, dtype):
    weights = [randn(CHANNELS, CHANNELS, seed=10 + i) / 0.01 for i in range(layers)]
    biases = [randn(CHANNELS, seed=20 + i) for i in range(layers)]
    return weights, biases, [0.01 / math.sqrt(CHANNELS)] * layers


def run_fully_connected(dtype, batch, resolution):
    x = randn(batch * resolution, CHANNELS, seed=3)
    [w], [b], [gain] = mapping_operands(1, dtype)
    actual = fc.fully_connected(x.to(dtype), w.float(), b.float(), gain, 0.01, "lrelu", impl="triton")
    expected = fc.fully_connected(x.to(dtype).double(), w.float().double(), b.float().double(), gain, 0.01, "lrelu")
    assert_close(actual, expected, dtype=dtype, reduction_length=CHANNELS, name="fully_connected")


def run_mapping_chain(dtype, batch, resolution):
    x = randn(batch, CHANNELS, seed=4)  # z_dim = w_dim = 512, eight layers
    weights, biases, gains = mapping_operands(8, dtype)
    actual = fc.mapping_chain(x.to(dtype), [w.float() for w in weights], [b.float() for b in biases], gains, 0.01,
                              impl="triton")
    expected = fc.mapping_chain(x.to(dtype).double(), [w.float().double() for w in weights],
                                [b.float().double() for b in biases], gains, 0.01)
    assert_close(actual, expected, dtype=dtype, reduction_length=8 * CHANNELS, name="mapping_chain")


def run_truncate(dtype, batch, resolution):
    w, w_avg = randn(batch, CHANNELS, seed=5), randn(CHANNELS, seed=6)
    num_ws = 2 * int(math.log2(max(resolution, 4) * 16)) - 2
    actual = fc.truncate(w.to(dtype), w_avg.float(), num_ws, 0.7, 8, impl="triton")
    expected = fc.truncate(w.to(dtype).double(), w_avg.float().double(), num_ws, 0.7, 8)
    assert_close(actual, expected, dtype=dtype, name="truncate")


def run_modconv_weight_grad(dtype, batch, resolution):
    # A 512 -> 512 3x3 layer's weight gradient: the reduction runs over batch x pixels.
    shape = (batch, CHANNELS, resolution, resolution)
    x, g = randn(*shape, seed=7), randn(*shape, seed=8)
    actual = modconv.modconv_weight_grad_triton(x.to(dtype), g.to(dtype), 3)
    expected = torch.nn.grad.conv2d_weight(x.to(dtype).double(), [CHANNELS, CHANNELS, 3, 3], g.to(dtype).double(),
                                           padding=1)
    assert_close(actual, expected, dtype=dtype, reduction_length=batch * resolution * resolution,
                 name="modconv_weight_grad")


def run_modconv_prologue(dtype, batch, resolution):
    # The prologue of a demodulated 512 -> 512 3x3 layer: s' (fp16: pre-normalised) and d, in float32.
    x = randn(batch, CHANNELS, resolution, resolution, seed=9).to(dtype)
    weight, styles = randn(CHANNELS, CHANNELS, 3, 3, seed=10), randn(batch, CHANNELS, seed=11) + 1
    s_mod, d = modconv.modulation_operands(x, weight.float(), styles.float())
    w_eff, s_eff = modconv.fp16_prenormalize(weight, styles) if dtype == torch.float16 else (weight, styles)
    assert_close(s_mod, s_eff, dtype=dtype, name="modconv_prologue s'")
    assert_close(d, modconv.demodulation_coefficients(w_eff, s_eff), dtype=torch.float32,
                 reduction_length=CHANNELS * 9, name="modconv_prologue d")


#: For every declared kernel, the production case that launches it.
RUNNERS = {
    "modconv2d": layer_runner("moddemod", "conv"),
    "modconv2d_up2": layer_runner("moddemod", "conv", up=2),
    "modconv2d_weight_grad": run_modconv_weight_grad,
    "modconv2d_prologue": run_modconv_prologue,
    "torgb": layer_runner("moddemod", "torgb"),
    "adain_epilogue": layer_runner("adain", "conv", up=2),
    "rms_normalize": layer_runner("revised", "conv"),
    "adaptive_modconv2d": layer_runner("adaptive-kernel", "conv", bank_size=3),
    "adaptive_modconv2d_up2": layer_runner("adaptive-kernel", "conv", up=2, bank_size=3),
    "adaptive_modconv2d_large_bank": layer_runner("adaptive-kernel", "conv", bank_size=5),
    "adaptive_modconv2d_up2_large_bank": layer_runner("adaptive-kernel", "conv", up=2, bank_size=5),
    "bias_act": run_bias_act,
    "upfirdn2d": run_upfirdn2d,
    "pixel_norm": run_pixel_norm,
    "fully_connected": run_fully_connected,
    "mapping_chain": run_mapping_chain,
    "truncate": run_truncate,
}

CASES = [pytest.param(name, dtype, batch, resolution, id=f"{name}-{dtype}-b{batch}-{resolution}")
         for name in sorted(KERNELS) for dtype in KERNELS[name].dtypes
         for batch in BATCHES for resolution in RESOLUTIONS]


@pytest.mark.parametrize("name, dtype, batch, resolution", CASES)
def test_kernel_at_production_shapes(name, dtype, batch, resolution):
    if name not in RUNNERS:
        raise AssertionError(f"kernel {name!r} has no production case in RUNNERS")
    RUNNERS[name](DTYPES[dtype], batch, resolution)


@pytest.mark.parametrize("preset", ["stylegan1", "revised", "stylegan2-b", "stylegan2-e", "stylegan2-f"])
@pytest.mark.parametrize("force_fp32", [True, False])
def test_whole_generator_preset_at_256(preset, force_fp32):
    check_generator(preset, 256, batch=2, force_fp32=force_fp32)


def test_config_f_at_1024_against_float64():
    check_generator("stylegan2-f", 1024, batch=1, force_fp32=True)


def test_the_tuner_picks_among_configs_and_results_stay_exact(tmp_path, monkeypatch):
    # The real tuner, timing real launches: a measured table, and the tuned generator still matches.
    from sgtriton.autotune import warmup

    monkeypatch.setenv("SGTRITON_CACHE_DIR", str(tmp_path))
    G = build_generator("stylegan2-f", img_resolution=64, backend="triton", seed=0).cuda()
    report = warmup(G, batch_sizes=[1, 8], dtypes=["fp32", "fp16"], policy="full")
    assert report.results and all(r.source != "default" or candidates(r) == 1 for r in report.results)
    check_generator("stylegan2-f", 64, batch=8, force_fp32=False, G=G)


def candidates(result):
    """How many configs the tuner could compare for a result: its dtype's space, less those pruned."""
    dtype = re.search(r"dtype=(\w+)", result.bucket or "")
    space = KERNELS[result.kernel.split(", ")[0]].configs_for(dtype.group(1) if dtype else None)
    return len(space) - len(result.pruned)


def check_generator(preset, resolution, batch, force_fp32, G=None):
    """``G`` (Triton backend on CUDA) against its float64 reference copy, from the same ws and noise."""
    G = G or build_generator(preset, img_resolution=resolution, backend="triton", seed=0).cuda()
    reference = build_generator(preset, img_resolution=resolution, backend="reference", seed=0)
    reference.load_state_dict(G.state_dict())
    reference = reference.cuda().double()
    z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(1)).cuda()
    ws = G.mapping(z, None, truncation_psi=0.7)
    torch.manual_seed(2)
    actual = G.synthesis(ws, noise_mode="random", force_fp32=force_fp32)
    torch.manual_seed(2)
    expected = reference.synthesis(ws.double(), noise_mode="random")
    # fp16 blocks: the fp16 row of the table (their rounding dominates the chain).
    dtype = torch.float32 if force_fp32 or not G.config.synthesis.num_fp16_res else torch.float16
    assert_close(actual, expected, dtype=dtype, reduction_length=generator_reduction_length(G),
                 name=f"{preset} {resolution}^2 force_fp32={force_fp32}")
