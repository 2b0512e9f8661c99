"""Configuration -> graph: the explicit list of typed nodes a generator consists of.

Synthesis, for each block resolution ``r`` in ``4, 8, ..., R`` (``C(r)`` channels)::

    r = 4:  const [C(4),4,4] -> [input layer, StyleGAN1 only] -> conv1
    r > 4:  [skip (resnet)] -> conv0 (up=2) -> conv1 -> [upsample_image (skip)] -> [torgb]

ToRGB exists in every block for ``'skip'`` and only in the last for ``'orig'``/``'resnet'``.
w indexing: every style layer consumes the next w in order; a ToRGB that reads a style reads the
w that the next block's conv0 will read (NVlabs), so ``num_ws = layers + 1`` for StyleGAN2 and
``num_ws = layers`` for StyleGAN1 -- ``2 log2(R) - 2`` either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from sgtriton.blocks.base import BlockType
from sgtriton.blocks.nodes import LayerNode
from sgtriton.config import GeneratorConfig
from sgtriton.registry import create_block


@dataclass(frozen=True)
class Graph:
    """A generator's configuration, its block type and its nodes in execution order."""

    config: GeneratorConfig
    block_type: BlockType
    mapping_nodes: tuple[LayerNode, ...]
    synthesis_nodes: tuple[LayerNode, ...]
    num_ws: int

    @property
    def nodes(self) -> tuple[LayerNode, ...]:
        return self.mapping_nodes + self.synthesis_nodes

    def block_nodes(self, resolution: int) -> dict[str, LayerNode]:
        """The nodes of synthesis block ``b{resolution}`` keyed by attribute name."""
        return {n.attr: n for n in self.synthesis_nodes if n.block_name == f"b{resolution}"}


def build_graph(config: GeneratorConfig) -> Graph:
    """Expand ``config`` into its typed nodes (no tensors are created)."""
    block_type = create_block(config.block, config.block_kwargs)
    synthesis_nodes, num_ws = _synthesis_nodes(config, block_type)
    return Graph(config, block_type, _mapping_nodes(config, num_ws), tuple(synthesis_nodes), num_ws)


def _mapping_nodes(config: GeneratorConfig, num_ws: int) -> tuple[LayerNode, ...]:
    m = config.mapping
    embed = (m.embed_features or config.w_dim) if config.c_dim else 0
    if m.flavour == "stylegan1" and config.c_dim:
        embed = m.embed_features or config.z_dim
    layer = m.layer_features or config.w_dim
    features = [config.z_dim + embed] + [layer] * (m.num_layers - 1) + [config.w_dim]
    nodes = [LayerNode("mapping.pixel_norm", "pixel_norm", in_channels=config.z_dim,
                       out_channels=config.z_dim, out_shape=(config.z_dim,))]
    if config.c_dim:
        nodes.append(LayerNode("mapping.embed", "embed", in_channels=config.c_dim, out_channels=embed,
                               out_shape=(embed,)))
    for i in range(m.num_layers):
        nodes.append(LayerNode(f"mapping.fc{i}", "fc", in_channels=features[i], out_channels=features[i + 1],
                               out_shape=(features[i + 1],)))
    nodes.append(LayerNode("mapping.truncate", "truncate", in_channels=config.w_dim, out_channels=config.w_dim,
                           out_shape=(num_ws, config.w_dim)))
    return tuple(nodes)


def _synthesis_nodes(config: GeneratorConfig, block_type: BlockType) -> tuple[list[LayerNode], int]:
    syn = config.synthesis
    arch = syn.architecture
    common = {"block": block_type.name, "w_dim": config.w_dim, "use_noise": syn.use_noise,
              "options": {"resample_filter": syn.resample_filter, **block_type.block_kwargs}}
    nodes: list[LayerNode] = []
    w_next = 0

    def style_layer(name: str, kind: str, r: int, cin: int, cout: int, up: int, fp16: bool) -> None:
        nonlocal w_next
        nodes.append(LayerNode(f"synthesis.b{r}.{name}", kind, resolution=r, in_channels=cin,
                               out_channels=cout, up=up, w_index=w_next, use_fp16=fp16,
                               conv_clamp=syn.conv_clamp, out_shape=(cout, r, r), **common))
        w_next += 1

    for r in config.block_resolutions:
        cout = config.channels(r)
        cin = config.channels(r // 2) if r > 4 else 0
        fp16 = r >= config.fp16_resolution
        is_last = r == config.img_resolution
        if r == 4:
            nodes.append(LayerNode("synthesis.b4.const", "const", resolution=4, out_channels=cout,
                                   out_shape=(cout, 4, 4), **common))
            if block_type.has_input_layer:
                style_layer("input", "input", 4, cout, cout, 1, fp16)
        else:
            if arch == "resnet":
                nodes.append(LayerNode(f"synthesis.b{r}.skip", "skip", resolution=r, in_channels=cin,
                                       out_channels=cout, up=2, kernel_size=1, use_fp16=fp16,
                                       out_shape=(cout, r, r), **common))
            style_layer("conv0", "conv", r, cin, cout, 2, fp16)
        style_layer("conv1", "conv", r, cout, cout, 1, fp16)
        if arch == "skip" or is_last:
            if arch == "skip" and r > 4:
                nodes.append(LayerNode(f"synthesis.b{r}.upsample_image", "upsample_image", resolution=r,
                                       in_channels=config.img_channels, out_channels=config.img_channels,
                                       up=2, out_shape=(config.img_channels, r, r), **common))
            w_torgb = w_next if block_type.torgb_uses_style else None
            nodes.append(LayerNode(f"synthesis.b{r}.torgb", "torgb", resolution=r, in_channels=cout,
                                   out_channels=config.img_channels, kernel_size=1, w_index=w_torgb,
                                   use_fp16=fp16, conv_clamp=syn.conv_clamp,
                                   out_shape=(config.img_channels, r, r), **common))
    num_ws = w_next + (1 if block_type.torgb_uses_style else 0)
    return nodes, num_ws


class BuiltFromGraph:
    """NVlabs' ``init_args`` / ``init_kwargs`` for a network built from a :class:`Graph`:
    ``type(net)(*net.init_args, **net.init_kwargs)`` builds it afresh (same graph, same backend)."""

    @property
    def init_args(self) -> tuple:
        return (self.graph,)

    @property
    def init_kwargs(self) -> dict:
        return {"backend": self.backend}
