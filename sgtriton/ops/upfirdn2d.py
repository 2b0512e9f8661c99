"""Upsample, FIR-filter, downsample (``upfirdn2d``) and the filters StyleGAN uses.

Per channel of ``x [N, C, H, W]``:

1. upsample by zero insertion: each sample is followed by ``up - 1`` zeros -> ``[H*up, W*up]``;
2. pad ``px0`` left, ``px1`` right, ``py0`` top, ``py1`` bottom with zeros (negative crops);
3. filter with ``f * gain**(f.ndim / 2)`` in "valid" mode; a true convolution when
   ``flip_filter=False`` (the filter is flipped, then cross-correlated), a correlation otherwise;
4. keep every ``down``-th sample starting at index 0.

Output size per axis: ``(H*up + py0 + py1 - fh + down) // down``.

``f`` is ``[fh, fw]`` (non-separable), ``[fw]`` (separable, applied along both axes) or ``None``
(identity). StyleGAN's ``[1, 3, 3, 1]`` filter is non-separable: fewer than 8 taps
(:func:`setup_filter`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

PadSpec = int | Sequence[int]


def setup_filter(
    f: Sequence[float] | torch.Tensor | None,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1.0,
    separable: bool | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Turn a list of taps into the float filter tensor ``upfirdn2d`` expects.

    A 1-D filter becomes separable only if it has at least 8 taps (``separable=None``); otherwise it
    is expanded to the 2-D outer product. ``normalize`` scales the taps to sum 1; ``gain`` is then
    multiplied in. ``[1,3,3,1]`` -> the 4x4 matrix ``outer([1,3,3,1]) / 64``.
    """
    if f is None:
        f = [1.0]
    f = torch.as_tensor(f, dtype=torch.float64)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"f: expected a non-empty 1-D or 2-D list of taps, got shape {list(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(dtype)


def parse_scaling(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``up``/``down`` as ``(sx, sy)``; both must be positive integers."""
    if isinstance(value, int):
        value = (value, value)
    sx, sy = (int(v) for v in value)
    if sx < 1 or sy < 1:
        raise ValueError(f"{name}={value!r}: expected a positive int or a pair of positive ints")
    return sx, sy


def parse_padding(padding: PadSpec) -> tuple[int, int, int, int]:
    """``padding`` as ``(px0, px1, py0, py1)`` from an int, ``[px, py]`` or the full four."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return tuple(padding)  # type: ignore[return-value]
    raise ValueError(f"padding={padding!r}: expected an int, [px, py] or [px0, px1, py0, py1]")


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """``(fw, fh)`` of a filter tensor (1 x 1 for ``None``)."""
    if f is None:
        return 1, 1
    return f.shape[-1], f.shape[0]


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: PadSpec = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Reference ``upfirdn2d`` in plain PyTorch; returns ``[N, C, H', W']`` in ``x.dtype``."""
    if x.ndim != 4:
        raise ValueError(f"x: expected [N, C, H, W], got shape {list(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2):
        raise ValueError(f"f: expected a 1-D or 2-D filter, got shape {list(f.shape)}")
    upx, upy = parse_scaling(up, "up")
    downx, downy = parse_scaling(down, "down")
    px0, px1, py0, py1 = parse_padding(padding)
    n, c, h, w = x.shape

    # 1. Zero insertion.
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)
    # 2. Pad (positive) then crop (negative).
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    # 3. Filter (depthwise); flipping turns PyTorch's correlation into a convolution.
    f = f.to(x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].repeat(c, 1, 1, 1), groups=c)
    # 4. Decimate.
    return x[:, :, ::downy, ::downx]


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: PadSpec = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
    impl: str = "ref",
) -> torch.Tensor:
    """``upfirdn2d`` with a choice of implementation (``impl='ref'|'triton'``)."""
    if impl == "ref":
        return upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    raise ValueError(f"impl={impl!r}: expected 'ref'")


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 2,
    padding: PadSpec = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
    impl: str = "ref",
) -> torch.Tensor:
    """Upsample by ``up`` with FIR ``f``, output exactly ``up`` times larger (plus ``padding``).

    For StyleGAN's 4-tap filter the padding is ``[2, 1, 2, 1]`` and the gain ``up**2``; per axis
    ``y[2i] = (x[i-1] + 3 x[i]) / 4`` and ``y[2i+1] = (3 x[i] + x[i+1]) / 4`` with zeros outside.
    """
    upx, upy = parse_scaling(up, "up")
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)
