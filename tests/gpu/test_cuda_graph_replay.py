"""CUDA-graph replay of ``G.synthesis`` equals the eager forward bit for bit (skipped without CUDA).

``stylegan2-f`` at 256^2, batch 1, on the Triton kernels: NVlabs mixed fp16 (``num_fp16_res=4,
conv_clamp=256``: the four highest resolutions in fp16) and fp32, noise ``const`` and per-sample
``random``; the global-RNG ``random`` noise differs per replay; an in-place weight update is seen
(the graph is recorded again).
"""

from __future__ import annotations

import pytest
import torch

from sgtriton import CudaGraphSynthesis, build_generator
from sgtriton.blocks.layers import per_sample_noise

pytestmark = pytest.mark.gpu


MIXED_FP16 = {"num_fp16_res": 4, "conv_clamp": 256}


def generator(fp16: bool):
    return build_generator("stylegan2-f", img_resolution=256, seed=0, backend="triton", device="cuda",
                           **(MIXED_FP16 if fp16 else {}))


@pytest.fixture(scope="module")
def G():
    return generator(fp16=True)


def _ws(G, seed: int = 0) -> torch.Tensor:
    z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(seed)).cuda()
    return G.mapping(z, None)


@pytest.mark.parametrize("fp16", [True, False], ids=["fp16", "fp32"])
def test_replay_equals_eager_bit_for_bit(G, fp16):
    G = G if fp16 else generator(fp16=False)
    assert G.synthesis.b256.use_fp16 == fp16
    graphed = CudaGraphSynthesis(G.synthesis)
    for seed in (0, 1, 2):  # the first call captures, the others replay with new ws
        ws = _ws(G, seed)
        eager = G.synthesis(ws, noise_mode="const")
        again = G.synthesis(ws, noise_mode="const")
        assert torch.equal(again, eager), "the eager forward is not deterministic: nothing to compare bits with"
        replay = graphed(ws, noise_mode="const")
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
    before = graphed(ws, noise_mode="const")
    conv = G.synthesis.b64.conv0  # an up=2 layer: its phase weights are derived from the weight
    saved = conv.weight.detach().clone()
    try:
        with torch.no_grad():
            conv.weight[:, :1].mul_(3)  # not a uniform scale, which demodulation cancels
        after = graphed(ws, noise_mode="const")
        assert torch.equal(after, G.synthesis(ws, noise_mode="const")) and not torch.equal(after, before)
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved)
