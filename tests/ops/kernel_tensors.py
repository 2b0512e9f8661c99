"""Tensor constructors for kernel tests: each builds on the CPU (seeded ``torch.Generator`` s are
CPU generators, so draws are the same on every machine) and moves the result to the kernel
device (CUDA when present, else the CPU with the interpreter)."""

import torch

from sgtriton.testing.devices import kernel_device

DEVICE = kernel_device()


def _on_device(make):
    def build(*args, **kwargs):
        return make(*args, **kwargs).to(DEVICE)

    build.__name__ = make.__name__
    build.__doc__ = f"``torch.{make.__name__}`` on the CPU, moved to the kernel device."
    return build


randn = _on_device(torch.randn)
zeros = _on_device(torch.zeros)
ones = _on_device(torch.ones)
tensor = _on_device(torch.tensor)
