"""Whole generators: the Triton backend and the reference backend with the same weights agree."""

import pytest
import torch

from sgtriton import build_generator
from sgtriton.testing import assert_close, generator_reduction_length

PRESETS = ["stylegan1", "revised", "stylegan2-b", "stylegan2-e", "stylegan2-f"]
SMALL = {"img_resolution": 16, "z_dim": 16, "w_dim": 12, "c_dim": 0, "mapping_kwargs": {"num_layers": 3},
         "synthesis_kwargs": {"channel_base": 128, "channel_max": 8}}


def pair(preset, device=None, **overrides):
    kwargs = {**SMALL, **overrides}
    reference = build_generator(preset, backend="reference", seed=0, **kwargs)
    triton = build_generator(preset, backend="triton", seed=0, **kwargs)
    # Non-trivial noise strengths, biases and w_avg so every epilogue term is exercised.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.endswith(("noise_strength", "noise_weight")) or (name.endswith("bias") and "affine" not in name):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        reference.mapping.w_avg.copy_(torch.randn(reference.w_dim, generator=gen))
    triton.load_state_dict(reference.state_dict())
    return reference.to(device), triton.to(device)


def check_images(reference, triton, ws, noise_mode, name):
    """The Triton synthesis from float32 ``ws`` against the float64 reference (same noise draws)."""
    torch.manual_seed(7)
    expected = reference.double().synthesis(ws.double(), noise_mode=noise_mode)
    torch.manual_seed(7)
    actual = triton.synthesis(ws, noise_mode=noise_mode)
    assert actual.dtype == torch.float32
    assert_close(actual, expected, dtype=torch.float32, reduction_length=generator_reduction_length(triton), name=name)
    if noise_mode == "random":  # the noise reached the image
        torch.manual_seed(8)
        assert (triton.synthesis(ws, noise_mode=noise_mode) - actual).abs().max() > 1e-4


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("noise_mode", ["const", "none"])
def test_triton_backend_matches_reference(preset, noise_mode, device):
    reference, triton = pair(preset, device)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(2)).to(device)
    psi, cutoff = 0.7, 3
    ws_ref = reference.mapping(z, None, truncation_psi=psi, truncation_cutoff=cutoff)
    ws_tri = triton.mapping(z, None, truncation_psi=psi, truncation_cutoff=cutoff)
    assert_close(ws_tri, ws_ref.double(), dtype=torch.float32, reduction_length=16, name=f"{preset} ws")
    check_images(reference, triton, ws_ref, noise_mode, f"{preset} {noise_mode} image")


@pytest.mark.parametrize("preset", PRESETS)
def test_conditional_clamped_generator_with_random_noise_matches_reference(preset, device):
    # A label, a conv_clamp small enough to cut activations on non-resnet networks, and random noise.
    reference, triton = pair(preset, device, c_dim=3, img_resolution=8,
                             synthesis_kwargs={"channel_base": 32, "channel_max": 4, "conv_clamp": 0.5})
    z, c = torch.randn(2, 16).to(device), torch.eye(3)[[0, 2]].to(device)
    ws_ref = reference.mapping(z, c, truncation_psi=0.8)
    assert_close(triton.mapping(z, c, truncation_psi=0.8), ws_ref.double(), dtype=torch.float32,
                 reduction_length=16, name=f"{preset} conditional ws")
    check_images(reference, triton, ws_ref, "random", f"{preset} conditional clamped image")


@pytest.mark.slow  # about 3 minutes under the interpreter; the gpu tier runs it compiled at full width
def test_adain_generator_at_128_matches_reference(device):
    # From 128^2 on StyleGAN1 fuses the up-sampling into its conv (FUSED_UP_RESOLUTION).
    reference, triton = pair("stylegan1", device, img_resolution=128,
                             synthesis_kwargs={"channel_base": 256, "channel_max": 2})
    ws = reference.mapping(torch.randn(1, 16).to(device), None)
    check_images(reference, triton, ws, "random", "stylegan1 128 image")


def test_conditional_resnet_generator_matches_reference(device):
    reference, triton = pair("stylegan2-f", device, c_dim=3,
                             synthesis_kwargs={"architecture": "resnet", "conv_clamp": 1.0,
                                               "channel_base": 128, "channel_max": 8})
    z, c = torch.randn(2, 16).to(device), torch.eye(3)[:2].to(device)
    expected = reference.double()(z.double(), c.double(), truncation_psi=0.5, noise_mode="const")
    actual = triton(z, c, truncation_psi=0.5, noise_mode="const")
    assert_close(actual, expected, dtype=torch.float32, reduction_length=generator_reduction_length(triton),
                 name="resnet conditional image")


def test_plan_lists_triton_kernels_and_launch_counts():
    from sgtriton.graph.plan import format_plan, meta_generator, plan_rows

    G = meta_generator("stylegan2-f", img_resolution=64, backend="triton")
    text = format_plan(G, plan_rows(G, "cpu"))
    assert "modconv2d_up2" in text and "torgb(+skip)" in text and "mapping_chain" in text


def record_launches(monkeypatch) -> list[str]:
    """Names of the declared kernels launched from now on (every launcher asks ``launch_config``)."""
    import sys

    from sgtriton.ops import _runtime

    launched, real = [], _runtime.launch_config

    def recording(spec, key):
        launched.append(spec.name)
        return real(spec, key)

    for module in list(sys.modules.values()):
        if getattr(module, "launch_config", None) is real:
            monkeypatch.setattr(module, "launch_config", recording)
    return launched


@pytest.mark.parametrize("preset, c_dim", [("stylegan1", 3), ("stylegan1", 0), ("stylegan2-f", 3),
                                           ("stylegan2-f", 0), ("revised", 3)])
def test_plan_lists_the_mapping_kernels_that_launch(preset, c_dim, monkeypatch, device):
    from collections import Counter

    from sgtriton.graph.plan import plan_rows
    from sgtriton.ops._runtime import KERNELS

    G = build_generator(preset, backend="triton", seed=0, **{**SMALL, "c_dim": c_dim}).to(device)
    rows = [row for row in plan_rows(G, device) if row.node.name.startswith("mapping.")]
    planned = Counter(k for row in rows for k in row.kernels if k in KERNELS)
    launched = record_launches(monkeypatch)
    z = torch.randn(2, 16, device=device)
    c = torch.eye(3, device=device)[:2] if c_dim else None
    G.mapping(z, c, truncation_psi=0.7)
    assert Counter(launched) == planned, f"plan lists {dict(planned)}, launched {launched}"
    listed = {k for row in rows for k in row.kernels}
    assert listed - set(KERNELS) <= {"matmul", "repeat"}, listed  # what is not a kernel is a plain torch op


@pytest.mark.parametrize("preset, architecture", [("stylegan2-f", "skip"), ("stylegan2-f", "resnet"),
                                                  ("stylegan1", "orig")])
def test_plan_launch_count_is_what_a_forward_launches(preset, architecture, monkeypatch, device):
    """``sgtriton plan``'s launches per forward = the Triton kernels a whole forward launches plus the
    plain torch ops the plan lists (the const's repeat)."""
    from sgtriton.graph.plan import TORCH_OPS, plan_rows, plan_totals

    synthesis = {**SMALL["synthesis_kwargs"], "architecture": architecture}
    G = build_generator(preset, backend="triton", seed=0, **{**SMALL, "synthesis_kwargs": synthesis}).to(device)
    rows = plan_rows(G, device)
    torch_ops = sum(k in TORCH_OPS for row in rows for k in row.kernels)
    launched = record_launches(monkeypatch)
    G(torch.randn(1, 16, device=device), None, noise_mode="const")
    assert len(launched) + torch_ops == plan_totals(G, rows)["launches_per_forward"], launched
