"""Host-side checks shared by the Triton launchers of every op.

Kernels read activations in their own dtype (fp32 or fp16; bf16 only where the kernel is compiled,
because Triton's interpreter computes bf16 on the bit pattern and returns garbage) and compute in
fp32. Parameters (biases, filters, weights, styles) are handed to kernels as fp32.
"""

from __future__ import annotations

import torch

#: Activation dtypes every kernel accepts, and the one only compiled kernels accept.
KERNEL_DTYPES = (torch.float32, torch.float16)
COMPILED_ONLY_DTYPES = (torch.bfloat16,)


def check_kernel_input(t: object, name: str) -> torch.Tensor:
    """Check that ``t`` is a tensor a Triton kernel can read as an activation; return it."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype in KERNEL_DTYPES:
        return t
    if t.dtype in COMPILED_ONLY_DTYPES:
        if t.device.type == "cuda":
            return t
        raise TypeError(f"{name}: dtype {t.dtype} runs only in compiled kernels on CUDA (Triton's "
                        f"interpreter computes it wrongly); got a tensor on {t.device}. Use float32 or float16.")
    raise TypeError(f"{name}: dtype {t.dtype} is not supported by the Triton kernels; expected one of "
                    f"{[str(d) for d in KERNEL_DTYPES + COMPILED_ONLY_DTYPES]}")


def check_same_device(reference: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    """Raise naming the first tensor argument that lives on a different device than ``reference``."""
    for name, t in tensors.items():
        if t is not None and t.device != reference.device:
            raise ValueError(f"{name}: on {t.device}, expected the input's device {reference.device}")


def as_fp32_param(t: torch.Tensor | None) -> torch.Tensor | None:
    """A parameter tensor (bias, filter, weight, style) as a contiguous fp32 tensor for a kernel."""
    if t is None:
        return None
    return t.to(torch.float32).contiguous()
