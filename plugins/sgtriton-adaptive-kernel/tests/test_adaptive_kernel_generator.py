"""End to end: a stylegan2-f generator built with ``block="adaptive-kernel"`` generates the same images on
the reference and Triton backends, both judged against the float64 reference with the tolerance table.

Small channel counts keep the interpreter fast; 64x64 is the resolution the acceptance names.
"""

from __future__ import annotations

import copy

import pytest
import sgtriton
import torch
from sgtriton.testing import assert_close


def generator(resolution: int, bank_size: int = 4) -> sgtriton.Generator:
    G = sgtriton.build_generator(
        "stylegan2-f", backend="reference", seed=0, img_resolution=resolution, z_dim=32, w_dim=32,
        mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 64, "channel_max": 16},
        block="adaptive-kernel", block_kwargs={"bank_size": bank_size},
    )
    with torch.no_grad():  # exercise noise and a sample-dependent selection (both start neutral)
        for name, parameter in G.named_parameters():
            if name.endswith("noise_strength"):
                parameter.fill_(0.1)
            elif ".selector." in name:
                parameter.normal_()
    return G


@pytest.mark.parametrize("resolution, batch", [(16, 2), (64, 1)])
def test_reference_and_triton_generators_agree(resolution, batch, device):
    G = generator(resolution)
    G_triton = copy.deepcopy(G).set_backend("triton").to(device)
    G_float64 = copy.deepcopy(G).double()
    z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(resolution))

    reference = G(z, None, noise_mode="const")
    triton = G_triton(z.to(device), None, noise_mode="const")
    expected = G_float64(z.double(), None, noise_mode="const")

    assert triton.shape == (batch, 3, resolution, resolution) and triton.dtype == torch.float32
    assert torch.isfinite(triton).all() and triton.std() > 0
    K = max(G.graph.block_type.reduction_length(node) for node in G.graph.nodes if node.kind in ("conv", "torgb"))
    assert_close(triton, expected, dtype=torch.float32, reduction_length=K, name=f"triton generator {resolution}^2")
    assert_close(reference, expected, dtype=torch.float32, reduction_length=K,
                 name=f"reference generator {resolution}^2")
