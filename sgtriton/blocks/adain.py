"""``adain``: the StyleGAN1 style layer (config A), NVlabs TensorFlow semantics.

One layer, ``x [N, I, r/up, r/up]`` -> ``[N, O, r, r]``::

    y = conv3x3(x, W * sqrt(2)/sqrt(9 I))                 (weight-scaled, "same" padding)
        up=2, r < 128:  nearest x2, then the 3x3 conv
        up=2, r >= 128: stride-2 transposed conv with the 4x4 kernel = sum of the four
                        1-pixel shifts of the zero-padded 3x3 kernel (TF's fused up-conv)
        up=2, both:     then the [1,2,1] x [1,2,1] / 16 blur (zero padding 1)
    y = y + noise * noise_weight[c]        (noise [N,1,r,r] random or noise_const [r,r])
    y = lrelu(y + bias, 0.2)               (no output gain: sqrt 2 sits in the weight scale)
    y = instance_norm(y)                   (eps 1e-8)
    y = y * (style[:, :O] + 1) + style[:, O:],   style = affine(w)  (FC w_dim -> 2 O, bias init 0)

The 4x4 const (initialised to ones) passes through a conv-less layer (node kind ``'input'``)
with its own w. ToRGB is a plain 1x1 conv (weight / sqrt(C)) + bias; it reads no w.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sgtriton.backends import op_impl
from sgtriton.blocks.base import BlockType
from sgtriton.blocks.layers import FullyConnectedLayer, check_layer_input, layer_noise, rgb_with_skip
from sgtriton.blocks.nodes import LayerNode
from sgtriton.ops.modconv import modulated_conv2d_layer
from sgtriton.ops.normalization import adain_epilogue
from sgtriton.ops.torgb import SKIP_FILTER
from sgtriton.ops.upfirdn2d import setup_filter, upfirdn2d

BLUR_FILTER = (1, 2, 1)
#: TF StyleGAN1 fuses up-sampling into a transposed conv from this output resolution on.
FUSED_UP_RESOLUTION = 128


def fused_upconv_kernel(weight: torch.Tensor) -> torch.Tensor:
    """``[O, I, 3, 3]`` conv weight -> ``[I, O, 4, 4]`` stride-2 transposed-conv kernel (TF fused_scale)."""
    w = F.pad(weight, [1, 1, 1, 1])
    w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
    return w.transpose(0, 1)


class AdaINLayer(nn.Module):
    """StyleGAN1 layer: [up] conv [blur] -> noise -> bias -> lrelu -> instance norm -> AdaIN style."""

    def __init__(self, node: LayerNode) -> None:
        super().__init__()
        self.node = node
        self.in_channels = node.in_channels
        self.out_channels = node.out_channels
        self.resolution = node.resolution
        self.up = node.up
        self.has_conv = node.kind == "conv"
        self.fused_up = self.up > 1 and node.resolution >= FUSED_UP_RESOLUTION
        if self.has_conv:
            k = node.kernel_size
            self.weight = nn.Parameter(torch.randn([node.out_channels, node.in_channels, k, k]))
            self.weight_gain = math.sqrt(2) / math.sqrt(node.in_channels * k * k)
            self.padding = k // 2
        if self.up > 1:
            self.register_buffer("blur_filter", setup_filter(BLUR_FILTER))
            # Nearest-neighbour x2 as upfirdn2d: zero insertion, then a 2x2 box of ones.
            self.register_buffer("nearest_filter", setup_filter([1, 1], normalize=False), persistent=False)
        self.bias = nn.Parameter(torch.zeros([node.out_channels]))
        if node.use_noise:
            self.noise_weight = nn.Parameter(torch.zeros([node.out_channels]))
            self.register_buffer("noise_const", torch.randn([node.resolution, node.resolution]))
        else:
            self.noise_weight = None
            self.noise_const = None
        self.affine = FullyConnectedLayer(node.w_dim, 2 * node.out_channels, bias_init=0)

    def conv(self, x: torch.Tensor, impl: str = "reference") -> torch.Tensor:
        """The layer's [up-sampling] conv [and blur], before the epilogue."""
        w = self.weight * self.weight_gain
        if impl == "triton":
            return self.conv_triton(x, w)
        w = w.to(x.dtype)
        if self.up == 1:
            return F.conv2d(x, w, padding=self.padding)
        if self.fused_up:
            x = F.conv_transpose2d(x, fused_upconv_kernel(w), stride=2, padding=1)
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.conv2d(x, w, padding=self.padding)
        return upfirdn2d(x, self.blur_filter, padding=1)

    def conv_triton(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Kernels only: [nearest x2 as an FIR] -> conv (the modulated-conv kernel, unit styles, no
        demodulation) -> [blur]. TF's fused transposed conv equals nearest x2 followed by the 3x3 conv
        with its kernel flipped in H and W, so both up paths share the kernels."""
        ones = torch.ones([x.shape[0], x.shape[1]], dtype=torch.float32, device=x.device)
        if self.up > 1:
            x = upfirdn2d(x, self.nearest_filter, up=2, padding=[1, 0, 1, 0], impl="triton")
            if self.fused_up:
                w = w.flip([2, 3])
        x = modulated_conv2d_layer(x, w, ones, demodulate=False, act="linear", gain=1.0, impl="triton")
        return upfirdn2d(x, self.blur_filter, padding=1, impl="triton") if self.up > 1 else x

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool = True, gain: float = 1.0, impl: str = "reference") -> torch.Tensor:
        in_res = self.resolution // self.up if self.has_conv else self.resolution
        check_layer_input(x, self.in_channels, in_res, self.node.name)
        if self.has_conv:
            x = self.conv(x, impl)
        noise = layer_noise(noise_mode, self.noise_const, x.shape[0], self.resolution, x.device)
        x = adain_epilogue(x, noise, self.noise_weight, self.bias, self.affine(w, impl), impl=op_impl(impl))
        return x * gain if gain != 1 else x

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"resolution={self.resolution}, up={self.up}, fused_up={self.fused_up}")


class PlainToRGB(nn.Module):
    """StyleGAN1 ToRGB: 1x1 conv with weight gain 1/sqrt(C), + bias, linear; reads no w.

    With ``skip`` (the skip architecture) returns ``upsample2d(skip) + y``.
    """

    def __init__(self, in_channels: int, out_channels: int, resample_filter: tuple[int, ...] = SKIP_FILTER) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.fusable_skip = tuple(resample_filter) == SKIP_FILTER

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None, fused_modconv: bool = True,
                impl: str = "reference", skip: torch.Tensor | None = None) -> torch.Tensor:
        # The ToRGB conv is the modulated one with every style equal to the weight gain.
        styles = torch.full([x.shape[0], x.shape[1]], self.weight_gain, dtype=torch.float32, device=x.device)
        return rgb_with_skip(x, self.weight, styles, self.bias, None, skip, self.resample_filter,
                             self.fusable_skip, fused_modconv, impl)


class AdaINBlock(BlockType):
    """StyleGAN1 AdaIN style block."""

    name = "adain"
    description = "StyleGAN1 layer: conv, noise, bias, lrelu, instance norm, AdaIN x*(1+gamma(w))+beta(w)"
    implementations = ("reference", "triton")
    torgb_uses_style = False
    has_input_layer = True
    const_init = "ones"

    def make_layer(self, node: LayerNode) -> nn.Module:
        return AdaINLayer(node)

    def make_torgb(self, node: LayerNode) -> nn.Module:
        return PlainToRGB(node.in_channels, node.out_channels, node.options["resample_filter"])

    def kernels(self, node: LayerNode, impl: str) -> tuple[str, ...]:
        if impl == "triton":
            if node.kind == "torgb":
                return ("torgb(+skip)",)
            conv = {"conv": ("modconv2d",), "input": ()}[node.kind]
            if node.up > 1:
                conv = ("upfirdn2d:nearest", *conv, "upfirdn2d:blur")
            return (*conv, "fully_connected:affine", "adain_epilogue")
        if node.kind == "torgb":
            return ("modulated_conv2d_ref", "bias_act_ref", "upfirdn2d_ref:skip")
        conv = {1: ("conv2d",), 2: ("conv_transpose2d" if node.resolution >= FUSED_UP_RESOLUTION
                                    else "nearest+conv2d", "upfirdn2d_ref:blur")}
        return (*(conv[node.up] if node.kind == "conv" else ()), "affine:addmm", "adain_epilogue_ref")

    def reduction_length(self, node: LayerNode) -> int:
        # The conv's taps plus the instance-norm statistics over the r x r map.
        conv = node.in_channels * node.kernel_size**2 if node.kind != "input" else 0
        return max(conv + (node.resolution**2 if node.kind != "torgb" else 0), 1)

    def macs(self, node: LayerNode) -> int:
        if node.kind == "torgb":
            return node.out_channels * node.in_channels * node.resolution**2
        if node.kind == "input":
            return node.w_dim * 2 * node.out_channels
        r_conv = node.resolution // node.up if node.up > 1 and node.resolution >= FUSED_UP_RESOLUTION \
            else node.resolution
        taps = 16 if r_conv != node.resolution else node.kernel_size**2
        blur = node.out_channels * 9 * node.resolution**2 if node.up > 1 else 0
        return node.out_channels * node.in_channels * taps * r_conv**2 + blur + node.w_dim * 2 * node.out_channels
