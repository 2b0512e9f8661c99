"""Primitive ops: the maths, the PyTorch reference and (where present) the Triton kernels."""
