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

from sgtriton.backends import op_impl
from sgtriton.blocks.base import BlockType
from sgtriton.blocks.layers import ModulatedToRGB, check_layer_input, layer_noise
from sgtriton.blocks.moddemod import ModulatedLayer, modulated_kernels
from sgtriton.blocks.nodes import LayerNode
from sgtriton.ops.modconv import modulated_conv2d_layer
from sgtriton.ops.normalization import rms_normalize_epilogue


class RevisedLayer(ModulatedLayer):
    """Modulate (scale only) -> conv -> divide by the output's per-channel RMS -> noise -> bias/act."""

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool = True, gain: float = 1.0, impl: str = "reference") -> torch.Tensor:
        check_layer_input(x, self.in_channels, self.resolution // self.up, self.node.name)
        styles = self.affine(w, impl)
        y = modulated_conv2d_layer(x, self.weight, styles, up=self.up, demodulate=False, act="linear", gain=1.0,
                                   resample_filter=self.resample_filter, fused_modconv=fused_modconv,
                                   impl=op_impl(impl))
        noise = layer_noise(noise_mode, self.noise_const, x.shape[0], self.resolution, x.device)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return rms_normalize_epilogue(y, noise, self.noise_strength, self.bias, act="lrelu",
                                      gain=self.act_gain * gain, clamp=act_clamp, impl=op_impl(impl))


class RevisedBlock(BlockType):
    """StyleGAN2 revised architecture: std-only modulation and normalisation."""

    name = "revised"
    description = "StyleGAN2 revised block (Fig. 2c): scale by s(w), conv, divide by output RMS; noise/bias outside"
    implementations = ("reference", "triton")

    def make_layer(self, node: LayerNode) -> nn.Module:
        return RevisedLayer(node, node.options["resample_filter"])

    def make_torgb(self, node: LayerNode) -> nn.Module:
        return ModulatedToRGB(node.in_channels, node.out_channels, node.w_dim, node.conv_clamp,
                              node.options["resample_filter"])

    def kernels(self, node: LayerNode, impl: str) -> tuple[str, ...]:
        if node.kind == "torgb":
            return modulated_kernels(node, impl)
        if impl == "triton":
            return ("fully_connected:affine", "modconv2d_up2" if node.up > 1 else "modconv2d", "rms_normalize")
        return ("affine:addmm", "modulated_conv2d_ref", "rms_normalize_ref", "bias_act_ref")

    def reduction_length(self, node: LayerNode) -> int:
        # The conv's taps plus the RMS statistics over the r x r map.
        return max(node.in_channels * node.kernel_size**2 + (node.resolution**2 if node.kind != "torgb" else 0), 1)
