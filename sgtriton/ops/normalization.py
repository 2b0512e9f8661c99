"""Per-sample, per-channel feature-map normalisations used by the StyleGAN1 and revised blocks.

For ``x [N, C, H, W]`` and statistics over the ``H*W`` positions of each ``(n, c)``:

* ``instance_norm``:  ``(x - mean) * rsqrt(mean((x - mean)^2) + eps)`` (biased variance), eps 1e-8.
* ``rms_normalize``:  ``x * rsqrt(mean(x^2) + eps)`` -- "std without mean subtraction", eps 1e-8
  (the revised architecture's normalisation, StyleGAN2 Fig. 2c).
* ``adain_epilogue``: StyleGAN1's layer epilogue ::

      x = x + noise * noise_weight[c]      (noise [N or 1, 1, H, W], noise_weight [C])
      x = x + bias[c]
      x = lrelu(x, 0.2)
      x = instance_norm(x)
      x = x * (style[:, :C] + 1) + style[:, C:]      (style [N, 2C], from the affine of w)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORM_EPS = 1e-8
ADAIN_ALPHA = 0.2


def instance_norm_ref(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Instance normalisation over the spatial axes of ``[N, C, H, W]``."""
    x = x - x.mean(dim=[2, 3], keepdim=True)
    return x * (x.square().mean(dim=[2, 3], keepdim=True) + eps).rsqrt()


def rms_normalize_ref(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Divide each ``(n, c)`` feature map by its root-mean-square."""
    return x * (x.square().mean(dim=[2, 3], keepdim=True) + eps).rsqrt()


def adain_epilogue_ref(
    x: torch.Tensor,
    noise: torch.Tensor | None,
    noise_weight: torch.Tensor | None,
    bias: torch.Tensor,
    style: torch.Tensor,
    alpha: float = ADAIN_ALPHA,
    eps: float = NORM_EPS,
) -> torch.Tensor:
    """StyleGAN1 layer epilogue; ``x [N, C, H, W]``, ``style [N, 2C]`` -> ``[N, C, H, W]``."""
    if x.ndim != 4:
        raise ValueError(f"x: expected [N, C, H, W], got shape {list(x.shape)}")
    n, c = x.shape[:2]
    if list(style.shape) != [n, 2 * c]:
        raise ValueError(f"style: expected shape [{n}, {2 * c}], got {list(style.shape)}")
    if noise is not None and noise_weight is not None:
        x = x + noise.to(x.dtype) * noise_weight.to(x.dtype).reshape(1, -1, 1, 1)
    x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
    x = F.leaky_relu(x, alpha)
    x = instance_norm_ref(x, eps)
    style = style.to(x.dtype)
    return x * (style[:, :c, None, None] + 1) + style[:, c:, None, None]
