"""Building blocks shared by block types: the equalised-lr FC layer, the modulated ToRGB,
the resnet skip conv and the per-layer noise source. NVlabs parameter names throughout."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from sgtriton.backends import op_impl
from sgtriton.blocks.base import NOISE_MODES
from sgtriton.ops.conv2d_resample import conv2d_resample
from sgtriton.ops.fully_connected import fully_connected
from sgtriton.ops.modconv import modulated_conv2d_layer
from sgtriton.ops.torgb import SKIP_FILTER, torgb_layer
from sgtriton.ops.upfirdn2d import setup_filter, upsample2d


class FullyConnectedLayer(nn.Module):
    """Equalised-lr linear layer: ``y = act(x @ (W * lr/sqrt(in) * gain_scale)^T + b * lr) * act_gain``.

    ``weight [out, in]`` is initialised ``N(0, 1) / lr_multiplier``; ``bias [out]`` to ``bias_init``.
    ``weight_gain_scale = sqrt 2`` with ``act_gain = 1`` gives StyleGAN1's dense layer.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
        weight_gain_scale: float = 1.0,
        act_gain: float | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = weight_gain_scale * lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.act_gain = act_gain

    def forward(self, x: torch.Tensor, impl: str = "reference") -> torch.Tensor:
        return fully_connected(x, self.weight, self.bias, self.weight_gain, self.bias_gain, self.activation,
                               self.act_gain, impl=op_impl(impl))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


#: ``draw(batch, resolution, device) -> [batch, 1, r, r]``: where ``noise_mode='random'`` draws from.
NoiseSource = Callable[[int, int, torch.device], torch.Tensor]

_NOISE_SOURCE: contextvars.ContextVar[NoiseSource | None] = contextvars.ContextVar(
    "sgtriton_noise_source", default=None)


@contextlib.contextmanager
def noise_source(source: NoiseSource) -> Iterator[None]:
    """Within this context, every noisy layer's ``noise_mode='random'`` noise is ``source(batch, r,
    device)``, called once per noisy layer in forward order (instead of the global RNG)."""
    token = _NOISE_SOURCE.set(source)
    try:
        yield
    finally:
        _NOISE_SOURCE.reset(token)


def active_noise_source() -> NoiseSource | None:
    """The source installed by :func:`noise_source` (``None``: the global RNG)."""
    return _NOISE_SOURCE.get()


class PerSampleNoise:
    """Sample ``i``'s noise maps from ``generators[i]`` (CPU generators; one ``[1, 1, r, r]`` normal draw
    per noisy layer, in forward order), so each sample's noise depends on its own generator only,
    not on the batch it shares or the device."""

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        self.generators = list(generators)

    def __call__(self, batch: int, resolution: int, device: torch.device) -> torch.Tensor:
        if len(self.generators) != batch:
            raise ValueError(f"per_sample_noise: {len(self.generators)} generator(s) for a batch of {batch}")
        maps = [torch.randn([1, 1, resolution, resolution], generator=g) for g in self.generators]
        return torch.cat(maps).to(device)


def per_sample_noise(generators: Sequence[torch.Generator]) -> contextlib.AbstractContextManager[None]:
    """:func:`noise_source` with a :class:`PerSampleNoise` of ``generators``."""
    return noise_source(PerSampleNoise(generators))


def layer_noise(
    noise_mode: str, noise_const: torch.Tensor | None, batch: int, resolution: int, device: torch.device
) -> torch.Tensor | None:
    """Unscaled noise for one layer: ``[N, 1, r, r]`` fresh normal, ``[r, r]`` stored, or ``None``.

    Fresh noise comes from the global RNG, or from the source installed by :func:`noise_source`."""
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode={noise_mode!r}: expected one of {NOISE_MODES}")
    if noise_const is None or noise_mode == "none":
        return None
    if noise_mode == "random":
        source = _NOISE_SOURCE.get()
        if source is None:
            return torch.randn([batch, 1, resolution, resolution], device=device)
        return source(batch, resolution, device)
    return noise_const


def check_layer_input(x: torch.Tensor, channels: int, resolution: int, name: str) -> None:
    """Refuse an input of the wrong shape with a message naming the layer."""
    if x.ndim != 4 or x.shape[1] != channels or x.shape[2] != resolution or x.shape[3] != resolution:
        raise ValueError(f"{name}: expected input [N, {channels}, {resolution}, {resolution}], "
                         f"got {list(x.shape)}")


def add_skip_image(y: torch.Tensor, skip: torch.Tensor | None, resample_filter: torch.Tensor,
                   impl: str = "reference") -> torch.Tensor:
    """The skip architecture's image sum: ``upsample2d(skip) + y`` (``y`` alone without ``skip``)."""
    return y if skip is None else upsample2d(skip.to(y.dtype), resample_filter, impl=op_impl(impl)) + y


class DeviceTensorsMixin:
    """Tensors a module needs at run time but that NVlabs' module lacks: plain attributes (neither
    buffers nor state), moved by ``.to()`` / ``.cuda()`` / ``.double()`` with the module all the same.

    Non-persistent buffers would stay out of state dicts but not out of ``named_buffers()``, which
    NVlabs' ``misc.copy_params_and_buffers(..., require_all=True)`` walks.
    """

    device_tensors: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        for name in self.device_tensors:
            setattr(self, name, fn(getattr(self, name)))
        return super()._apply(fn, recurse)


class ModulatedToRGB(DeviceTensorsMixin, nn.Module):
    """StyleGAN2 ToRGB: modulated 1x1 conv without demodulation, + bias, clamp, + skip image.

    ``styles = affine(w) / sqrt(I)``; ``y = clamp(conv1x1(x * styles, W) + b, +-conv_clamp)``, returned
    in float32 (float64 for float64 inputs) as ``upsample2d(skip) + y`` when ``skip`` is given. The
    Triton path is one kernel (``torgb``) with the skip image's upsample-and-add in its epilogue.
    """

    device_tensors = ("resample_filter",)

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None,
                 resample_filter: tuple[int, ...] = SKIP_FILTER) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)
        # The skip image's FIR; NVlabs' ToRGBLayer has no such tensor (its block holds it).
        self.resample_filter = setup_filter(resample_filter)
        self.fusable_skip = tuple(resample_filter) == SKIP_FILTER  # the kernel's epilogue has these taps

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True, impl: str = "reference",
                skip: torch.Tensor | None = None) -> torch.Tensor:
        styles = self.affine(w, impl) * self.weight_gain
        return rgb_with_skip(x, self.weight, styles, self.bias, self.conv_clamp, skip, self.resample_filter,
                             self.fusable_skip, fused_modconv, impl)


def rgb_with_skip(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, bias: torch.Tensor,
                  clamp: float | None, skip: torch.Tensor | None, resample_filter: torch.Tensor,
                  fusable_skip: bool, fused_modconv: bool, impl: str) -> torch.Tensor:
    """``upsample2d(skip) + clamp(conv1x1(x, weight * styles) + bias)``: one ``torgb`` kernel when the skip
    filter is StyleGAN's ``[1,3,3,1]``, else the ToRGB kernel and a separate FIR upsample."""
    if impl == "triton" and (fusable_skip or skip is None):
        return torgb_layer(x, weight, styles, bias, img=skip, clamp=clamp, impl="triton")
    y = torgb_layer(x, weight, styles, bias, clamp=clamp, fused_modconv=fused_modconv, impl=op_impl(impl))
    return add_skip_image(y, skip, resample_filter, impl)


def image_dtype(x: torch.Tensor) -> torch.dtype:
    """The image path's dtype: float64 for float64 features, else float32 (also for fp16 blocks)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class SkipConv(nn.Module):
    """resnet skip: 1x1 conv (``weight [O, I, 1, 1]`` / sqrt(I), no bias) then FIR ``upsample2d``, times ``gain``."""

    def __init__(self, in_channels: int, out_channels: int, resample_filter: tuple[int, ...]) -> None:
        super().__init__()
        # NVlabs Conv2dLayer attributes.
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = "linear"
        self.up, self.down, self.padding = 2, 1, 0
        self.conv_clamp = None
        self.act_gain = 1.0
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, gain: float = 1.0, impl: str = "reference") -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if impl == "reference":
            x = conv2d_resample(x, w, self.resample_filter, up=2)
            return x * gain if gain != 1 else x
        ones = torch.ones([x.shape[0], x.shape[1]], dtype=torch.float32, device=x.device)
        x = modulated_conv2d_layer(x, self.weight * self.weight_gain, ones, demodulate=False, act="linear",
                                   gain=1.0, impl="triton")
        return upsample2d(x, self.resample_filter, gain=gain, impl="triton")
