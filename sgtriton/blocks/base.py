"""The block-type contract: what a plugin provides to be a style block of a generator.

A block type is the maths of one style layer. It turns :class:`~sgtriton.blocks.nodes.LayerNode`
specs into ``torch.nn.Module`` s whose parameter names the checkpoint loaders and state dicts
rely on. Built-in and third-party block types implement the same class and register the same way
(the ``sgtriton.blocks`` entry-point group, or :func:`sgtriton.registry.register_block`).

Module protocols (``impl`` is ``'reference'`` or ``'triton'``):

* style layer (node kinds ``'conv'`` and ``'input'``):
  ``forward(x [N, I, r_in, r_in], w [N, w_dim], noise_mode, fused_modconv, gain, impl)``
  -> ``[N, O, r, r]``;
* ToRGB (kind ``'torgb'``): ``forward(x [N, C, r, r], w [N, w_dim] or None, fused_modconv, impl,
  skip=None)`` -> ``[N, img_channels, r, r]`` float32; with ``skip [N, img_channels, r/2, r/2]`` (the
  previous image) it returns ``upsample2d(skip) + torgb(x)``, so kernels can fuse the two.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from torch import nn

from sgtriton.blocks.nodes import LayerNode

NOISE_MODES = ("random", "const", "none")
IMPLEMENTATIONS = ("reference", "triton")


class BlockType(abc.ABC):
    """Base class of every style-block type (see the module docstring for the contract)."""

    #: Registry name, e.g. ``'moddemod'``.
    name: ClassVar[str] = ""
    #: One line for ``sgtriton blocks``.
    description: ClassVar[str] = ""
    #: Implementations this block provides, a subset of :data:`IMPLEMENTATIONS`.
    implementations: ClassVar[tuple[str, ...]] = ("reference",)
    #: Whether ToRGB reads a w (StyleGAN2: yes, shared with the next conv0; StyleGAN1: no).
    torgb_uses_style: ClassVar[bool] = True
    #: Whether the 4x4 const passes through a conv-less style layer reading its own w (StyleGAN1).
    has_input_layer: ClassVar[bool] = False
    #: Initial value of the learned const: ``'randn'`` (StyleGAN2) or ``'ones'`` (StyleGAN1).
    const_init: ClassVar[str] = "randn"
    #: Block options and their defaults (``block_kwargs``); unknown options are refused.
    options: ClassVar[dict[str, Any]] = {}
    #: Option values the equivalence harness (:mod:`sgtriton.testing`) samples from.
    test_options: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def __init__(self, **block_kwargs: Any) -> None:
        unknown = sorted(set(block_kwargs) - set(self.options))
        if unknown:
            accepted = f"expected some of {sorted(self.options)}" if self.options else "it takes no options"
            raise TypeError(f"block_kwargs: unexpected keys {unknown} for block {self.name!r}; {accepted}")
        self.block_kwargs = {**self.options, **block_kwargs}
        self.validate_options(self.block_kwargs)

    def validate_options(self, block_kwargs: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Raise ``ValueError`` naming the option if a value is out of range."""

    @abc.abstractmethod
    def make_layer(self, node: LayerNode) -> nn.Module:
        """A style layer module for a node of kind ``'conv'`` (or ``'input'``)."""

    @abc.abstractmethod
    def make_torgb(self, node: LayerNode) -> nn.Module:
        """A ToRGB module for a node of kind ``'torgb'``."""

    def kernels(self, node: LayerNode, impl: str) -> tuple[str, ...]:
        """Names of the kernels (or reference ops) that run for ``node`` under ``impl``."""
        return ()

    def reduction_length(self, node: LayerNode) -> int:
        """Terms summed per output element (scales the test tolerance): ``I * k * k`` for a conv."""
        return max(node.in_channels * node.kernel_size**2, 1)

    def macs(self, node: LayerNode) -> int:
        """Multiply-accumulates per sample for ``node`` (used by ``sgtriton plan``)."""
        return default_macs(node)


def default_macs(node: LayerNode) -> int:
    """MACs of a (modulated) conv node as executed: up-convs run at the input resolution."""
    if node.kind == "conv":
        r_in = node.resolution // node.up
        macs = node.out_channels * node.in_channels * node.kernel_size**2 * r_in**2
        if node.up > 1:  # the 4x4 FIR after the transposed conv
            macs += node.out_channels * 16 * node.resolution**2
        return macs + node.w_dim * node.in_channels
    if node.kind == "torgb":
        return node.out_channels * node.in_channels * node.resolution**2 + node.w_dim * node.in_channels
    if node.kind == "skip":
        r_in = node.resolution // 2
        return node.out_channels * node.in_channels * r_in**2 + node.out_channels * 16 * node.resolution**2
    if node.kind == "upsample_image":
        return node.out_channels * 16 * node.resolution**2
    if node.kind in ("fc", "embed"):
        return node.out_channels * node.in_channels
    return 0
