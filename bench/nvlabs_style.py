"""A straightforward NVlabs-style StyleGAN2 generator in plain PyTorch: the speed baseline.

This is how the NVlabs PyTorch code computes a ``moddemod`` generator when its CUDA plugins are
absent (the situation on a CPU): per layer, per-sample weights ``W * s`` demodulated by
``rsqrt(sum (W s)^2 + 1e-8)``, one grouped convolution over the batch (the "fused" modconv), or
for fp16 batches the non-fused form; the up layer as a stride-2 transposed conv followed by the
4x4 FIR; ``bias_act`` and ``upfirdn2d`` as their reference chains of PyTorch ops. It follows the
formulas of ``stylegan_spec.md`` section 3, written independently of ``sgtriton``'s own ops, and
uses NVlabs' module and parameter names, so ``load_state_dict(G.state_dict(), strict=True)``
loads the weights of an ``sgtriton`` ``moddemod`` generator. Supports the ``skip`` and ``orig``
architectures, unconditional networks, ``noise_mode='const'``/``'none'``.

``benchmark`` use only: it exists so the reference path is measured against what a user would
otherwise run, in the same process and with the same weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2)


def _bias_act(x: torch.Tensor, b: torch.Tensor, lrelu: bool, gain: float, clamp: float | None) -> torch.Tensor:
    x = x + b.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if lrelu:
        x = F.leaky_relu(x, 0.2)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _fir(x: torch.Tensor, f: torch.Tensor, up: int, pad: tuple[int, int, int, int], gain: float) -> torch.Tensor:
    """NVlabs' reference ``upfirdn2d`` (down = 1): zero-insert, pad, depthwise conv with the flipped filter."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, list(pad))
    f = (f * gain).flip([0, 1]).to(x.dtype)
    return F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)


def _conv(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None, up: int, groups: int) -> torch.Tensor:
    """NVlabs ``conv2d_resample`` for the generator's cases: 3x3/1x1 "same" conv, or 3x3 up=2."""
    k = w.shape[-1]
    if up == 1:
        return F.conv2d(x, w, padding=k // 2, groups=groups)
    # Transposed conv wants [G*I, O, k, k]; weights are not flipped (flip_weight=False for up layers).
    o_total, i_per_group = w.shape[:2]
    w = w.reshape(groups, o_total // groups, i_per_group, k, k).transpose(1, 2)
    w = w.reshape(groups * i_per_group, o_total // groups, k, k)
    x = F.conv_transpose2d(x, w, stride=2, groups=groups)
    return _fir(x, f, up=1, pad=(1, 1, 1, 1), gain=4)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None,
                     up: int, f: torch.Tensor | None, demodulate: bool, fused: bool) -> torch.Tensor:
    """NVlabs ``modulated_conv2d`` (stylegan_spec.md 3.6)."""
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if not fused:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = _conv(x, weight.to(x.dtype), f, up, groups=1)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        return x + noise.to(x.dtype) if noise is not None else x
    if dcoefs is not None:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = _conv(x, w.to(x.dtype), f, up, groups=batch)
    x = x.reshape(batch, -1, *x.shape[2:])
    return x + noise.to(x.dtype) if noise is not None else x


class FullyConnected(nn.Module):
    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0, lrelu: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty([out_features, in_features]))
        self.bias = nn.Parameter(torch.empty([out_features]))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias_gain != 1 else self.bias
        if not self.lrelu:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return _bias_act(x.matmul(w.t()), b, lrelu=True, gain=SQRT2, clamp=None)


class SynthesisLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: int,
                 conv_clamp: float | None) -> None:
        super().__init__()
        self.up = up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_ch)
        self.weight = nn.Parameter(torch.empty([out_ch, in_ch, 3, 3]))
        self.noise_strength = nn.Parameter(torch.empty([]))
        self.bias = nn.Parameter(torch.empty([out_ch]))
        self.register_buffer("resample_filter", torch.empty([4, 4]))
        self.register_buffer("noise_const", torch.empty([resolution, resolution]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str, fused: bool) -> torch.Tensor:
        styles = self.affine(w)
        noise = self.noise_const * self.noise_strength if noise_mode == "const" else None
        x = modulated_conv2d(x, self.weight, styles, noise, self.up, self.resample_filter, True, fused)
        return _bias_act(x, self.bias, lrelu=True, gain=SQRT2, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    def __init__(self, in_ch: int, img_channels: int, w_dim: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_ch)
        self.weight = nn.Parameter(torch.empty([img_channels, in_ch, 1, 1]))
        self.bias = nn.Parameter(torch.empty([img_channels]))
        self.weight_gain = 1 / math.sqrt(in_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, None, 1, None, False, fused)
        return _bias_act(x, self.bias, lrelu=False, gain=1, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, img_channels: int,
                 has_torgb: bool, use_fp16: bool, conv_clamp: float | None) -> None:
        super().__init__()
        self.resolution = resolution
        self.use_fp16 = use_fp16
        self.num_conv = 1 if in_ch == 0 else 2
        self.num_torgb = int(has_torgb)
        if in_ch == 0:
            self.const = nn.Parameter(torch.empty([out_ch, 4, 4]))
        self.register_buffer("resample_filter", torch.empty([4, 4]))
        if in_ch:
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, resolution, 2, conv_clamp)
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, resolution, 1, conv_clamp)
        if has_torgb:
            self.torgb = ToRGBLayer(out_ch, img_channels, w_dim, conv_clamp)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: list[torch.Tensor],
                noise_mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        fp16 = self.use_fp16 and ws[0].device.type == "cuda"
        dtype = torch.float16 if fp16 else torch.float32
        fused = dtype == torch.float32 or ws[0].shape[0] == 1
        if x is None:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws[0].shape[0], 1, 1, 1])
            x = self.conv1(x, ws[0], noise_mode, fused)
        else:
            x = self.conv0(x.to(dtype), ws[0], noise_mode, fused)
            x = self.conv1(x, ws[1], noise_mode, fused)
        if img is not None:
            img = _fir(img, self.resample_filter, up=2, pad=(2, 1, 2, 1), gain=4)
        if self.num_torgb:
            y = self.torgb(x, ws[self.num_conv], fused).to(torch.float32)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        syn = config.synthesis
        self.resolutions = config.block_resolutions
        for r in self.resolutions:
            in_ch = config.channels(r // 2) if r > 4 else 0
            has_torgb = syn.architecture == "skip" or r == config.img_resolution
            block = SynthesisBlock(in_ch, config.channels(r), config.w_dim, r, config.img_channels, has_torgb,
                                   r >= config.fp16_resolution, syn.conv_clamp)
            setattr(self, f"b{r}", block)

    def forward(self, ws: torch.Tensor, noise_mode: str) -> torch.Tensor:
        x = img = None
        index = 0
        for r in self.resolutions:
            block = getattr(self, f"b{r}")
            block_ws = list(ws[:, index:index + block.num_conv + block.num_torgb].unbind(dim=1))
            x, img = block(x, img, block_ws, noise_mode)
            index += block.num_conv
        return img


class MappingNetwork(nn.Module):
    def __init__(self, config, num_ws: int) -> None:
        super().__init__()
        m = config.mapping
        self.num_ws = num_ws
        self.num_layers = m.num_layers
        features = [config.z_dim] + [m.layer_features or config.w_dim] * (m.num_layers - 1) + [config.w_dim]
        for i in range(m.num_layers):
            setattr(self, f"fc{i}", FullyConnected(features[i], features[i + 1], m.lr_multiplier, lrelu=True))
        self.register_buffer("w_avg", torch.empty([config.w_dim]))

    def forward(self, z: torch.Tensor, truncation_psi: float) -> torch.Tensor:
        x = z.float()
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class NVlabsStyleGenerator(nn.Module):
    """``G(z, truncation_psi, noise_mode)`` for an unconditional ``moddemod`` ``skip``/``orig`` config."""

    def __init__(self, config, num_ws: int) -> None:
        super().__init__()
        if config.block != "moddemod" or config.c_dim or config.synthesis.architecture not in ("skip", "orig"):
            raise ValueError(f"config: the NVlabs-style baseline covers unconditional moddemod skip/orig "
                             f"generators, got block={config.block!r}, c_dim={config.c_dim}, "
                             f"architecture={config.synthesis.architecture!r}")
        self.synthesis = SynthesisNetwork(config)
        self.mapping = MappingNetwork(config, num_ws)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode)


def nvlabs_style_like(G: nn.Module) -> NVlabsStyleGenerator:
    """The baseline generator for ``sgtriton`` generator ``G``, holding a strict copy of its weights."""
    baseline = NVlabsStyleGenerator(G.config, G.num_ws)
    baseline.load_state_dict(G.state_dict(), strict=True)
    first = next(G.parameters())
    return baseline.to(first.device).eval().requires_grad_(False)


def supports(config) -> bool:
    """Whether :class:`NVlabsStyleGenerator` can mirror a generator of ``config``."""
    return config.block == "moddemod" and not config.c_dim and config.synthesis.architecture in ("skip", "orig")
