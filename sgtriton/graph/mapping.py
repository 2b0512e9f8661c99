"""The mapping network: z (+ label c) -> w, broadcast to ``[N, num_ws, w_dim]``, truncation.

StyleGAN2 flavour (NVlabs ``MappingNetwork``)::

    x = pixel_norm(z); y = pixel_norm(embed(c)); x = concat(x, y)
    x = sqrt(2) * lrelu(x @ (W_i * 0.01/sqrt(in))^T + b_i * 0.01)        i = 0 .. L-1

StyleGAN1 flavour (TF ``G_mapping``)::

    x = pixel_norm(concat(z, c @ P^T))                                  (P unscaled, no bias)
    x = lrelu(x @ (W_i * sqrt(2) * 0.01/sqrt(in))^T + b_i * 0.01)

Then ``w`` is repeated ``num_ws`` times and truncated towards ``w_avg``:
``w[:, :cutoff] = w_avg + psi * (w[:, :cutoff] - w_avg)`` (all ws when ``cutoff`` is None).

``w_avg`` tracks the mapping outputs during training, before broadcast and truncation, as
``w_avg <- lerp(mean_batch(w), w_avg, beta) = beta * w_avg + (1 - beta) * mean_batch(w)``. When it
updates follows whichever NVlabs idiom the caller speaks:

* stylegan3: ``update_emas=True`` updates, ``update_emas=False`` does not, in either mode;
* stylegan2-ada: ``skip_w_avg_update`` -- in training mode every call updates unless it is True;
  an eval-mode network never updates. A call that names neither keyword follows this rule too.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from sgtriton.backends import op_impl, resolve_impl
from sgtriton.blocks.base import IMPLEMENTATIONS
from sgtriton.blocks.layers import FullyConnectedLayer
from sgtriton.graph.builder import BuiltFromGraph, Graph
from sgtriton.ops.fully_connected import mapping_chain, normalize_2nd_moment, truncate


def _capturing() -> bool:
    """True while a CUDA graph is being captured: the NaN check would sync with the host, so skip it."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def check_truncation_psi(psi: object) -> None:
    """``psi``: a finite real number, or a one-element tensor (left unchecked: reading it would sync)."""
    if isinstance(psi, torch.Tensor):
        if psi.numel() != 1 or psi.is_complex():
            raise ValueError(f"truncation_psi: expected a number or a one-element real tensor, "
                             f"got a tensor of shape {list(psi.shape)} ({psi.dtype})")
        return
    if isinstance(psi, bool) or not isinstance(psi, numbers.Real):
        raise TypeError(f"truncation_psi={psi!r}: expected a number, e.g. 0.7")
    if not math.isfinite(psi):
        raise ValueError(f"truncation_psi={psi!r}: expected a finite number, e.g. 0.7")


class LabelProjection(nn.Module):
    """StyleGAN1's label projection ``y = c @ weight^T`` (``weight [embed, c_dim]``, unscaled)."""

    def __init__(self, c_dim: int, embed_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn([embed_features, c_dim]))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return c @ self.weight.to(c.dtype).t()


class MappingNetwork(BuiltFromGraph, nn.Module):
    """NVlabs-compatible mapping network built from the graph's mapping nodes."""

    def __init__(self, graph: Graph, backend: str = "auto") -> None:
        super().__init__()
        config = graph.config
        self.graph = graph
        self.backend = backend
        m = config.mapping
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.w_dim = config.w_dim
        self.num_ws = graph.num_ws
        self.num_layers = m.num_layers
        self.w_avg_beta = m.w_avg_beta
        self.flavour = m.flavour
        stylegan1 = m.flavour == "stylegan1"
        for node in graph.mapping_nodes:
            if node.kind == "embed":
                self.embed = (LabelProjection(node.in_channels, node.out_channels) if stylegan1 else
                              FullyConnectedLayer(node.in_channels, node.out_channels))
            elif node.kind == "fc":
                layer = FullyConnectedLayer(
                    node.in_channels, node.out_channels, activation="lrelu", lr_multiplier=m.lr_multiplier,
                    weight_gain_scale=math.sqrt(2) if stylegan1 else 1.0, act_gain=1.0 if stylegan1 else None,
                )
                setattr(self, node.attr, layer)
        if self.w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([self.w_dim]))

    def updates_w_avg(self, update_emas: bool | None, skip_w_avg_update: bool | None) -> bool:
        """Whether this call moves ``w_avg`` (the rule in the module docstring)."""
        if self.w_avg_beta is None:
            return False
        if update_emas is not None:
            if skip_w_avg_update is not None and bool(update_emas) == bool(skip_w_avg_update):
                raise ValueError(f"update_emas={update_emas!r} and skip_w_avg_update={skip_w_avg_update!r} "
                                 f"contradict each other; pass one of them")
            return bool(update_emas)
        return self.training and not skip_w_avg_update

    def check_inputs(self, z: torch.Tensor | None, c: torch.Tensor | None) -> int:
        """Validate ``z [N, z_dim]`` and ``c [N, c_dim]``; return ``N``."""
        batch = None
        if self.z_dim:
            if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
                got = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
                raise ValueError(f"z: expected a tensor of shape [N, {self.z_dim}], got {got}")
            if not z.is_floating_point():
                raise TypeError(f"z: expected a floating-point tensor, got dtype {z.dtype}")
            if not _capturing() and not torch.isfinite(z).all():
                raise ValueError("z: contains NaN or infinite values")
            batch = z.shape[0]
        if self.c_dim:
            if not isinstance(c, torch.Tensor) or c.ndim != 2 or c.shape[1] != self.c_dim:
                got = list(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
                raise ValueError(f"c: expected a tensor of shape [N, {self.c_dim}] (c_dim={self.c_dim}), got {got}")
            if batch is not None and c.shape[0] != batch:
                raise ValueError(f"c: batch size {c.shape[0]} does not match z's {batch}")
            if not _capturing() and not torch.isfinite(c.float()).all():
                raise ValueError("c: contains NaN or infinite values")
            batch = c.shape[0]
        elif c is not None and isinstance(c, torch.Tensor) and c.numel() and c.shape[-1] != 0:
            raise ValueError(f"c: this generator is unconditional (c_dim=0); expected None or an empty "
                             f"[N, 0] tensor, got shape {list(c.shape)}")
        return int(batch)

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool | None = None,
                skip_w_avg_update: bool | None = None, impl: str | None = None) -> torch.Tensor:
        """``z [N, z_dim]``, ``c [N, c_dim]`` -> ``ws [N, num_ws, w_dim]`` (float32).

        ``update_emas`` (stylegan3) / ``skip_w_avg_update`` (stylegan2-ada) decide whether ``w_avg``
        moves, as the module docstring says.
        ``impl`` overrides the backend's choice: ``'triton'`` runs pixel norm and the FC chain as one
        ``mapping_chain`` launch (unconditional networks) and the broadcast + truncation as another.
        """
        self.check_inputs(z, c)
        if truncation_cutoff is not None and (isinstance(truncation_cutoff, bool) or
                                              not isinstance(truncation_cutoff, int) or truncation_cutoff < 0):
            raise ValueError(f"truncation_cutoff={truncation_cutoff!r}: expected None or an int >= 0")
        check_truncation_psi(truncation_psi)
        if truncation_psi != 1 and self.w_avg_beta is None:
            raise ValueError("truncation_psi: this mapping network tracks no w_avg, so it cannot truncate")
        device = (z if self.z_dim else c).device
        if impl is None:
            impl = resolve_impl(self.backend, device, IMPLEMENTATIONS)
        ops = op_impl(impl)
        # NVlabs computes in float32; a mapping converted with .double() computes in float64.
        dtype = torch.float64 if self.fc0.weight.dtype == torch.float64 else torch.float32
        normalize_input = True
        if self.flavour == "stylegan1":  # one pixel norm over [z, projected label]
            x = z.to(dtype)
            if self.c_dim:
                x = torch.cat([x, self.embed(c.to(dtype))], dim=1)
        else:  # z and the embedded label normalised separately
            x = z.to(dtype) if self.z_dim else None
            if self.c_dim:
                y = normalize_2nd_moment(self.embed(c.to(dtype), impl), impl=ops)
                x = y if x is None else torch.cat([normalize_2nd_moment(x, impl=ops), y], dim=1)
                normalize_input = False
        fcs = [getattr(self, f"fc{i}") for i in range(self.num_layers)]
        x = mapping_chain(x, [fc.weight for fc in fcs], [fc.bias for fc in fcs], [fc.weight_gain for fc in fcs],
                          fcs[0].bias_gain, act="lrelu", act_gain=fcs[0].act_gain, normalize_input=normalize_input,
                          impl=ops)

        if self.updates_w_avg(update_emas, skip_w_avg_update):
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.w_avg_beta is None:
            return x.unsqueeze(1).repeat([1, self.num_ws, 1])
        return truncate(x, self.w_avg, self.num_ws, truncation_psi, truncation_cutoff, impl=ops)

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, "
                f"flavour={self.flavour}")
