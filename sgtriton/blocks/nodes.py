"""Typed nodes of a generator graph: the spec block types build their modules from.

A :class:`LayerNode` is one node of the synthesis or mapping graph: what it computes (``kind``),
which block type provides it, its channel counts and resolution, which ``w`` it reads and the
per-sample shape it produces. Block types build their modules from these nodes
(:meth:`~sgtriton.blocks.base.BlockType.make_layer`), :mod:`sgtriton.graph` creates them from a
configuration, and ``sgtriton plan`` prints them. The spec lives with the blocks, which are the
layer below the graph, so that blocks import nothing from :mod:`sgtriton.graph`; plugins import it
as ``from sgtriton.blocks.nodes import LayerNode``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Node kinds, in data-flow order.
KINDS = (
    "pixel_norm",  # mapping: normalise z (and the label)
    "embed",  # mapping: label embedding / projection
    "fc",  # mapping: one equalised-lr FC + lrelu
    "truncate",  # mapping: broadcast to num_ws, w_avg, truncation
    "const",  # synthesis: the learned 4x4 input
    "input",  # synthesis: a style layer with no conv applied to the const (StyleGAN1)
    "conv",  # synthesis: a style layer (conv0 with up=2, or conv1)
    "skip",  # synthesis: resnet 1x1 up-conv of the block input
    "upsample_image",  # synthesis: FIR-upsample the running skip image
    "torgb",  # synthesis: to image channels (+ the upsampled skip image)
)


@dataclass(frozen=True)
class LayerNode:
    """One node: a module path (NVlabs names), its kind and everything its shapes depend on."""

    name: str
    kind: str
    block: str | None = None
    resolution: int = 0
    in_channels: int = 0
    out_channels: int = 0
    up: int = 1
    kernel_size: int = 3
    w_index: int | None = None
    w_dim: int = 0
    use_fp16: bool = False
    conv_clamp: float | None = None
    use_noise: bool = True
    out_shape: tuple[int, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: expected one of {KINDS}")

    @property
    def block_name(self) -> str:
        """The synthesis block this node belongs to (``'b8'``), or ``'mapping'``."""
        parts = self.name.split(".")
        return parts[1] if parts[0] == "synthesis" else parts[0]

    @property
    def attr(self) -> str:
        """The attribute name of this node's module inside its block (``'conv0'``)."""
        return self.name.split(".")[-1]
