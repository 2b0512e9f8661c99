"""``moddemod`` generators against an independent, straightforward re-expression of the NVlabs
StyleGAN2 PyTorch semantics (spec §1-3), written here from the documented formulas:

* FC: ``y = x @ (W * lr / sqrt(in))^T + b * lr``; mapping layers ``sqrt 2 * lrelu(., 0.2)``, lr 0.01;
  ``z`` and the embedded label are pixel-normalised separately, then concatenated;
  truncation ``w_avg + psi (w - w_avg)`` on ws ``[:cutoff]`` (all when cutoff is None);
* layer: ``s = affine(w)``; per sample ``W'[o,i,k] = W[o,i,k] s[i]``, ``W'' = W' rsqrt(sum W'^2 + 1e-8)``;
  up=1: ``conv2d(x, W'', padding=1)``; up=2: ``conv_transpose2d(x, W''^T, stride=2)`` (no flip,
  ``(2H+1)^2``) then per axis ``y[n] = (t[n-1] + 3 t[n] + 3 t[n+1] + t[n+2]) / 4``, zero outside;
  ``+ noise_strength * noise`` -> ``sqrt 2 * gain * lrelu(. + bias)`` -> clamp ``+-conv_clamp * gain``;
* ToRGB: ``s = affine(w) / sqrt(I)``, 1x1 conv without demodulation, + bias, clamp ``conv_clamp``;
* image up-sampling: per axis ``y[2i] = (x[i-1] + 3 x[i]) / 4``, ``y[2i+1] = (3 x[i] + x[i+1]) / 4``;
* resnet: ``skip = upsample(conv1x1(x, W / sqrt(I))) * sqrt(.5)``, ``conv1`` with gain ``sqrt(.5)``;
* w indexing: block ``b_r`` reads ``ws[idx], ws[idx+1]`` for conv0/conv1 and ``ws[idx+2]`` for its
  ToRGB (= next conv0's w); ``'random'`` noise is one ``randn([N, 1, r, r])`` per layer in order
  ``b4.conv1, b8.conv0, b8.conv1, ...``.

Checked by hand against NVlabs stylegan2-ada-pytorch (d72cc7d) and stylegan3 (c233a91) on CPU:
max relative image error ~1.6e-6, ws bit-identical (see the review notes); this file pins the
same semantics without the original code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import sgtriton
from sgtriton.ops.upfirdn2d import setup_filter, upsample2d

SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------------
# Independent float64 reference.

def ref_fc(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lr: float = 1.0) -> torch.Tensor:
    return x @ (w * (lr / math.sqrt(w.shape[1]))).t() + b * lr


def ref_lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, 0.2 * x)


def ref_pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x / (x.square().mean(dim=1, keepdim=True) + 1e-8).sqrt()


def ref_axis_fir_after_transpose(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Length ``2H+1`` -> ``2H``: ``y[n] = (t[n-1] + 3 t[n] + 3 t[n+1] + t[n+2]) / 4``."""
    t = t.movedim(dim, -1)
    tp = F.pad(t, [1, 1])  # tp[j] = t[j-1]
    n = t.shape[-1] - 1
    y = (tp[..., 0:n] + 3 * tp[..., 1:n + 1] + 3 * tp[..., 2:n + 2] + tp[..., 3:n + 3]) / 4
    return y.movedim(-1, dim)


def ref_upsample_image(x: torch.Tensor) -> torch.Tensor:
    """Per axis ``y[2i] = (x[i-1] + 3 x[i]) / 4``, ``y[2i+1] = (3 x[i] + x[i+1]) / 4``, zeros outside."""
    for dim in (2, 3):
        x = x.movedim(dim, -1)
        xp = F.pad(x, [1, 1])
        even = (xp[..., :-2] + 3 * x) / 4
        odd = (3 * x + xp[..., 2:]) / 4
        x = torch.stack([even, odd], dim=-1).flatten(-2).movedim(-1, dim)
    return x


def ref_modconv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, up: int,
                demodulate: bool = True) -> torch.Tensor:
    """Explicit per-sample weights; 3x3 conv (up=1) or transposed conv + FIR (up=2)."""
    out = []
    for n in range(x.shape[0]):
        wn = weight * styles[n][None, :, None, None]
        if demodulate:
            wn = wn / (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        if up == 1:
            y = F.conv2d(x[n:n + 1], wn, padding=1)
        else:
            y = F.conv_transpose2d(x[n:n + 1], wn.transpose(0, 1), stride=2)
            y = ref_axis_fir_after_transpose(ref_axis_fir_after_transpose(y, 2), 3)
        out.append(y)
    return torch.cat(out)


def ref_layer(p: dict, x: torch.Tensor, w: torch.Tensor, up: int, noise: torch.Tensor | None,
              conv_clamp: float | None, gain: float = 1.0) -> torch.Tensor:
    y = ref_modconv(x, p["weight"], ref_fc(w, p["affine.weight"], p["affine.bias"]), up)
    if noise is not None:
        y = y + noise * p["noise_strength"]
    y = ref_lrelu(y + p["bias"][None, :, None, None]) * (SQRT2 * gain)
    return y.clamp(-conv_clamp * gain, conv_clamp * gain) if conv_clamp is not None else y


def ref_torgb(p: dict, x: torch.Tensor, w: torch.Tensor, conv_clamp: float | None) -> torch.Tensor:
    styles = ref_fc(w, p["affine.weight"], p["affine.bias"]) / math.sqrt(x.shape[1])
    y = torch.einsum("nihw,oi->nohw", x * styles[:, :, None, None], p["weight"][:, :, 0, 0])
    y = y + p["bias"][None, :, None, None]
    return y.clamp(-conv_clamp, conv_clamp) if conv_clamp is not None else y


def ref_mapping(sd: dict, z: torch.Tensor, c: torch.Tensor | None, num_layers: int, num_ws: int,
                psi: float, cutoff: int | None) -> torch.Tensor:
    x = ref_pixel_norm(z)
    if c is not None:
        y = ref_fc(c, sd["mapping.embed.weight"], sd["mapping.embed.bias"])
        x = torch.cat([x, ref_pixel_norm(y)], dim=1)
    for i in range(num_layers):
        x = ref_lrelu(ref_fc(x, sd[f"mapping.fc{i}.weight"], sd[f"mapping.fc{i}.bias"], 0.01)) * SQRT2
    x = x[:, None].repeat(1, num_ws, 1)
    avg = sd["mapping.w_avg"]
    cut = num_ws if cutoff is None else cutoff
    x[:, :cut] = avg + psi * (x[:, :cut] - avg)
    return x


def ref_synthesis(sd: dict, ws: torch.Tensor, resolution: int, arch: str, conv_clamp: float | None,
                  noise_mode: str, random_noise: list[torch.Tensor] | None = None) -> torch.Tensor:
    def sub(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

    noises = iter(random_noise or [])

    def noise(prefix: str) -> torch.Tensor | None:
        if noise_mode == "random":
            return next(noises)
        return sd[prefix + "noise_const"] if noise_mode == "const" else None

    x = sd["synthesis.b4.const"][None].repeat(ws.shape[0], 1, 1, 1)
    img = None
    idx = 0
    for k in range(2, int(math.log2(resolution)) + 1):
        r = 2**k
        b = f"synthesis.b{r}."
        if r == 4:
            x = ref_layer(sub(b + "conv1."), x, ws[:, idx], 1, noise(b + "conv1."), conv_clamp)
            idx += 1
        else:
            y = None
            if arch == "resnet":
                wk = sd[b + "skip.weight"][:, :, 0, 0] / math.sqrt(x.shape[1])
                y = ref_upsample_image(torch.einsum("nihw,oi->nohw", x, wk)) * math.sqrt(0.5)
            x = ref_layer(sub(b + "conv0."), x, ws[:, idx], 2, noise(b + "conv0."), conv_clamp)
            gain = math.sqrt(0.5) if arch == "resnet" else 1.0
            x = ref_layer(sub(b + "conv1."), x, ws[:, idx + 1], 1, noise(b + "conv1."), conv_clamp, gain)
            x = x if y is None else y + x
            idx += 2
        if img is not None:
            img = ref_upsample_image(img)
        if arch == "skip" or r == resolution:
            t = ref_torgb(sub(b + "torgb."), x, ws[:, idx], conv_clamp)
            img = t if img is None else img + t
    return img


def expected_state_dict_keys(resolution: int, arch: str, c_dim: int, num_layers: int) -> list[str]:
    """NVlabs ``G_ema.state_dict()`` key order (spec §3.12): synthesis first, then mapping."""
    layer = ["weight", "noise_strength", "bias", "resample_filter", "noise_const",
             "affine.weight", "affine.bias"]
    torgb = ["weight", "bias", "affine.weight", "affine.bias"]
    keys = ["synthesis.b4.const", "synthesis.b4.resample_filter"]
    keys += [f"synthesis.b4.conv1.{n}" for n in layer]
    if arch == "skip" or resolution == 4:
        keys += [f"synthesis.b4.torgb.{n}" for n in torgb]
    for k in range(3, int(math.log2(resolution)) + 1):
        b = f"synthesis.b{2**k}"
        keys += [f"{b}.resample_filter"]
        keys += [f"{b}.conv0.{n}" for n in layer] + [f"{b}.conv1.{n}" for n in layer]
        if arch == "skip" or 2**k == resolution:
            keys += [f"{b}.torgb.{n}" for n in torgb]
        if arch == "resnet":
            keys += [f"{b}.skip.weight", f"{b}.skip.resample_filter"]
    keys += ["mapping.w_avg"]
    if c_dim:
        keys += ["mapping.embed.weight", "mapping.embed.bias"]
    for i in range(num_layers):
        keys += [f"mapping.fc{i}.weight", f"mapping.fc{i}.bias"]
    return keys


# ----------------------------------------------------------------------------------------------

def make_generator(arch: str, resolution: int, c_dim: int, img_channels: int, num_layers: int,
                   conv_clamp: float | None, num_fp16_res: int = 0) -> sgtriton.Generator:
    G = sgtriton.build_generator(
        None, block="moddemod", z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=resolution,
        img_channels=img_channels, mapping_kwargs={"num_layers": num_layers},
        synthesis_kwargs={"channel_base": 128, "channel_max": 8, "architecture": arch,
                          "conv_clamp": conv_clamp, "num_fp16_res": num_fp16_res},
        seed=0,
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # make every bias, noise strength and w_avg matter
        for name, t in G.state_dict().items():
            if name.endswith(("noise_strength", ".bias", "w_avg")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5 + (1.0 if "affine.bias" in name else 0.0))
    return G


CASES = [
    # arch, resolution, c_dim, img_channels, mapping layers, conv_clamp, num_fp16_res
    ("skip", 4, 0, 3, 2, None, 0),
    ("skip", 16, 3, 3, 8, None, 0),
    ("skip", 32, 0, 1, 2, 0.5, 2),
    ("orig", 8, 0, 3, 2, None, 0),
    ("orig", 32, 3, 1, 8, 256.0, 2),
    ("resnet", 8, 3, 3, 2, 0.5, 0),
    ("resnet", 32, 0, 3, 8, None, 2),
]


@pytest.mark.parametrize("arch, resolution, c_dim, img_channels, num_layers, conv_clamp, num_fp16_res", CASES)
def test_generator_matches_reference(arch, resolution, c_dim, img_channels, num_layers, conv_clamp,
                                     num_fp16_res, device) -> None:
    G = make_generator(arch, resolution, c_dim, img_channels, num_layers, conv_clamp, num_fp16_res)
    assert sum(getattr(G.synthesis, f"b{r}").use_fp16 for r in G.synthesis.block_resolutions) == num_fp16_res
    assert list(G.state_dict()) == expected_state_dict_keys(resolution, arch, c_dim, num_layers)
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    sd = {k: v.double() for k, v in G.state_dict().items()}
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    c = F.one_hot(torch.tensor([0, 2, 1]), c_dim).float() if c_dim else None
    c64 = c.double() if c_dim else None

    for psi, cutoff in [(1.0, None), (0.7, None), (0.7, 3)]:
        ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        expected = ref_mapping(sd, z.double(), c64, num_layers, G.num_ws, psi, cutoff)
        torch.testing.assert_close(ws.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    G, ws = G.to(device), ws.to(device)
    # The fp16 blocks compute in half precision on CUDA (float32 elsewhere): a looser bound there.
    half = device.type == "cuda" and num_fp16_res > 0

    for noise_mode in ("const", "none", "random"):
        noises = None
        if noise_mode == "random":
            torch.manual_seed(123)
            noises = [torch.randn([3, 1, 2**k, 2**k], device=device).double().cpu()
                      for k in range(2, int(math.log2(resolution)) + 1) for _ in range(1 if k == 2 else 2)]
        expected = ref_synthesis(sd, ws.double().cpu(), resolution, arch, conv_clamp, noise_mode, noises)
        scale = expected.abs().max().item()
        for fused, force_fp32 in ((True, False), (False, False), (None, False), (None, True)):
            torch.manual_seed(123)
            img = G.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused, force_fp32=force_fp32)
            assert img.dtype == torch.float32
            err = (img.double().cpu() - expected).abs().max().item()
            bound = (2e-2 if half and not force_fp32 else 1e-5) * scale
            assert err <= bound, (f"{noise_mode} fused={fused} force_fp32={force_fp32}: max abs error {err:.3e}, "
                                  f"max|ref| {scale:.3e}")


def test_samples_are_independent_of_the_batch() -> None:
    G = make_generator("skip", 16, 0, 3, 2, None)
    ws = G.mapping(torch.randn(4, 8), None)
    full = G.synthesis(ws, noise_mode="const")
    for n in range(4):
        one = G.synthesis(ws[n:n + 1], noise_mode="const", fused_modconv=True)
        torch.testing.assert_close(one[0], full[n], rtol=1e-5, atol=1e-5)


def test_upsample2d_constant_border_factors() -> None:
    f = setup_filter([1, 3, 3, 1])
    assert torch.equal(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    y = upsample2d(torch.ones(1, 1, 5, 5), f)[0, 0]
    edge = torch.tensor([0.75] + [1.0] * 8 + [0.75])
    torch.testing.assert_close(y, torch.outer(edge, edge))  # 3/4 on edges, 9/16 in corners
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(upsample2d(x, f.double()), ref_upsample_image(x))


def test_torgb_shares_w_with_next_conv0() -> None:
    G = make_generator("skip", 32, 0, 3, 2, None)
    nodes = {n.name: n for n in G.graph.synthesis_nodes}
    for r in (4, 8, 16):
        assert nodes[f"synthesis.b{r}.torgb"].w_index == nodes[f"synthesis.b{2 * r}.conv0"].w_index
    assert nodes["synthesis.b32.torgb"].w_index == G.num_ws - 1


@pytest.mark.parametrize("up", [1, 2])
def test_revised_layer_matches_fig_2c(up: int) -> None:
    """``revised``: modulate (scale only) -> conv -> divide by the per-(n, c) RMS over the map ->
    + noise -> sqrt 2 * lrelu(. + bias); same parameter names and up-sampling as ``moddemod``."""
    G = sgtriton.build_generator("revised", z_dim=8, w_dim=8, img_resolution=16,
                                 synthesis_kwargs={"channel_base": 64, "channel_max": 4}, seed=0)
    layer = G.synthesis.b16.conv0 if up == 2 else G.synthesis.b16.conv1
    with torch.no_grad():
        layer.noise_strength.fill_(0.7)
        layer.bias.normal_()
    p = {k: v.double() for k, v in layer.state_dict().items()}
    x = torch.randn(3, layer.in_channels, 16 // up, 16 // up)
    w = torch.randn(3, 8)
    y = ref_modconv(x.double(), p["weight"], ref_fc(w.double(), p["affine.weight"], p["affine.bias"]), up,
                    demodulate=False)
    y = y / (y.square().mean(dim=[2, 3], keepdim=True) + 1e-8).sqrt()
    y = ref_lrelu(y + p["noise_const"] * p["noise_strength"] + p["bias"][None, :, None, None]) * SQRT2
    for fused in (True, False):
        got = layer(x, w, noise_mode="const", fused_modconv=fused)
        torch.testing.assert_close(got.double(), y, rtol=1e-5, atol=1e-5)
    assert not hasattr(G.synthesis.b4, "input")  # the const feeds conv1 directly
