"""``moddemod``: StyleGAN2's weight (de)modulation layer (Fig. 2d, configs B-F), NVlabs semantics.

One layer, ``x [N, I, r/up, r/up]`` -> ``[N, O, r, r]``::

    s = affine(w)                                    (FC w_dim -> I, bias init 1)
    y = modulated_conv2d(x, W, s, demodulate=True)   (up=2: stride-2 transposed conv + [1,3,3,1] FIR)
    y = y + noise * noise_strength                   (noise [N,1,r,r] random or noise_const [r,r])
    y = clamp(lrelu(y + bias, 0.2) * sqrt(2) * gain, +-conv_clamp * gain)

Parameters (NVlabs ``SynthesisLayer``): ``weight [O, I, 3, 3]``, ``bias [O]``, ``noise_strength []``,
``affine.weight [I, w_dim]``, ``affine.bias [I]``; buffers ``noise_const [r, r]``, ``resample_filter``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sgtriton.backends import op_impl
from sgtriton.blocks.base import BlockType
from sgtriton.blocks.layers import FullyConnectedLayer, ModulatedToRGB, check_layer_input, layer_noise
from sgtriton.blocks.nodes import LayerNode
from sgtriton.ops.modconv import modulated_conv2d_layer
from sgtriton.ops.upfirdn2d import setup_filter


class ModulatedLayer(nn.Module):
    """NVlabs ``SynthesisLayer``: modulated/demodulated conv + noise + bias + lrelu*sqrt2 + clamp."""

    def __init__(self, node: LayerNode, resample_filter: tuple[int, ...]) -> None:
        super().__init__()
        self.node = node
        self.w_dim = node.w_dim
        self.in_channels = node.in_channels
        self.out_channels = node.out_channels
        self.resolution = node.resolution
        self.up = node.up
        self.use_noise = node.use_noise
        self.conv_clamp = node.conv_clamp
        self.activation = "lrelu"
        self.padding = node.kernel_size // 2
        self.act_gain = math.sqrt(2)
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(node.w_dim, node.in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([node.out_channels, node.in_channels, node.kernel_size,
                                                node.kernel_size]))
        if node.use_noise:
            self.register_buffer("noise_const", torch.randn([node.resolution, node.resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        else:
            self.noise_const = None
            self.noise_strength = None
        # Registered after noise_strength: NVlabs' state-dict order is weight, noise_strength, bias.
        self.bias = nn.Parameter(torch.zeros([node.out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool = True, gain: float = 1.0, impl: str = "reference") -> torch.Tensor:
        check_layer_input(x, self.in_channels, self.resolution // self.up, self.node.name)
        styles = self.affine(w, impl)
        noise = layer_noise(noise_mode, self.noise_const, x.shape[0], self.resolution, x.device)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return modulated_conv2d_layer(
            x, self.weight, styles, bias=self.bias, noise=noise, noise_strength=self.noise_strength, up=self.up,
            demodulate=True, act="lrelu", gain=self.act_gain * gain, clamp=act_clamp,
            resample_filter=self.resample_filter, fused_modconv=fused_modconv, impl=op_impl(impl),
        )

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"resolution={self.resolution}, up={self.up}")


class ModDemodBlock(BlockType):
    """StyleGAN2 weight modulation / demodulation (configs B-F)."""

    name = "moddemod"
    description = "StyleGAN2 modulated + demodulated conv, noise, bias, lrelu*sqrt2, clamp (Fig. 2d)"
    implementations = ("reference", "triton")

    def make_layer(self, node: LayerNode) -> nn.Module:
        return ModulatedLayer(node, node.options["resample_filter"])

    def make_torgb(self, node: LayerNode) -> nn.Module:
        return ModulatedToRGB(node.in_channels, node.out_channels, node.w_dim, node.conv_clamp,
                              node.options["resample_filter"])

    def kernels(self, node: LayerNode, impl: str) -> tuple[str, ...]:
        return modulated_kernels(node, impl)


def modulated_kernels(node: LayerNode, impl: str) -> tuple[str, ...]:
    """What runs for a StyleGAN2-style layer or ToRGB node: the affine, then the (fused) conv, which
    a demodulated layer precedes with its prologue (styles and demodulation coefficients)."""
    if impl == "triton":
        if node.kind == "torgb":
            return ("fully_connected:affine", "torgb(+skip)")
        return ("fully_connected:affine", "modconv2d_prologue", "modconv2d_up2" if node.up > 1 else "modconv2d")
    if node.kind == "torgb":
        return ("affine:addmm", "modulated_conv2d_ref", "bias_act_ref", "upfirdn2d_ref:skip")
    return ("affine:addmm", "modulated_conv2d_ref", "bias_act_ref")
