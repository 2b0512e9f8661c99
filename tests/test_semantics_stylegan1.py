"""StyleGAN1 (``adain`` block, ``stylegan1`` preset) against an independent NumPy re-expression
of the TensorFlow graph of NVlabs ``training/networks_stylegan.py`` (spec §7).

The reference below is written from the documented TF formulas only, in float64, with TF's
variable names and layouts (dense ``[in, out]``, conv ``[kh, kw, in, out]``, transposed-conv
filter ``[kh, kw, out, in]``):

* ``get_weight``: runtime weight ``= stored * gain / sqrt(fan_in) * lrmul``; biases ``* lrmul``;
* mapping: ``pixel_norm(concat(z, c @ LabelConcat))`` -> ``Dense{i}`` with gain sqrt 2 in the
  weight, lrmul 0.01, ``lrelu(0.2)`` without output gain;
* truncation (``G_style``): ``w_l = avg + coef_l (w_l - avg)``, ``coef_l = psi`` for ``l < cutoff``;
* layer epilogue: ``+ noise * Noise/weight[c]`` -> ``+ bias`` -> lrelu -> instance norm (eps 1e-8)
  -> ``x * (style[:, :C] + 1) + style[:, C:]``, ``style = w @ (StyleMod/weight / sqrt(w_dim)) + b``;
* 4x4: ``Const/const`` -> epilogue 0 -> ``Conv`` 3x3 SAME -> epilogue 1;
* block ``2^k``: ``Conv0_up`` -> ``Blur2D`` ([1,2,1]^2 / 16, SAME) -> epilogue ``2k-4``; ``Conv1`` ->
  epilogue ``2k-3``; ``Conv0_up`` is nearest x2 + 3x3 SAME conv below 128^2 and, from 128^2 on,
  ``tf.nn.conv2d_transpose(stride 2, SAME)`` with the 4x4 filter = sum of the four one-pixel
  shifts of the zero-padded (transposed) 3x3 filter. ``conv2d_transpose`` is the adjoint of the
  strided SAME ``conv2d`` (pad 1 before for a 4-tap filter at stride 2), implemented as a scatter;
* ``ToRGB_lod0``: 1x1 conv (gain 1) + bias, linear.

It then maps the TF variables onto sgtriton's state dict (conv weights ``permute(3, 2, 0, 1)``,
no flip; dense weights transposed; ``noise{i}`` -> the ``noise_const`` of layer ``i``) and
compares images and ws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sgtriton
from sgtriton.blocks.adain import AdaINLayer, fused_upconv_kernel
from sgtriton.blocks.nodes import LayerNode

SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------------
# NumPy re-expression of the TF StyleGAN1 ops (float64, NCHW).

def np_weight(stored: np.ndarray, gain: float, lrmul: float = 1.0) -> np.ndarray:
    fan_in = int(np.prod(stored.shape[:-1]))
    return stored * (gain / math.sqrt(fan_in) * lrmul)


def np_lrelu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.2 * x)


def np_pixel_norm(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x**2, axis=1, keepdims=True) + 1e-8)


def np_conv2d_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """TF ``conv2d`` SAME, stride 1, odd kernel: ``y[o,p] = sum_{a,i} x[i, p + a - k//2] w[a, i, o]``."""
    k = w.shape[0]
    p = k // 2
    n, _, h, wd = x.shape
    xp = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p)])
    y = np.zeros((n, w.shape[3], h, wd))
    for a in range(k):
        for b in range(k):
            y += np.einsum("nihw,io->nohw", xp[:, :, a:a + h, b:b + wd], w[a, b])
    return y


def np_conv2d_transpose_s2_same(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """TF ``conv2d_transpose`` stride 2 SAME, filter ``[4, 4, out, in]``: output ``2H x 2W``.

    Adjoint of ``conv2d(y, f, stride 2, SAME)`` on a ``2H`` input, whose SAME padding is 1 before
    (``((H-1)*2 + 4 - 2H) // 2``): ``y[o, 2p + a - 1] += x[i, p] f[a, i->o]``.
    """
    n, _, h, wd = x.shape
    k = f.shape[0]
    acc = np.zeros((n, f.shape[2], 2 * h + k, 2 * wd + k))
    for a in range(k):
        for b in range(k):
            acc[:, :, a:a + 2 * h:2, b:b + 2 * wd:2] += np.einsum("nihw,oi->nohw", x, f[a, b])
    return acc[:, :, 1:1 + 2 * h, 1:1 + 2 * wd]


def np_upscale_nearest(x: np.ndarray) -> np.ndarray:
    return x.repeat(2, axis=2).repeat(2, axis=3)


def np_blur(x: np.ndarray) -> np.ndarray:
    f = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0
    _, _, h, wd = x.shape
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    return sum(f[a, b] * xp[:, :, a:a + h, b:b + wd] for a in range(3) for b in range(3))


def np_upscale2d_conv2d(x: np.ndarray, stored: np.ndarray, fused: bool) -> np.ndarray:
    w = np_weight(stored, SQRT2)  # [3, 3, in, out]
    if not fused:
        return np_conv2d_same(np_upscale_nearest(x), w)
    w = w.transpose(0, 1, 3, 2)  # [3, 3, out, in]
    w = np.pad(w, [(1, 1), (1, 1), (0, 0), (0, 0)])
    w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]
    return np_conv2d_transpose_s2_same(x, w)


def np_epilogue(x: np.ndarray, v: dict, scope: str, noise: np.ndarray | None,
                dlatent: np.ndarray) -> np.ndarray:
    if noise is not None:
        x = x + noise * v[f"{scope}/Noise/weight"].reshape(1, -1, 1, 1)
    x = x + v[f"{scope}/bias"].reshape(1, -1, 1, 1)
    x = np_lrelu(x)
    x = x - x.mean(axis=(2, 3), keepdims=True)
    x = x / np.sqrt(np.mean(x**2, axis=(2, 3), keepdims=True) + 1e-8)
    c = x.shape[1]
    style = dlatent @ np_weight(v[f"{scope}/StyleMod/weight"], 1.0) + v[f"{scope}/StyleMod/bias"]
    style = style.reshape(-1, 2, c, 1, 1)
    return x * (style[:, 0] + 1) + style[:, 1]


def np_mapping(v: dict, z: np.ndarray, labels: np.ndarray | None, num_layers: int, num_ws: int,
               psi: float | None, cutoff: int | None) -> np.ndarray:
    x = z
    if labels is not None:
        x = np.concatenate([x, labels @ v["LabelConcat/weight"]], axis=1)
    x = np_pixel_norm(x)
    for i in range(num_layers):
        x = x @ np_weight(v[f"Dense{i}/weight"], SQRT2, 0.01) + v[f"Dense{i}/bias"] * 0.01
        x = np_lrelu(x)
    x = np.repeat(x[:, None], num_ws, axis=1)
    if psi is not None and cutoff is not None:  # G_style: both must be set
        coefs = np.where(np.arange(num_ws)[None, :, None] < cutoff, psi, 1.0)
        x = v["dlatent_avg"] + (x - v["dlatent_avg"]) * coefs
    return x


def np_synthesis(v: dict, dlatents: np.ndarray, resolution: int, noise: str) -> np.ndarray:
    def nz(i: int) -> np.ndarray | None:
        return v[f"noise{i}"] if noise == "const" else None

    x = np.tile(v["4x4/Const/const"], [dlatents.shape[0], 1, 1, 1])
    x = np_epilogue(x, v, "4x4/Const", nz(0), dlatents[:, 0])
    x = np_conv2d_same(x, np_weight(v["4x4/Conv/weight"], SQRT2))
    x = np_epilogue(x, v, "4x4/Conv", nz(1), dlatents[:, 1])
    for k in range(3, int(math.log2(resolution)) + 1):
        s = f"{2**k}x{2**k}"
        fused = x.shape[2] * 2 >= 128
        x = np_blur(np_upscale2d_conv2d(x, v[f"{s}/Conv0_up/weight"], fused))
        x = np_epilogue(x, v, f"{s}/Conv0_up", nz(2 * k - 4), dlatents[:, 2 * k - 4])
        x = np_conv2d_same(x, np_weight(v[f"{s}/Conv1/weight"], SQRT2))
        x = np_epilogue(x, v, f"{s}/Conv1", nz(2 * k - 3), dlatents[:, 2 * k - 3])
    x = np_conv2d_same(x, np_weight(v["ToRGB_lod0/weight"], 1.0))
    return x + v["ToRGB_lod0/bias"].reshape(1, -1, 1, 1)


# ----------------------------------------------------------------------------------------------
# TF variables for a small network, and their sgtriton names.

def tf_variables(rng: np.random.Generator, z_dim: int, c_dim: int, w_dim: int, resolution: int,
                 nf, img_channels: int, mapping_layers: int) -> dict:
    """Random TF-layout variables (non-zero noise weights, biases and style biases)."""
    v: dict = {}
    feats = [z_dim + (z_dim if c_dim else 0)] + [w_dim] * mapping_layers
    if c_dim:
        v["LabelConcat/weight"] = rng.standard_normal((c_dim, z_dim))
    for i in range(mapping_layers):
        v[f"Dense{i}/weight"] = rng.standard_normal((feats[i], feats[i + 1])) / 0.01
        v[f"Dense{i}/bias"] = rng.standard_normal(feats[i + 1]) * 10
    v["dlatent_avg"] = rng.standard_normal(w_dim) * 0.5

    def layer(scope: str, cin: int | None, cout: int, r: int, idx: int) -> None:
        if cin is not None:
            v[f"{scope}/weight"] = rng.standard_normal((3, 3, cin, cout))
        v[f"{scope}/Noise/weight"] = rng.standard_normal(cout) * 0.5
        v[f"{scope}/bias"] = rng.standard_normal(cout) * 0.5
        v[f"{scope}/StyleMod/weight"] = rng.standard_normal((w_dim, 2 * cout))
        v[f"{scope}/StyleMod/bias"] = rng.standard_normal(2 * cout) * 0.3
        v[f"noise{idx}"] = rng.standard_normal((1, 1, r, r))

    v["4x4/Const/const"] = rng.standard_normal((1, nf(4), 4, 4)) + 1.0
    layer("4x4/Const", None, nf(4), 4, 0)
    layer("4x4/Conv", nf(4), nf(4), 4, 1)
    for k in range(3, int(math.log2(resolution)) + 1):
        r = 2**k
        layer(f"{r}x{r}/Conv0_up", nf(r // 2), nf(r), r, 2 * k - 4)
        layer(f"{r}x{r}/Conv1", nf(r), nf(r), r, 2 * k - 3)
    v["ToRGB_lod0/weight"] = rng.standard_normal((1, 1, nf(resolution), img_channels))
    v["ToRGB_lod0/bias"] = rng.standard_normal(img_channels) * 0.1
    return v


def to_sgtriton_state(v: dict, G: sgtriton.Generator, resolution: int, mapping_layers: int) -> dict:
    """TF variable names/layouts -> sgtriton ``adain`` state dict (filter buffers kept)."""
    t = {k: torch.as_tensor(a, dtype=torch.float32) for k, a in v.items()}
    conv = lambda a: a.permute(3, 2, 0, 1).contiguous()  # noqa: E731  [kh,kw,in,out] -> [out,in,kh,kw]
    sd = {k: b.clone() for k, b in G.state_dict().items() if k.endswith("_filter")}
    sd["mapping.w_avg"] = t["dlatent_avg"]
    if "LabelConcat/weight" in t:
        sd["mapping.embed.weight"] = t["LabelConcat/weight"].t().contiguous()
    for i in range(mapping_layers):
        sd[f"mapping.fc{i}.weight"] = t[f"Dense{i}/weight"].t().contiguous()
        sd[f"mapping.fc{i}.bias"] = t[f"Dense{i}/bias"]

    def layer(prefix: str, scope: str, idx: int) -> None:
        if f"{scope}/weight" in t:
            sd[f"{prefix}.weight"] = conv(t[f"{scope}/weight"])
        sd[f"{prefix}.bias"] = t[f"{scope}/bias"]
        sd[f"{prefix}.noise_weight"] = t[f"{scope}/Noise/weight"]
        sd[f"{prefix}.noise_const"] = t[f"noise{idx}"][0, 0]
        sd[f"{prefix}.affine.weight"] = t[f"{scope}/StyleMod/weight"].t().contiguous()
        sd[f"{prefix}.affine.bias"] = t[f"{scope}/StyleMod/bias"]

    sd["synthesis.b4.const"] = t["4x4/Const/const"][0]
    layer("synthesis.b4.input", "4x4/Const", 0)
    layer("synthesis.b4.conv1", "4x4/Conv", 1)
    for k in range(3, int(math.log2(resolution)) + 1):
        r = 2**k
        layer(f"synthesis.b{r}.conv0", f"{r}x{r}/Conv0_up", 2 * k - 4)
        layer(f"synthesis.b{r}.conv1", f"{r}x{r}/Conv1", 2 * k - 3)
    sd[f"synthesis.b{resolution}.torgb.weight"] = conv(t["ToRGB_lod0/weight"])
    sd[f"synthesis.b{resolution}.torgb.bias"] = t["ToRGB_lod0/bias"]
    return sd


def assert_rel_close(actual: torch.Tensor, expected: np.ndarray, rel: float, name: str) -> None:
    e = torch.as_tensor(expected)
    err = (actual.double() - e).abs().max().item()
    scale = e.abs().max().item()
    assert err <= rel * scale, f"{name}: max abs error {err:.3e} > {rel:g} * max|ref| ({scale:.3e})"


def build_pair(resolution: int, channel_base: int, channel_max: int, c_dim: int = 0, seed: int = 0,
               img_channels: int = 3):
    z_dim = w_dim = 8
    mapping_layers = 3
    G = sgtriton.build_generator(
        "stylegan1", z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=resolution,
        img_channels=img_channels, mapping_kwargs={"num_layers": mapping_layers},
        synthesis_kwargs={"channel_base": channel_base, "channel_max": channel_max}, seed=seed,
    )
    nf = lambda r: min(channel_base // r, channel_max)  # noqa: E731  TF nf(log2 r - 1), fmap_base = base / 2
    rng = np.random.default_rng(seed)
    v = tf_variables(rng, z_dim, c_dim, w_dim, resolution, nf, img_channels, mapping_layers)
    G.load_state_dict(to_sgtriton_state(v, G, resolution, mapping_layers), strict=True)
    return G, v, mapping_layers


# ----------------------------------------------------------------------------------------------
# Whole-network equivalence.

@pytest.mark.parametrize("resolution, c_dim, img_channels", [(8, 0, 3), (16, 3, 1), (32, 0, 3)])
def test_stylegan1_matches_tf_graph(resolution: int, c_dim: int, img_channels: int) -> None:
    G, v, layers = build_pair(resolution, channel_base=128, channel_max=8, c_dim=c_dim,
                              img_channels=img_channels)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3, G.z_dim))
    c = np.eye(c_dim)[[0, 2, 1]] if c_dim else None
    zt = torch.as_tensor(z, dtype=torch.float32)
    ct = torch.as_tensor(c, dtype=torch.float32) if c_dim else None
    for psi, cutoff in [(1.0, None), (0.7, 8), (0.5, 3)]:
        ws_ref = np_mapping(v, z, c, layers, G.num_ws, None if psi == 1 else psi, cutoff)
        ws = G.mapping(zt, ct, truncation_psi=psi, truncation_cutoff=cutoff)
        assert_rel_close(ws, ws_ref, 1e-5, f"ws psi={psi} cutoff={cutoff}")
    for mode in ("const", "none"):
        img = G.synthesis(ws, noise_mode=mode)
        assert_rel_close(img, np_synthesis(v, ws.double().numpy(), resolution, mode), 2e-5, f"image ({mode})")


def test_stylegan1_fused_upconv_at_128_and_256_matches_tf_graph() -> None:
    """Blocks at 128^2 and 256^2 take TF's fused transposed-conv path; 8..64 the nearest path."""
    G, v, _ = build_pair(256, channel_base=512, channel_max=4)
    assert [G.synthesis.b128.conv0.fused_up, G.synthesis.b64.conv0.fused_up] == [True, False]
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    img = G.synthesis(ws, noise_mode="const")
    assert_rel_close(img, np_synthesis(v, ws.double().numpy(), 256, "const"), 2e-5, "image 256")


def test_stylegan1_structure_and_defaults() -> None:
    G = sgtriton.build_generator("stylegan1", img_resolution=32, synthesis_kwargs={"channel_base": 256,
                                                                                     "channel_max": 8})
    assert G.num_ws == 2 * 5 - 2
    assert torch.equal(G.synthesis.b4.const, torch.ones_like(G.synthesis.b4.const))  # TF initialises ones
    assert (G.config.truncation_psi, G.config.truncation_cutoff) == (0.7, 8)
    style_layers = [n for n in G.graph.synthesis_nodes if n.kind in ("input", "conv")]
    assert [n.w_index for n in style_layers] == list(range(G.num_ws))
    torgbs = [n for n in G.graph.synthesis_nodes if n.kind == "torgb"]
    assert len(torgbs) == 1 and torgbs[0].w_index is None  # ToRGB_lod0 only, reads no w
    # Parameter count at 1024: TF print_layers total 26,219,627 includes the eight lod>0 ToRGBs
    # (7,659 params in all 9); sgtriton keeps ToRGB_lod0 only (16*3 + 3).
    n_params = sum(p.numel() for p in sgtriton.build_generator("stylegan1").parameters())
    assert n_params == 26_219_627 - 7_659 + 51


# ----------------------------------------------------------------------------------------------
# The up-sampling conv on its own.

def _layer(resolution: int, cin: int, cout: int, w_dim: int = 4) -> AdaINLayer:
    node = LayerNode(f"synthesis.b{resolution}.conv0", "conv", block="adain", resolution=resolution,
                     in_channels=cin, out_channels=cout, up=2, w_dim=w_dim)
    return AdaINLayer(node).double().requires_grad_(False)


@pytest.mark.parametrize("resolution", [8, 64, 128, 256])
def test_adain_upconv_matches_tf(resolution: int) -> None:
    layer = _layer(resolution, 3, 2)
    rng = np.random.default_rng(resolution)
    w_tf = rng.standard_normal((3, 3, 3, 2))
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(w_tf).permute(3, 2, 0, 1))
    x = rng.standard_normal((2, 3, resolution // 2, resolution // 2))
    expected = np_blur(np_upscale2d_conv2d(x, w_tf, fused=resolution >= 128))
    got = layer.conv(torch.as_tensor(x))
    assert layer.fused_up == (resolution >= 128)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_fused_and_nearest_upconv_differ_by_a_kernel_flip() -> None:
    """TF's two Conv0_up paths are not the same function of the same weights: the transposed
    path equals nearest x2 + 3x3 conv with the kernel flipped in H and W. (Each path is what the
    TF checkpoint was trained with at its resolution, so sgtriton must keep both as they are.)"""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((3, 3, 2, 3))
    x = rng.standard_normal((1, 2, 5, 5))
    fused = np_upscale2d_conv2d(x, w, fused=True)
    nearest = np_upscale2d_conv2d(x, w, fused=False)
    nearest_flipped = np_upscale2d_conv2d(x, w[::-1, ::-1], fused=False)
    np.testing.assert_allclose(fused, nearest_flipped, rtol=1e-12, atol=1e-12)
    assert np.abs(fused - nearest).max() > 0.1 * np.abs(fused).max()
    # The same identity on sgtriton's modules.
    layer = _layer(128, 2, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(w).permute(3, 2, 0, 1))
    wt = layer.weight * layer.weight_gain
    t = torch.as_tensor(x)
    got_fused = torch.nn.functional.conv_transpose2d(t, fused_upconv_kernel(wt), stride=2, padding=1)
    up = torch.nn.functional.interpolate(t, scale_factor=2)
    got_nearest = torch.nn.functional.conv2d(up, wt.flip([2, 3]), padding=1)
    torch.testing.assert_close(got_fused, got_nearest, rtol=1e-12, atol=1e-12)


def test_adain_epilogue_statistics() -> None:
    """After the epilogue each (n, c) map has mean beta and std (gamma + 1) (spatial, biased)."""
    layer = _layer(16, 2, 4)
    with torch.no_grad():
        layer.noise_weight.normal_()
        layer.bias.normal_()
        layer.affine.bias.normal_()
    w = torch.randn(3, 4, dtype=torch.float64)
    y = layer(torch.randn(3, 2, 8, 8, dtype=torch.float64), w, noise_mode="const")
    style = layer.affine(w)
    torch.testing.assert_close(y.mean(dim=[2, 3]), style[:, 4:])
    std = y.std(dim=[2, 3], unbiased=False)
    torch.testing.assert_close(std, (style[:, :4] + 1).abs(), rtol=1e-6, atol=1e-6)
