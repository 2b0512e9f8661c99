"""``AdaptiveKernelLayer``: one GigaGAN style layer, ``x [N, I, r/up, r/up]`` -> ``[N, O, r, r]``::

    s = affine(w)                                     (FC w_dim -> I, bias init 1: as moddemod)
    a = softmax(selector(w))                          (FC w_dim -> B, bias init 0)
    y = modulated_conv2d(x, sum_j a_j W_j, s, demodulate=True)   (up=2: transposed conv + [1,3,3,1] FIR)
    y = y + noise * noise_strength                    (noise [N,1,r,r] random or noise_const [r,r])
    y = clamp(lrelu(y + bias, 0.2) * sqrt(2) * gain, +-conv_clamp * gain)

Parameters, in state-dict order (NVlabs ``SynthesisLayer`` names where it has the part):
``affine.weight [I, w_dim]``, ``affine.bias [I]``, ``selector.weight [B, w_dim]``, ``selector.bias [B]``,
``weight_bank [B, O, I, 3, 3]``, ``noise_strength []``, ``bias [O]``; buffers ``resample_filter``
and ``noise_const [r, r]``. With ``B = 1`` a ``moddemod`` layer's state dict loads after renaming
``weight`` to ``weight_bank`` (with a leading axis of 1) and adding any ``selector``.

Selector initialisation: the library's equalised-lr FC (weights ``N(0, 1)``, runtime gain
``1/sqrt(w_dim)``) with bias 0, so at initialisation the logits are ``N(0, |w|^2 / w_dim)`` -- about unit
variance for mapping-network outputs: a soft, sample-dependent selection that is neither uniform (which
would give every sample the same kernel and the selector no signal to start from) nor saturated.
"""

from __future__ import annotations

import math

import torch
from sgtriton.blocks.layers import FullyConnectedLayer, check_layer_input, layer_noise
from sgtriton.blocks.nodes import LayerNode
from sgtriton.ops.upfirdn2d import setup_filter
from torch import nn

from sgtriton_adaptive_kernel.ops import adaptive_modulated_conv2d_layer
from sgtriton_adaptive_kernel.reference import selection_weights


class AdaptiveKernelLayer(nn.Module):
    """A StyleGAN2 synthesis layer whose conv kernel is a per-sample softmax mixture of a bank."""

    def __init__(self, node: LayerNode, bank_size: int, resample_filter: tuple[int, ...]) -> None:
        super().__init__()
        self.node = node
        self.in_channels = node.in_channels
        self.out_channels = node.out_channels
        self.resolution = node.resolution
        self.up = node.up
        self.bank_size = bank_size
        self.conv_clamp = node.conv_clamp
        self.act_gain = math.sqrt(2)
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(node.w_dim, node.in_channels, bias_init=1)
        self.selector = FullyConnectedLayer(node.w_dim, bank_size, bias_init=0)
        self.weight_bank = nn.Parameter(torch.randn([bank_size, node.out_channels, node.in_channels,
                                                     node.kernel_size, node.kernel_size]))
        if node.use_noise:
            self.register_buffer("noise_const", torch.randn([node.resolution, node.resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        else:
            self.noise_const = None
            self.noise_strength = None
        # After noise_strength, as NVlabs orders weight, noise_strength, bias.
        self.bias = nn.Parameter(torch.zeros([node.out_channels]))

    def selection_weights(self, w: torch.Tensor) -> torch.Tensor:
        """``a [N, B] = softmax(selector(w))``: how much of each bank entry every sample uses."""
        return selection_weights(self.selector(w))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool = True, gain: float = 1.0, impl: str = "reference") -> torch.Tensor:
        check_layer_input(x, self.in_channels, self.resolution // self.up, self.node.name)
        styles = self.affine(w, impl)
        logits = self.selector(w, impl)
        # Drawn the same way for every impl, so seeded runs of both see the same noise.
        noise = layer_noise(noise_mode, self.noise_const, x.shape[0], self.resolution, x.device)
        return adaptive_modulated_conv2d_layer(
            x, self.weight_bank, logits, styles, bias=self.bias, noise=noise,
            noise_strength=None if noise is None else self.noise_strength, up=self.up,
            gain=self.act_gain * gain, clamp=None if self.conv_clamp is None else self.conv_clamp * gain,
            resample_filter=self.resample_filter, fused_modconv=fused_modconv, impl=impl,
        )

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"resolution={self.resolution}, up={self.up}, bank_size={self.bank_size}")
