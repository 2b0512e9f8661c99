"""``revised``: StyleGAN2's revised architecture (Fig. 2c), the step before demodulation.

One layer, ``x [N, I, r/up, r/up]`` -> ``[N, O, r, r]``::

    s = affine(w)                                           (FC w_dim -> I, bias init 1; std only)
    y = conv(x * s, W)                                      (up=2 as in moddemod)
    y = y * rsqrt(mean_{h,w}(y^2) + 1e-8)                   (per sample and channel: std, no mean)
    y = y + noise * noise_strength                          (outside the style block)
    y = clamp(lrelu(y + bias, 0.2) * sqrt(2) * gain, +-conv_clamp * gain)

The const input feeds the first layer directly (no noise, bias or normalisation on it).
Parameter names are those of ``moddemod``.
"""

from __future__ import annotations

import torch
from torch import nn

from sgtriton.blocks.base import BlockType
from sgtriton.blocks.layers import ModulatedToRGB
from sgtriton.blocks.moddemod import ModulatedLayer
from sgtriton.graph.nodes import LayerNode
from sgtriton.ops.modconv import modulated_conv2d_ref
from sgtriton.ops.normalization import rms_normalize_ref


class RevisedLayer(ModulatedLayer):
    """Modulate (scale only) -> conv -> divide by the output's per-channel RMS -> noise -> bias/act."""

    demodulate = False

    def modulated_conv(self, x: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None,
                       fused_modconv: bool) -> torch.Tensor:
        x = modulated_conv2d_ref(
            x, self.weight, styles, None, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, demodulate=False,
            flip_weight=(self.up == 1), fused_modconv=fused_modconv,
        )
        x = rms_normalize_ref(x)
        return x if noise is None else x + noise.to(x.dtype)


class RevisedBlock(BlockType):
    """StyleGAN2 revised architecture: std-only modulation and normalisation."""

    name = "revised"
    description = "StyleGAN2 revised block (Fig. 2c): scale by s(w), conv, divide by output RMS; noise/bias outside"
    implementations = ("reference",)

    def make_layer(self, node: LayerNode) -> nn.Module:
        return RevisedLayer(node, node.options["resample_filter"])

    def make_torgb(self, node: LayerNode) -> nn.Module:
        return ModulatedToRGB(node.in_channels, node.out_channels, node.w_dim, node.conv_clamp,
                              node.options["resample_filter"])

    def kernels(self, node: LayerNode, impl: str) -> tuple[str, ...]:
        if node.kind == "torgb":
            return ("affine:addmm", "modulated_conv2d_ref", "bias_act_ref")
        return ("affine:addmm", "modulated_conv2d_ref", "rms_normalize_ref", "bias_act_ref")
