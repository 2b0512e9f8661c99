"""Primitive ops: the maths, the PyTorch reference and (where present) the Triton kernels.

Every kernel module lives in (or, for plugins, imports from) this package, so this is where the
interpreter switch runs: Triton chooses interpreter vs GPU when ``@triton.jit`` is applied, which
must come after :func:`~sgtriton.ops._runtime.configure_interpreter` has set ``TRITON_INTERPRET``.
"""

from sgtriton.ops._runtime import configure_interpreter

configure_interpreter()
