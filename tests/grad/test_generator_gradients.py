"""Whole generators of every preset: gradients through the Triton backend == float64 reference autograd.

Gradients of ``sum(img * c)`` w.r.t. the latents ``ws``, every parameter and every stored noise
buffer, and (StyleGAN2's path-length regulariser) the parameter gradients of
``|d sum(img * y) / d ws|``, which backpropagate through the backward. Tiny channels at 8x8 keep the
interpreter fast. Reduction length: the image's forward length along the chain of layers plus, for a
gradient element, every image element reached through every channel of every style layer
(:func:`~sgtriton.testing.gradients.backward_reduction_length` with the layers' widest channel count).
"""

import pytest
import torch

from sgtriton import build_generator
from sgtriton.testing import assert_close, generator_reduction_length
from sgtriton.testing.gradients import backward_reduction_length, seeded_like

PRESETS = ["stylegan1", "revised", "stylegan2-b", "stylegan2-e", "stylegan2-f"]
CHANNELS = 4
SMALL = {"img_resolution": 8, "z_dim": 8, "w_dim": 6, "c_dim": 0, "mapping_kwargs": {"num_layers": 2},
         "synthesis_kwargs": {"channel_base": 8 * CHANNELS, "channel_max": CHANNELS}}


def trainable_pair(preset, device):
    """Reference (float64) and Triton generators with the same non-trivial weights, gradients enabled."""
    reference = build_generator(preset, backend="reference", seed=0, **SMALL)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.endswith(("noise_strength", "noise_weight")) or (name.endswith("bias") and "affine" not in name):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            if name.endswith(".const"):
                p.copy_(torch.randn(p.shape, generator=gen))
        reference.mapping.w_avg.copy_(torch.randn(reference.w_dim, generator=gen))
    triton = build_generator(preset, backend="triton", seed=0, **SMALL)
    triton.load_state_dict(reference.state_dict())
    reference = reference.double()
    for G in (reference, triton):
        G.to(device).requires_grad_(True)
        for name, b in G.named_buffers():
            if "noise_const" in name:
                b.requires_grad_(True)
    return reference, triton


def gradient_targets(G):
    return {**{f"param:{n}": p for n, p in G.named_parameters()},
            **{f"buffer:{n}": b for n, b in G.named_buffers() if "noise_const" in n}}


def image_gradients(G, z, dtype):
    ws = G.mapping(z.to(dtype), None, truncation_psi=0.7, truncation_cutoff=2)
    img = G.synthesis(ws, noise_mode="const")
    targets = {"ws": ws, **gradient_targets(G)}
    loss = (img.double() * seeded_like(img, 3)).sum()
    grads = torch.autograd.grad(loss, list(targets.values()), allow_unused=True)
    return img, dict(zip(targets, grads, strict=True))


def path_length_gradients(G, ws):
    """NVlabs' path-length penalty on ``ws``, differentiated w.r.t. the synthesis parameters."""
    ws = ws.detach().requires_grad_()
    img = G.synthesis(ws, noise_mode="const")
    pl_noise = seeded_like(img, 5).to(img.dtype) / img.shape[2]
    (pl_grads,) = torch.autograd.grad((img * pl_noise).sum(), ws, create_graph=True)
    penalty = pl_grads.square().sum(2).mean(1).sqrt().mean()
    targets = {f"param:{n}": p for n, p in G.synthesis.named_parameters()}
    grads = torch.autograd.grad(penalty, list(targets.values()), allow_unused=True)
    return dict(zip(targets, grads, strict=True))


def compare(actual, expected, length, what):
    for key, want in expected.items():
        if want is None:
            continue
        got = actual[key] if actual[key] is not None else torch.zeros_like(want)
        assert_close(got, want, dtype=torch.float32, reduction_length=length, name=f"{what} d{key}")


@pytest.mark.parametrize("preset", PRESETS)
def test_generator_gradients_match_reference(device, preset):
    reference, triton = trainable_pair(preset, device)
    z = torch.randn(2, SMALL["z_dim"], generator=torch.Generator().manual_seed(2)).to(device)
    img, actual = image_gradients(triton, z, torch.float32)
    _, expected = image_gradients(reference, z, torch.float64)
    length = backward_reduction_length(generator_reduction_length(triton), img.numel(), CHANNELS)
    compare(actual, expected, length, f"{preset} image")


@pytest.mark.parametrize("preset", ["stylegan2-f", "revised"])
def test_path_length_double_backward_matches_reference(device, preset):
    reference, triton = trainable_pair(preset, device)
    ws = torch.randn(2, triton.num_ws, SMALL["w_dim"], generator=torch.Generator().manual_seed(4)).to(device)
    actual = path_length_gradients(triton, ws)
    expected = path_length_gradients(reference, ws.double())
    img_numel = 2 * triton.img_channels * SMALL["img_resolution"] ** 2
    length = backward_reduction_length(generator_reduction_length(triton), img_numel, CHANNELS, order=2)
    compare(actual, expected, length, f"{preset} path length")
