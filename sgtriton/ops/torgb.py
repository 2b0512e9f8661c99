"""ToRGB with the skip image fused in (StyleGAN2 ``ToRGBLayer`` plus the block's image update).

For sample ``n``, image channel ``o`` and output pixel ``p``::

    rgb[n,o,p] = clamp(sum_i W[o,i] * s[n,i] * x[n,i,p] + bias[o], -clamp, +clamp)   (1x1, no demodulation)
    out[n,o,p] = rgb[n,o,p] + upsample2d(img)[n,o,p]                                  (img optional)

``styles`` arrive already multiplied by the ToRGB weight gain ``1/sqrt(I)`` (the caller's affine
does it, as in NVlabs). ``upsample2d`` is the ``[1,3,3,1]`` FIR 2x upsample (padding
``[2,1,2,1]``, gain 4): per axis ``u[2i] = (img[i-1] + 3 img[i]) / 4``, ``u[2i+1] = (3 img[i] +
img[i+1]) / 4`` with zeros outside. The clamp applies to the ToRGB output before the image is added
(NVlabs clamps inside ``bias_act``; ``conv_clamp`` is not multiplied by a gain here).

Shapes: ``x [N, I, H, W]`` (H, W even when ``img`` is given), ``weight [O, I, 1, 1]``,
``styles [N, I]``, ``bias [O]``, ``img [N, O, H/2, W/2]`` or ``None``. Returns ``[N, O, H, W]`` in
float32 (the image path is float32 in NVlabs even for fp16 blocks; float64 stays float64).

The kernel is the ``SKIP`` specialisation of the modulated-conv kernel in
:mod:`sgtriton.ops.modconv` (``KH = KW = 1``, no demodulation, linear activation): the 1x1 conv is
a ``[pixels, I] x [I, O]`` GEMM with the style applied to the weight tile, and the epilogue adds
the bias, clamps, and adds the bilinear 2x2 gather of the previous image before one float32 store.
"""

from __future__ import annotations

import torch

from sgtriton.ops._runtime import AotSignature, KernelConfig, KernelSpec, declare_kernel
from sgtriton.ops.bias_act import ACTIVATIONS, bias_act_ref
from sgtriton.ops.modconv import (
    UNIT_STRIDES,
    _modconv_kernel,
    aot_signature_for,
    launch_modconv,
    modulated_conv2d_ref,
)
from sgtriton.ops.upfirdn2d import STYLEGAN_FILTER, setup_filter, upsample2d

#: StyleGAN's skip-image filter; the kernel's epilogue hard-codes its taps (1/4, 3/4 per axis).
SKIP_FILTER = STYLEGAN_FILTER


def image_dtype(x_dtype: torch.dtype) -> torch.dtype:
    """The image path's dtype: float32, or float64 for float64 activations."""
    return torch.promote_types(x_dtype, torch.float32)


def torgb_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor | None,
    img: torch.Tensor | None = None,
    clamp: float | None = None,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """Reference: ``modulated_conv2d_ref`` (1x1, no demodulation) -> ``bias_act_ref`` -> + ``upsample2d(img)``."""
    y = modulated_conv2d_ref(x, weight, styles, demodulate=False, fused_modconv=fused_modconv)
    y = bias_act_ref(y, None if bias is None else bias.to(y.dtype), clamp=clamp)
    y = y.to(image_dtype(x.dtype))
    if img is None:
        return y
    return upsample2d(img.to(y.dtype), setup_filter(SKIP_FILTER).to(x.device)) + y


#: Tuning space (first = default). ToRGB is memory-bound (I channels in, 3 out): tall pixel tiles,
#: the narrowest output tile ``tl.dot`` allows, and deep channel steps.
TORGB_CONFIGS = (
    KernelConfig({"BLOCK_M": 128, "BLOCK_N": 16, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    KernelConfig({"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    KernelConfig({"BLOCK_M": 256, "BLOCK_N": 16, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    KernelConfig({"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    KernelConfig({"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 32}, num_warps=2, num_stages=2),
    KernelConfig({"BLOCK_M": 256, "BLOCK_N": 16, "BLOCK_K": 64}, num_warps=8, num_stages=3),
)


def _torgb_aot(config: KernelConfig, dtype: str) -> AotSignature:
    pointers = dict.fromkeys(("w_ptr", "wp_ptr", "s_ptr", "bias_ptr", "noise_ptr", "strength_ptr", "skip_ptr",
                              "out_ptr"), "*fp32")
    pointers["x_ptr"] = f"*{dtype}"
    constexprs = dict(UP=1, KH=1, KW=1, DEMOD=False, PRENORM=False, HAS_NOISE=False, HAS_BIAS=True,
                      ACT=ACTIVATIONS["linear"].kernel_code, USE_CLAMP=True, SKIP=True, FLAT_X=True, **config.meta)
    constexprs.update(dict.fromkeys(UNIT_STRIDES[1], 1))
    return aot_signature_for(_modconv_kernel, pointers, constexprs)


TORGB_KERNEL: KernelSpec = declare_kernel(
    "torgb", _modconv_kernel, TORGB_CONFIGS, _torgb_aot, uses_tensor_cores=True,
    description="ToRGB: modulated 1x1 conv + bias + clamp + upsample2d(previous image) add, one launch",
)


def torgb_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor | None,
    img: torch.Tensor | None = None,
    clamp: float | None = None,
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """ToRGB on the Triton kernel (one launch); ``config`` overrides the tuned choice."""
    if weight.ndim != 4 or weight.shape[2:] != (1, 1):
        raise ValueError(f"weight: expected [O, I, 1, 1], got shape {list(weight.shape)}")
    return launch_modconv(TORGB_KERNEL, x, weight, styles, bias, None, None, img, 1, False, "linear", 0.0, 1.0,
                          clamp, None, image_dtype(x.dtype), config)


@torch.library.custom_op("sgtriton::torgb", mutates_args=())
def _torgb_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor | None,
    img: torch.Tensor | None,
    clamp: float | None,
) -> torch.Tensor:
    return torgb_triton(x, weight, styles, bias, img, clamp)


@_torgb_op.register_fake
def _(x, weight, styles, bias, img, clamp):
    return x.new_empty([x.shape[0], weight.shape[0], x.shape[2], x.shape[3]], dtype=image_dtype(x.dtype))


def torgb_layer(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    img: torch.Tensor | None = None,
    clamp: float | None = None,
    fused_modconv: bool = True,
    impl: str = "ref",
) -> torch.Tensor:
    """``clamp(conv1x1(x, W * s) + bias) + upsample2d(img)`` (see the module docstring for shapes).

    ``impl='ref'`` composes the reference ops (``fused_modconv`` picks NVlabs' formulation);
    ``impl='triton'`` runs the ``sgtriton::torgb`` op (one kernel launch).
    """
    if impl == "ref":
        return torgb_ref(x, weight, styles, bias, img, clamp, fused_modconv)
    if impl != "triton":
        raise ValueError(f"impl={impl!r}: expected 'ref' or 'triton'")
    return torch.ops.sgtriton.torgb(x, weight, styles, bias, img, clamp)
