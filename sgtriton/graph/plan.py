"""``sgtriton plan``: the graph as a table (or JSON) -- node, output shape, parameters, FLOPs, kernels.

Parameter counts come from the real modules (built on the ``meta`` device, so no memory is
used); FLOPs are ``2 x`` the block type's multiply-accumulate count per node as executed
(up-convs at their input resolution); kernels are what the chosen backend runs for the node, and
their count is the launches per forward (with ``noise_mode='random'``, add one normal draw per
noisy layer; fp16 blocks add their dtype casts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sgtriton.backends import resolve_impl
from sgtriton.blocks.nodes import LayerNode
from sgtriton.generator import Generator


@dataclass(frozen=True)
class PlanRow:
    node: LayerNode
    params: int
    flops: int
    kernels: tuple[str, ...]


def module_at(root: nn.Module, path: str) -> nn.Module | torch.Tensor | None:
    obj: object = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj  # type: ignore[return-value]


def _node_params(G: Generator, node: LayerNode) -> int:
    obj = module_at(G, node.name)
    if isinstance(obj, nn.Module):
        return sum(p.numel() for p in obj.parameters())
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    return 0


#: What runs for the nodes that are not style layers, per implementation (the mapping's pixel
#: norm and label embedding depend on its flavour: :func:`_graph_kernels`).
GRAPH_KERNELS: dict[str, dict[str, tuple[str, ...]]] = {
    "reference": {
        "fc": ("matmul", "bias_act_ref"),
        "truncate": ("repeat", "lerp"),
        "const": ("repeat",),
        "skip": ("conv2d", "upfirdn2d_ref"),
        "upsample_image": (),  # inside the ToRGB node's ops
    },
    "triton": {
        "fc": ("mapping_chain",),  # one launch for the whole chain; listed on fc0 only
        "truncate": ("truncate",),
        "const": ("repeat",),
        "skip": ("modconv2d", "upfirdn2d"),
        "upsample_image": (),  # fused into the torgb kernel
    },
}


def _graph_kernels(G: Generator, node: LayerNode, impl: str) -> tuple[str, ...]:
    """What runs for a non-style node, following the branches of :meth:`MappingNetwork.forward`.

    Unconditional and StyleGAN1 mappings normalise inside the chain (StyleGAN1 after projecting the
    label with a plain matmul and concatenating it to ``z``); a conditional StyleGAN2 mapping
    normalises the embedded label (listed on ``embed``) and ``z`` (on ``pixel_norm``) separately and
    runs an un-normalised chain. A mapping that tracks no ``w_avg`` only broadcasts.
    """
    mapping, triton = G.mapping, impl == "triton"
    separate_norms = bool(mapping.c_dim) and mapping.flavour != "stylegan1"
    if node.kind == "pixel_norm":
        if not mapping.z_dim or (triton and not separate_norms):
            return ()
        return ("pixel_norm",) if triton else ("normalize_2nd_moment",)
    if node.kind == "embed":
        if mapping.flavour == "stylegan1":
            return ("matmul",)
        return ("fully_connected", "pixel_norm") if triton else ("addmm", "normalize_2nd_moment")
    if node.kind == "fc" and triton and node.name != "mapping.fc0":
        return ()
    if node.kind == "truncate" and mapping.w_avg_beta is None:
        return ("repeat",)
    return GRAPH_KERNELS[impl].get(node.kind, ())


def plan_rows(G: Generator, device: torch.device | str = "cpu") -> list[PlanRow]:
    """One :class:`PlanRow` per graph node of ``G``, for tensors on ``device``."""
    block_type = G.graph.block_type
    impl = resolve_impl(G.backend, torch.device(device), block_type.implementations)
    rows = []
    for node in G.graph.nodes:
        if node.kind in ("conv", "input", "torgb"):
            kernels = block_type.kernels(node, impl)
            macs = block_type.macs(node)
        else:
            kernels = _graph_kernels(G, node, impl)
            macs = block_type.macs(node) if node.kind in ("fc", "embed", "skip", "upsample_image") else 0
        rows.append(PlanRow(node, _node_params(G, node), 2 * macs, tuple(kernels)))
    return rows


#: Entries of a plan's kernel lists that are plain torch ops (one device launch each, not a Triton kernel).
TORCH_OPS = ("repeat", "matmul")


def plan_totals(G: Generator, rows: list[PlanRow]) -> dict[str, int]:
    """Parameters, FLOPs per image and kernel launches per forward (every listed kernel or op once;
    a batch launches each once)."""
    return {"parameters": sum(p.numel() for p in G.parameters()), "flops_per_image": sum(r.flops for r in rows),
            "launches_per_forward": sum(len(r.kernels) for r in rows)}


def plan_json(G: Generator, rows: list[PlanRow]) -> dict:
    """The plan as a JSON-ready dict: ``{"generator": {...}, "nodes": [...], "totals": {...}}``."""
    return {
        "generator": {"block": G.config.block, "resolution": G.img_resolution, "num_ws": G.num_ws,
                      "architecture": G.config.synthesis.architecture, "backend": G.backend},
        "nodes": [{"name": r.node.name, "kind": r.node.kind, "out_shape": list(r.node.out_shape),
                   "w_index": r.node.w_index, "params": r.params, "flops": r.flops, "kernels": list(r.kernels)}
                  for r in rows],
        "totals": plan_totals(G, rows),
    }


def format_plan(G: Generator, rows: list[PlanRow]) -> str:
    """The plan as a fixed-width text table with totals."""
    header = f"{'node':<31} {'kind':<14} {'output (per sample)':<20} {'w':>3} {'params':>12} {'MFLOP':>11}  kernels"
    lines = [
        f"generator: block={G.config.block} resolution={G.img_resolution} num_ws={G.num_ws} "
        f"architecture={G.config.synthesis.architecture} backend={G.backend}",
        header,
        "-" * len(header),
    ]
    for row in rows:
        n = row.node
        shape = "x".join(str(s) for s in n.out_shape)
        w = "" if n.w_index is None else str(n.w_index)
        lines.append(f"{n.name:<31} {n.kind:<14} {shape:<20} {w:>3} {row.params:>12,} "
                     f"{row.flops / 1e6:>11.2f}  {', '.join(row.kernels)}")
    totals = plan_totals(G, rows)
    flops = totals["flops_per_image"]
    lines.append("-" * len(header))
    lines.append(f"total parameters: {totals['parameters']:,}")
    lines.append(f"total FLOPs per image: {flops / 1e9:.3f} GFLOP ({flops / 2e9:.3f} GMAC)")
    lines.append(f"kernel launches (ops) per forward: {totals['launches_per_forward']}")
    return "\n".join(lines)


def meta_generator(*args, **kwargs) -> Generator:
    """A generator whose tensors live on the ``meta`` device (shapes only, no memory)."""
    from sgtriton.generator import build_generator

    with torch.device("meta"):
        return build_generator(*args, **kwargs)
