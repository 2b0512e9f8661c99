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
a ``[pixels, I] x [I, O]`` GEMM reading ``x`` channels-last (as the style layer leaves it) with the
style applied to the weight tile (the smaller one: ``O`` is a few image channels), and the epilogue
adds the bias, clamps, and adds the bilinear 2x2 gather of the previous image before one float32
store (the image stays NCHW).
"""

from __future__ import annotations

import torch

from sgtriton.ops._runtime import KernelConfig, KernelSpec, declare_kernel, torch_dtype
from sgtriton.ops.bias_act import bias_act_ref
from sgtriton.ops.modconv import _modconv_kernel, launch_modconv, modulated_conv2d_ref
from sgtriton.ops.upfirdn2d import STYLEGAN_FILTER, setup_filter, upfirdn2d_adjoint_padding, upsample2d

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
#: the narrowest output tile ``tl.dot`` allows, and deep channel steps. (256 x 16 x 64 with 8 warps
#: spills in fp32: on sm_80 under Triton 3.6 with 3 stages, on sm_90 under 3.9 with 2; with the
#: channels-last kernel a 2-warp 64 x 16 x 32 tile spills in fp16 on sm_80.)
TORGB_CONFIGS = (
    KernelConfig({"BLOCK_M": 128, "BLOCK_N": 16, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    KernelConfig({"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    KernelConfig({"BLOCK_M": 256, "BLOCK_N": 16, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    KernelConfig({"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 32}, num_warps=4, num_stages=3),
)


def _torgb_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): ToRGB of a 512-channel 32x32 layer (channels-last, as the
    style layer leaves it), batch 2, adding the
    previous 16x16 image (every block but the first), without it (the first block), and without clamp."""
    n, c, res = 2, 512, 32
    x = torch.randn(n, c, res, res, dtype=torch_dtype(dtype), device=device).to(memory_format=torch.channels_last)
    weight, styles, bias = (torch.randn(3, c, 1, 1, device=device), torch.randn(n, c, device=device),
                            torch.randn(3, device=device))
    img = torch.randn(n, 3, res // 2, res // 2, dtype=image_dtype(x.dtype), device=device)
    return {
        "skip-clamp": lambda: torgb_triton(x, weight, styles, bias, img, clamp=256.0),
        "no-skip": lambda: torgb_triton(x, weight, styles, bias, None, clamp=256.0),
        "skip": lambda: torgb_triton(x, weight, styles, bias, img),
    }


TORGB_KERNEL: KernelSpec = declare_kernel(
    "torgb", _modconv_kernel, TORGB_CONFIGS, uses_tensor_cores=True, launches=_torgb_launches,
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
                          clamp, None, image_dtype(x.dtype), config, channels_last=False)


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


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------
#
# For r = conv1x1(x, W s) + bias, out = clamp(r) + upsample2d(img) and G = dL/dout:
#   g = G where |r| <= clamp, else 0;  dbias = sum g;  dimg = upsample2d^T(G)  (an upfirdn2d);
#   dx[n,i] = s[n,i] u[n,i], u = sum_o W[o,i] g[n,o]   (the modulated-conv op with W^T, unit styles);
#   ds[n,i] = sum_p x u;   dW[o,i] = sum_{n,p} g[n,o,p] x[n,i,p] s[n,i].
# The clamp mask needs r before the clamp, which the output no longer holds where the clamp cut
# (out - upsample2d(img) only recovers it up to rounding): the kernel recomputes it when a clamp is set.


def _torgb_setup_context(ctx, inputs, output):
    x, weight, styles, bias, img, clamp = inputs
    ctx.save_for_backward(x, weight, styles, bias, img)
    ctx.args = (clamp, None if img is None else tuple(img.shape[2:]), tuple(output.shape[2:]))


def _torgb_backward(ctx, grad):
    x, weight, styles, bias, img = ctx.saved_tensors
    clamp, img_size, out_size = ctx.args
    needs = ctx.needs_input_grad
    g = grad
    if clamp is not None and clamp >= 0:
        r = torch.ops.sgtriton.torgb(x, weight, styles, bias, None, None)
        g = torch.where(r.abs() <= clamp, grad, torch.zeros_like(grad))
    gf = g.float()
    dbias = gf.sum(dim=[0, 2, 3]).to(bias.dtype) if bias is not None and needs[3] else None
    dimg = None
    if img is not None and needs[4]:
        f = setup_filter(SKIP_FILTER).to(grad.device)
        up, pad = (2, 2), [2, 1, 2, 1]
        adjoint = upfirdn2d_adjoint_padding(img_size, out_size, f, up, (1, 1), pad)
        dimg = torch.ops.sgtriton.upfirdn2d(grad.float().contiguous(), f, [1, 1], list(up), adjoint, True,
                                            4.0).to(img.dtype)
    weight_t = weight.float().transpose(0, 1).contiguous()
    ones = torch.ones(g.shape[:2], dtype=torch.float32, device=g.device)
    u = torch.ops.sgtriton.modulated_conv2d(gf, weight_t, ones, None, None, None, None, 1, False, "linear", 0.0,
                                            1.0, None, True)
    s = styles.float()
    dx = (u * s[:, :, None, None]).to(x.dtype) if needs[0] else None
    dstyles = (x.float() * u).sum(dim=[2, 3]).to(styles.dtype) if needs[2] else None
    dweight = None
    if needs[1]:
        dweight = torch.ops.sgtriton.modconv_weight_grad(x.float() * s[:, :, None, None], gf, 1)
        dweight = dweight.reshape(weight.shape).to(weight.dtype)
    return dx, dweight, dstyles, dbias, dimg, None


_torgb_op.register_autograd(_torgb_backward, setup_context=_torgb_setup_context)
