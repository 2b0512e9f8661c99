"""The adaptive-kernel block can be captured in a CUDA graph: after one warm-up its forward does
device work only (no host syncs, no host-made tensors), on the Triton and the reference backend."""

from __future__ import annotations

import pytest
import sgtriton
import torch
from sgtriton.testing import no_host_syncs


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_synthesis_does_no_host_work_after_warmup(backend):
    G = sgtriton.build_generator(
        "stylegan2-f", backend=backend, seed=0, img_resolution=8, z_dim=8, w_dim=8,
        mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 64, "channel_max": 8},
        block="adaptive-kernel",
    )
    ws = torch.randn(2, G.num_ws, G.w_dim)
    warm = G.synthesis(ws, noise_mode="const")
    with no_host_syncs():
        again = G.synthesis(ws, noise_mode="const")
        G.synthesis(ws, noise_mode="random")
    assert torch.equal(again, warm)
