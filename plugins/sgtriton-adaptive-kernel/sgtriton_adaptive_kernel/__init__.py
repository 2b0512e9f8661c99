"""sgtriton-adaptive-kernel: GigaGAN's sample-adaptive kernel selection as an sgtriton block type.

Installing the package registers the block ``adaptive-kernel`` through the ``sgtriton.blocks``
entry point; nothing needs to be imported by hand::

    G = sgtriton.build_generator("stylegan2-f", block="adaptive-kernel", block_kwargs={"bank_size": 4})

Modules: :mod:`.reference` (the maths, PyTorch), :mod:`.kernel` (the Triton kernel and its declared
tuning space), :mod:`.ops` (launcher, ``torch.library`` op, ``impl`` switch), :mod:`.layer` (the
``nn.Module``), :mod:`.block` (the block type).
"""

# sgtriton first: it selects Triton's interpreter (no CUDA) before any kernel here is decorated.
import sgtriton  # noqa: F401

from sgtriton_adaptive_kernel.block import AdaptiveKernelBlock
from sgtriton_adaptive_kernel.layer import AdaptiveKernelLayer
from sgtriton_adaptive_kernel.ops import adaptive_modulated_conv2d_layer

__version__ = "0.1.0"

__all__ = ["AdaptiveKernelBlock", "AdaptiveKernelLayer", "adaptive_modulated_conv2d_layer"]
