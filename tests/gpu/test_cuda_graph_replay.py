"""CUDA-graph replay of ``G.synthesis`` equals the eager forward bit for bit (skipped without CUDA).

``stylegan2-f`` at 256^2, batch 1, on the Triton kernels: NVlabs mixed fp16 (the preset's fp16
blocks) and fp32 (``force_fp32``), noise ``const`` and per-sample ``random``; the global-RNG
``random`` noise differs per replay; an in-place weight update is seen (the graph is recaptured).
"""

from __future__ import annotations

import pytest
import torch

from sgtriton import CudaGraphSynthesis, build_generator
from sgtriton.blocks.layers import per_sample_noise

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def G():
    return build_generator("stylegan2-f", img_resolution=256, seed=0, backend="triton", device="cuda")


def _ws(G, seed: int = 0) -> torch.Tensor:
    z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(seed)).cuda()
    return G.mapping(z, None)


@pytest.mark.parametrize("force_fp32", [False, True], ids=["fp16", "fp32"])
def test_replay_equals_eager_bit_for_bit(G, force_fp32):
    graphed = CudaGraphSynthesis(G.synthesis)
    for seed in (0, 1, 2):  # the first call captures, the others replay with new ws
        ws = _ws(G, seed)
        eager = G.synthesis(ws, noise_mode="const", force_fp32=force_fp32)
        again = G.synthesis(ws, noise_mode="const", force_fp32=force_fp32)
        assert torch.equal(again, eager), "the eager forward is not deterministic: nothing to compare bits with"
        replay = graphed(ws, noise_mode="const", force_fp32=force_fp32)
        assert replay.dtype == eager.dtype == torch.float32
        assert torch.equal(replay, eager), (seed, (replay - eager).abs().max().item())
    assert graphed.captures == 1


def test_per_sample_noise_replays_the_eager_noise(G):
    graphed = CudaGraphSynthesis(G.synthesis)
    ws = _ws(G)
    for seed in (3, 4):
        with per_sample_noise([torch.Generator().manual_seed(seed)]):
            eager = G.synthesis(ws, noise_mode="random")
        with per_sample_noise([torch.Generator().manual_seed(seed)]):
            replay = graphed(ws, noise_mode="random")
        assert torch.equal(replay, eager)


def test_global_rng_noise_differs_per_replay(G):
    graphed = CudaGraphSynthesis(G.synthesis)
    ws = _ws(G)
    first, second = graphed(ws, noise_mode="random"), graphed(ws, noise_mode="random")
    assert not torch.equal(first, second)
    assert torch.equal(graphed(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"))


def test_an_in_place_weight_update_is_seen(G):
    graphed = CudaGraphSynthesis(G.synthesis)
    ws = _ws(G)
    graphed(ws, noise_mode="const")
    conv = G.synthesis.b64.conv0  # an up=2 layer: its phase weights are derived from the weight
    saved = conv.weight.detach().clone()
    try:
        with torch.no_grad():
            conv.weight.mul_(1.5)
        assert torch.equal(graphed(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"))
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved)
