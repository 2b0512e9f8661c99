"""Upsample, FIR-filter, downsample (``upfirdn2d``) and the filter tensors StyleGAN uses.

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

Implementations: ``impl='ref'`` (:func:`upfirdn2d_ref`, PyTorch pad/conv ops) and ``impl='triton'``
(:func:`_upfirdn2d_kernel`, registered as ``sgtriton::upfirdn2d``): one fused kernel that visits,
for each output pixel, only the filter taps that land on a real (not zero-inserted) input sample,
so up-sampling by 2 costs a quarter of the taps. It reads fp32/fp16 and accumulates in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from sgtriton.filters import STYLEGAN_FILTER  # re-exported: the kernels that fuse these taps import it here
from sgtriton.ops._runtime import KernelConfig, declare_kernel, launch_config, torch_dtype, triton_dtype
from sgtriton.ops._triton_utils import as_fp32_param, check_kernel_input

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
    if len(value) != 2:
        raise ValueError(f"{name}={value!r}: expected a positive int or a pair of positive ints")
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

    # 1. Zero insertion (nothing to insert, and no copy, when up = 1).
    if upx > 1 or upy > 1:
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


# --------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------


@triton.jit
def _upfirdn2d_kernel(
    x_ptr, f_ptr, y_ptr,
    channels, in_h, in_w, out_h, out_w,
    stride_xn, stride_xc, stride_xh, stride_xw,
    pad_x0, pad_y0, gain,
    UP_X: tl.constexpr, UP_Y: tl.constexpr, DOWN_X: tl.constexpr, DOWN_Y: tl.constexpr,
    FILTER_W: tl.constexpr, FILTER_H: tl.constexpr, SEPARABLE: tl.constexpr, FLIP_FILTER: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """One ``BLOCK_H x BLOCK_W`` tile of one ``(n, c)`` output plane of ``upfirdn2d``.

    Output pixel ``(oy, ox)`` is ``gain * sum_{ky,kx} f'[ky, kx] * U[oy*DOWN_Y + ky - pad_y0,
    ox*DOWN_X + kx - pad_x0]``, where ``U`` is the zero-inserted image (``U[u, v] = x[u/UP_Y, v/UP_X]``
    when both divide, zero elsewhere and outside) and ``f'`` is ``f`` flipped on both axes unless
    FLIP_FILTER (so the default is a true convolution). Only taps with ``oy*DOWN_Y + ky - pad_y0``
    divisible by ``UP_Y`` (likewise x) can hit a sample: per axis they are ``k0 + j*UP`` for
    ``j < cdiv(FILTER, UP)``, with ``k0`` the row's phase, and only those are visited.

    Pointers:
        x_ptr: ``[N, C, in_h, in_w]`` input (fp32/fp16/bf16), any strides.
        f_ptr: fp32 filter, contiguous: ``[FILTER_H, FILTER_W]``, or ``[FILTER_W]`` when SEPARABLE
            (then ``f[ky, kx] = f[ky] * f[kx]`` and ``FILTER_H == FILTER_W``).
        y_ptr: ``[N, C, out_h, out_w]`` contiguous output, ``x``'s dtype.
    Sizes (i32): ``channels`` (C), ``in_h``, ``in_w``, ``out_h``, ``out_w``; strides of ``x`` in elements.
    Scalars: ``pad_x0``, ``pad_y0`` (i32, left/top padding, negative crops); ``gain`` (fp32, the
        product of the filter's gain on both axes).
    Constexprs: up/down factors per axis, filter size, SEPARABLE, FLIP_FILTER, tile size.
    Grid: 1-D, ``N * C * cdiv(out_h, BLOCK_H) * cdiv(out_w, BLOCK_W)`` programs, the tiles of one
    plane consecutive (a 1-D grid has no 65535 limit on either count).
    """
    TAPS_Y: tl.constexpr = (FILTER_H + UP_Y - 1) // UP_Y
    TAPS_X: tl.constexpr = (FILTER_W + UP_X - 1) // UP_X
    tiles_w = tl.cdiv(out_w, BLOCK_W)
    tiles = tl.cdiv(out_h, BLOCK_H) * tiles_w
    plane = tl.program_id(0) // tiles
    tile = tl.program_id(0) % tiles
    oy = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    ox = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    n = plane // channels
    c = plane % channels
    x_plane = x_ptr + n.to(tl.int64) * stride_xn + c.to(tl.int64) * stride_xc

    # Up-sampled coordinate of tap 0, shifted by whole periods so that it is never negative
    # (integer division and remainder then need no sign care); its phase gives the first live tap.
    shift_y = tl.cdiv(tl.maximum(pad_y0, 0), UP_Y) * UP_Y
    shift_x = tl.cdiv(tl.maximum(pad_x0, 0), UP_X) * UP_X
    uy = oy * DOWN_Y - pad_y0 + shift_y
    ux = ox * DOWN_X - pad_x0 + shift_x
    ky0 = (UP_Y - uy % UP_Y) % UP_Y
    kx0 = (UP_X - ux % UP_X) % UP_X
    iy0 = (uy + ky0) // UP_Y - shift_y // UP_Y
    ix0 = (ux + kx0) // UP_X - shift_x // UP_X

    acc = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    # Rows of taps loop, columns unroll: fully unrolling a 12 x 12 separable filter makes ptxas spill.
    for j in range(TAPS_Y):
        ky = ky0 + j * UP_Y
        iy = iy0 + j
        row_ok = (ky < FILTER_H) & (iy >= 0) & (iy < in_h)
        fy = ky if FLIP_FILTER else FILTER_H - 1 - ky
        for i in tl.static_range(TAPS_X):
            kx = kx0 + i * UP_X
            ix = ix0 + i
            col_ok = (kx < FILTER_W) & (ix >= 0) & (ix < in_w)
            fx = kx if FLIP_FILTER else FILTER_W - 1 - kx
            ok = row_ok[:, None] & col_ok[None, :]
            if SEPARABLE:
                wy = tl.load(f_ptr + fy, mask=row_ok, other=0.0)
                wx = tl.load(f_ptr + fx, mask=col_ok, other=0.0)
                w = wy[:, None] * wx[None, :]
            else:
                w = tl.load(f_ptr + fy[:, None] * FILTER_W + fx[None, :], mask=ok, other=0.0)
            v = tl.load(x_plane + iy[:, None] * stride_xh + ix[None, :] * stride_xw, mask=ok, other=0.0)
            acc += w * v.to(tl.float32)
    acc *= gain

    y_plane = y_ptr + plane.to(tl.int64) * out_h * out_w
    out_ok = (oy[:, None] < out_h) & (ox[None, :] < out_w)
    tl.store(y_plane + oy[:, None] * out_w + ox[None, :], acc.to(y_ptr.dtype.element_ty), mask=out_ok)


def _upfirdn2d_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): the generators' resampling of a 512-channel 32x32 map --
    StyleGAN2's 2x up-sampling with the 4x4 ``[1,3,3,1]`` filter (skip images, 3 channels, too),
    StyleGAN1's nearest 2x up-sampling and its 3x3 blur."""
    x = torch.randn(2, 512, 32, 32, dtype=torch_dtype(dtype), device=device)
    img = torch.randn(2, 3, 32, 32, dtype=torch_dtype(dtype), device=device)
    fir = setup_filter(STYLEGAN_FILTER).to(device)
    blur = setup_filter([1, 2, 1]).to(device)
    nearest = torch.ones([2, 2], device=device)
    return {
        "up2-fir": lambda: _upfirdn2d_launch(x, fir, (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0),
        "up2-fir-image": lambda: _upfirdn2d_launch(img, fir, (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0),
        "up2-nearest": lambda: _upfirdn2d_launch(x, nearest, (2, 2), (1, 1), (1, 0, 1, 0), False, 1.0),
        "blur3": lambda: _upfirdn2d_launch(x, blur, (1, 1), (1, 1), (1, 1, 1, 1), False, 1.0),
    }


UPFIRDN2D_KERNEL = declare_kernel(
    "upfirdn2d",
    _upfirdn2d_kernel,
    configs=[
        KernelConfig(meta={"BLOCK_H": 16, "BLOCK_W": 32}, num_warps=4, num_stages=1),
        KernelConfig(meta={"BLOCK_H": 32, "BLOCK_W": 32}, num_warps=4, num_stages=1),
        KernelConfig(meta={"BLOCK_H": 8, "BLOCK_W": 64}, num_warps=4, num_stages=1),
        KernelConfig(meta={"BLOCK_H": 32, "BLOCK_W": 64}, num_warps=8, num_stages=1),
    ],
    launches=_upfirdn2d_launches,
    dtypes=("fp32", "fp16", "bf16"),
    description="fused zero-insert up-sampling, padding/cropping, FIR filter and decimation",
)


def _upfirdn2d_launch(
    x: torch.Tensor, f: torch.Tensor, up: tuple[int, int], down: tuple[int, int],
    padding: tuple[int, int, int, int], flip_filter: bool, gain: float,
) -> torch.Tensor:
    """Launch :func:`_upfirdn2d_kernel`; arguments already validated (``f`` 1-D or 2-D)."""
    (upx, upy), (downx, downy) = up, down
    px0, px1, py0, py1 = padding
    n, c, in_h, in_w = x.shape
    fw, fh = filter_size(f)
    out_h, out_w = _output_size(in_h, in_w, fw, fh, up, down, padding)
    y = torch.empty([n, c, out_h, out_w], dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    config = launch_config(UPFIRDN2D_KERNEL, (("dtype", triton_dtype(x.dtype)), ("up", (upx, upy)),
                                              ("down", (downx, downy)), ("filter", (fw, fh)),
                                              ("h", min(out_h, 1024)), ("w", min(out_w, 1024))))
    # Small planes (the 4x4 .. 16x16 layers) get a tile no larger than the plane.
    block_h = min(config.meta["BLOCK_H"], triton.next_power_of_2(out_h))
    block_w = min(config.meta["BLOCK_W"], triton.next_power_of_2(out_w))
    grid = (n * c * triton.cdiv(out_h, block_h) * triton.cdiv(out_w, block_w),)
    _upfirdn2d_kernel[grid](
        x, as_fp32_param(f), y,
        c, in_h, in_w, out_h, out_w,
        *x.stride(),
        px0, py0, float(gain),
        UP_X=upx, UP_Y=upy, DOWN_X=downx, DOWN_Y=downy, FILTER_W=fw, FILTER_H=fh,
        SEPARABLE=f.ndim == 1, FLIP_FILTER=flip_filter, BLOCK_H=block_h, BLOCK_W=block_w,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return y


def _output_size(in_h: int, in_w: int, fw: int, fh: int, up: tuple[int, int], down: tuple[int, int],
                 padding: tuple[int, int, int, int]) -> tuple[int, int]:
    """``(out_h, out_w)``: ``(in*up + pad0 + pad1 - f + down) // down`` per axis."""
    px0, px1, py0, py1 = padding
    out_h = (in_h * up[1] + py0 + py1 - fh + down[1]) // down[1]
    out_w = (in_w * up[0] + px0 + px1 - fw + down[0]) // down[0]
    return out_h, out_w


@torch.library.custom_op("sgtriton::upfirdn2d", mutates_args=())
def _upfirdn2d_op(
    x: torch.Tensor, f: torch.Tensor, up: list[int], down: list[int], padding: list[int],
    flip_filter: bool, gain: float,
) -> torch.Tensor:
    """``sgtriton::upfirdn2d``: ``up``/``down`` as ``[x, y]``, ``padding`` as ``[px0, px1, py0, py1]``."""
    return _upfirdn2d_launch(x, f, tuple(up), tuple(down), tuple(padding), flip_filter, gain)


@_upfirdn2d_op.register_fake
def _upfirdn2d_fake(x, f, up, down, padding, flip_filter, gain):
    fw, fh = filter_size(f)
    out_h, out_w = _output_size(x.shape[2], x.shape[3], fw, fh, tuple(up), tuple(down), tuple(padding))
    return x.new_empty([x.shape[0], x.shape[1], out_h, out_w])


def _check_upfirdn2d_args(
    x: torch.Tensor, f: torch.Tensor | None, up: tuple[int, int], down: tuple[int, int],
    padding: tuple[int, int, int, int],
) -> torch.Tensor:
    """Validate the Triton path's arguments; return the filter (a 1 x 1 identity for ``None``)."""
    check_kernel_input(x, "x")
    if x.ndim != 4:
        raise ValueError(f"x: expected [N, C, H, W], got shape {list(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if not isinstance(f, torch.Tensor) or not f.is_floating_point() or f.ndim not in (1, 2) or f.numel() == 0:
        got = f"{f.dtype} tensor of shape {list(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(f"f: expected a non-empty 1-D or 2-D floating-point filter, got {got}")
    if f.device != x.device:
        raise ValueError(f"f: on {f.device}, expected x's device {x.device}")
    fw, fh = filter_size(f)
    out_h, out_w = _output_size(x.shape[2], x.shape[3], fw, fh, up, down, padding)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"padding={list(padding)}: with x {list(x.shape[2:])}, filter {fh}x{fw}, up={up}, "
                         f"down={down} the output would be {out_h}x{out_w}; expected at least 1x1")
    return f


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
    """Upsample, pad, FIR-filter and downsample each channel of ``x [N, C, H, W]`` (see module doc).

    ``f``: ``[fh, fw]``, ``[fw]`` (separable) or ``None``; ``up``/``down``: int or ``(x, y)``;
    ``padding``: int, ``[px, py]`` or ``[px0, px1, py0, py1]`` (negative crops).
    Returns ``[N, C, (H*up + py0 + py1 - fh + down) // down, (W*up + px0 + px1 - fw + down) // down]``
    in ``x.dtype``. ``impl='ref'`` runs :func:`upfirdn2d_ref`, ``impl='triton'`` the fused kernel.
    """
    if impl == "ref":
        return upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    if impl == "triton":
        upx, upy = parse_scaling(up, "up")
        downx, downy = parse_scaling(down, "down")
        pad = parse_padding(padding)
        f = _check_upfirdn2d_args(x, f, (upx, upy), (downx, downy), pad)
        return torch.ops.sgtriton.upfirdn2d(x, f, [upx, upy], [downx, downy], list(pad), bool(flip_filter),
                                            float(gain))
    raise ValueError(f"impl={impl!r}: expected 'ref' or 'triton'")


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


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------


def upfirdn2d_adjoint_padding(
    in_size: tuple[int, int], out_size: tuple[int, int], f: torch.Tensor, up: tuple[int, int],
    down: tuple[int, int], padding: tuple[int, int, int, int],
) -> list[int]:
    """Padding ``[px0, px1, py0, py1]`` of the ``upfirdn2d`` that is the adjoint (transpose) of this one.

    ``upfirdn2d`` is linear, and its transpose is again an ``upfirdn2d`` of the output gradient with
    ``up`` and ``down`` swapped and the filter flipped (a correlation where the forward convolves). Per
    axis, forward tap ``k`` links output ``o`` to input ``i`` when ``o*down + k - pad0 = i*up``; the
    transpose must link them with its own taps ``k' = fsize - 1 - k`` as ``i*up + k' - pad0' = o*down``,
    so ``pad0' = fsize - 1 - pad0``, and ``pad1'`` is whatever makes the output ``in_size`` long:
    ``pad1' = in*up - out*down + pad0 - up + 1``.
    """
    (in_h, in_w), (out_h, out_w) = in_size, out_size
    fw, fh = filter_size(f)
    (upx, upy), (downx, downy) = up, down
    px0, _, py0, _ = padding
    return [fw - px0 - 1, in_w * upx - out_w * downx + px0 - upx + 1,
            fh - py0 - 1, in_h * upy - out_h * downy + py0 - upy + 1]


def _upfirdn2d_setup_context(ctx, inputs, output):
    x, f, up, down, padding, flip_filter, gain = inputs
    ctx.save_for_backward(f)
    ctx.args = (tuple(x.shape[2:]), tuple(output.shape[2:]), tuple(up), tuple(down), tuple(padding),
                flip_filter, gain)


def _upfirdn2d_backward(ctx, grad):
    (f,) = ctx.saved_tensors
    in_size, out_size, up, down, padding, flip_filter, gain = ctx.args
    pad = upfirdn2d_adjoint_padding(in_size, out_size, f, up, down, padding)
    # The transpose is the same differentiable op, so double backward comes for free.
    dx = torch.ops.sgtriton.upfirdn2d(grad.contiguous(), f, list(down), list(up), pad, not flip_filter, gain)
    return dx, None, None, None, None, None, None


_upfirdn2d_op.register_autograd(_upfirdn2d_backward, setup_context=_upfirdn2d_setup_context)
