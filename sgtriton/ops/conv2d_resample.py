"""2-D convolution with optional FIR up-sampling (``conv2d_resample``, ``down = 1``).

``y = upfirdn2d(conv_transpose2d(x, w, stride=up), f, gain=up**2)`` for ``up > 1`` and a
``k x k`` kernel with ``k > 1``; ``y = upsample2d(conv2d(x, w), f)`` for a ``1 x 1`` kernel; a plain
``conv2d`` for ``up = 1``. ``padding`` is expressed with respect to the up-sampled image and
applied once, so for StyleGAN's 3x3 ``up=2`` layer (``padding=1``, 4-tap filter) the transposed
conv is unpadded, its output is ``[2H+1, 2W+1]``, and the FIR pads ``[1, 1, 1, 1]`` -> ``[2H, 2W]``.

Shapes: ``x [N, G*I, H, W]``, ``w [G*O, I, kh, kw]`` (``G = groups``), ``f [fh, fw]`` or ``None``.
``flip_weight=True`` is PyTorch's cross-correlation; ``False`` a true convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sgtriton.ops.upfirdn2d import PadSpec, filter_size, parse_padding, upfirdn2d


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    padding: PadSpec = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Reference ``conv2d_resample`` (``up`` in 1, 2, ...; no down-sampling)."""
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"x, w: expected 4-D tensors, got {list(x.shape)} and {list(w.shape)}")
    if not isinstance(up, int) or up < 1:
        raise ValueError(f"up={up!r}: expected a positive int")
    out_channels, in_per_group, kh, kw = w.shape
    if x.shape[1] != in_per_group * groups:
        raise ValueError(f"x: expected {in_per_group * groups} channels for w {list(w.shape)}, got {x.shape[1]}")
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2

    if up == 1:
        if not flip_weight and (kh > 1 or kw > 1):
            w = w.flip([2, 3])
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return F.conv2d(x, w, padding=[py0, px0], groups=groups)
        x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
        return F.conv2d(x, w, groups=groups)

    if kh == 1 and kw == 1:
        x = F.conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)

    # Transposed conv wants [G*I, O, kh, kw]: swap the in/out axes within each group.
    w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
    w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    px0 -= kw - 1
    px1 -= kw - up
    py0 -= kh - 1
    py1 -= kh - up
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    # A transposed conv is a convolution, so the correlation convention flips here.
    if flip_weight:
        w = w.flip([2, 3])
    x = F.conv_transpose2d(x, w, stride=up, padding=[pyt, pxt], groups=groups)
    return upfirdn2d(
        x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter
    )
