"""Generators run under ``torch.compile`` (kernels are opaque ``torch.library`` custom ops)."""

import pytest
import torch

from sgtriton import build_generator

SMALL = {"img_resolution": 8, "z_dim": 8, "w_dim": 8, "mapping_kwargs": {"num_layers": 2},
         "synthesis_kwargs": {"channel_base": 64, "channel_max": 4}}


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_torch_compile_gives_the_eager_images(backend):
    G = build_generator("stylegan2-f", backend=backend, seed=0, **SMALL)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    eager = G(z, None, truncation_psi=0.7, noise_mode="const")
    compiled = torch.compile(G, backend="aot_eager")(z, None, truncation_psi=0.7, noise_mode="const")
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6)
