"""Cost model of a generator graph: FLOPs, minimum bytes moved, kernel launches and the roofline.

For every node of a generator (and for a standalone op), for a batch of ``N`` samples:

* ``flops = 2 * N * macs`` with ``macs`` the block type's multiply-accumulate count per sample
  (:meth:`~sgtriton.blocks.base.BlockType.macs`, the numbers ``sgtriton plan`` prints: up-convs
  at their input resolution). Elementwise epilogues (noise, bias, activation, clamp,
  normalisation) are not counted for graph nodes: they are below 1 % of a conv's FLOPs.
* ``bytes`` = the least DRAM traffic of one kernel computing the node: every input activation
  read once and the output written once, in the dtype the node runs in (fp16 for blocks marked
  fp16 when they run in fp16, i.e. on CUDA; the image path and the mapping network are fp32),
  plus the node's parameters and buffers read once as stored (fp32) and its ``w`` (fp32).
  Per-node minima assume one kernel per node; fusing nodes would save the intermediate traffic.
* ``launches`` = the kernels (or reference ops) the plan lists for the node under the chosen
  backend; their sum over the nodes is the launch count per image.

Roofline: with a device's peak compute ``P[dtype]`` and bandwidth ``B``, a kernel cannot finish
faster than ``t_min = max(flops / P, bytes / B)``; a measured time ``t`` reaches
``t_min / t`` of the roofline. For fp32 the tensor-core TF32 peak is used (cuDNN convolutions and
``tl.dot`` default to TF32 for fp32 inputs on Ampere and later). On devices missing from
:data:`DEVICE_PEAKS` (any CPU) there is no roofline and the functions return ``None``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sgtriton.blocks.nodes import LayerNode
from sgtriton.graph.plan import module_at, plan_rows

#: Bytes per stored parameter and per image-path / mapping value (both fp32).
FP32_BYTES = 4

#: Node kinds whose activations run in the block's dtype (fp16 for blocks marked fp16, on CUDA).
_BLOCK_DTYPE_KINDS = ("const", "input", "conv", "skip", "torgb")


@dataclass(frozen=True)
class Cost:
    """FLOPs and minimum bytes of some work, and the activation dtype it runs in."""

    flops: int
    bytes: int
    dtype: torch.dtype = torch.float32

    def __add__(self, other: Cost) -> Cost:
        """Both pieces of work together, counted at ``self``'s dtype for the roofline."""
        return Cost(self.flops + other.flops, self.bytes + other.bytes, self.dtype)

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOP per byte."""
        return self.flops / self.bytes if self.bytes else math.inf


@dataclass(frozen=True)
class NodeCost:
    """The cost of one graph node for a batch, and the kernels the plan runs for it."""

    node: LayerNode
    cost: Cost
    kernels: tuple[str, ...]

    @property
    def launches(self) -> int:
        return len(self.kernels)


@dataclass(frozen=True)
class GeneratorCost:
    """Per-node costs of a whole generator (mapping + synthesis) for one batch."""

    batch: int
    nodes: tuple[NodeCost, ...]

    @property
    def flops(self) -> int:
        return sum(n.cost.flops for n in self.nodes)

    @property
    def bytes(self) -> int:
        return sum(n.cost.bytes for n in self.nodes)

    @property
    def launches(self) -> int:
        """Kernel launches per call (the plan's kernels per image; a batch launches each once)."""
        return sum(n.launches for n in self.nodes)

    def roofline_seconds(self, peak: DevicePeak) -> float:
        """Sum of the per-node roofline times: each node bound by its own dtype's peak."""
        return sum(roofline_seconds(n.cost, peak) for n in self.nodes)


# --------------------------------------------------------------------------------------------
# Per-op and per-node costs
# --------------------------------------------------------------------------------------------


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


def bias_act_cost(shape: Sequence[int], dtype: torch.dtype = torch.float32, has_bias: bool = True,
                  has_clamp: bool = False) -> Cost:
    """``bias_act`` on ``x`` of ``shape`` (channels at dim 1): read ``x`` and ``b``, write ``y``.

    FLOPs count the elementwise work per element: bias add, activation, gain (and clamp).
    """
    numel = math.prod(shape)
    channels = shape[1] if len(shape) > 1 else 1
    ops_per_element = 2 + int(has_bias) + int(has_clamp)
    moved = 2 * numel * dtype_bytes(dtype) + (channels * FP32_BYTES if has_bias else 0)
    return Cost(ops_per_element * numel, moved, dtype)


def upfirdn2d_cost(in_shape: Sequence[int], out_shape: Sequence[int], filter_taps: int, up: int = 1,
                   dtype: torch.dtype = torch.float32) -> Cost:
    """``upfirdn2d`` from ``in_shape`` to ``out_shape`` (both NCHW) with a ``filter_taps``-tap 2-D FIR.

    FLOPs: one multiply-add per useful tap per output element; the zeros inserted by up-sampling
    are not counted (a polyphase kernel skips them: ``taps / up^2`` useful taps per output).
    Bytes: read the input and the filter (fp32), write the output.
    """
    useful_taps = max(filter_taps // (up * up), 1)
    flops = 2 * math.prod(out_shape) * useful_taps
    moved = (math.prod(in_shape) + math.prod(out_shape)) * dtype_bytes(dtype) + filter_taps * FP32_BYTES
    return Cost(flops, moved, dtype)


def adain_epilogue_cost(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Cost:
    """StyleGAN1's epilogue on ``x [N, C, H, W]``: noise, bias, lrelu, instance norm, style.

    Bytes: read ``x``, the noise map ``[H, W]``, ``noise_weight``/``bias`` ``[C]`` and the styles
    ``[N, 2C]`` (fp32), write ``y``. FLOPs: about 10 per element (noise FMA, bias, lrelu, mean,
    variance, normalise, style FMA).
    """
    n, c, h, w = shape
    numel = n * c * h * w
    moved = 2 * numel * dtype_bytes(dtype) + (h * w + 2 * c + n * 2 * c) * FP32_BYTES
    return Cost(10 * numel, moved, dtype)


def mapping_chain_cost(batch: int, features: Sequence[int]) -> Cost:
    """``len(features) - 1`` equalised-lr FC layers back to back, as one kernel (fp32).

    ``features = [in, hidden, ..., out]``. Bytes: the input, every weight and bias once, the output.
    """
    layers = list(itertools.pairwise(features))
    flops = 2 * batch * sum(i * o for i, o in layers)
    moved = (batch * (features[0] + features[-1]) + sum(i * o + o for i, o in layers)) * FP32_BYTES
    return Cost(flops, moved, torch.float32)


def node_cost(node: LayerNode, macs_per_sample: int, batch: int = 1, dtype: torch.dtype = torch.float32,
              stored_values: int = 0) -> Cost:
    """The cost of ``node`` for ``batch`` samples with activations in ``dtype``.

    ``macs_per_sample`` comes from the block type (``BlockType.macs``); ``stored_values`` is the
    number of parameters and buffers the node reads (fp32).
    """
    act = dtype_bytes(dtype)
    n = batch
    kind = node.kind
    stored = stored_values * FP32_BYTES
    w_read = n * node.w_dim * FP32_BYTES if node.w_index is not None else 0
    out_numel = math.prod(node.out_shape) if node.out_shape else 0
    if kind in ("pixel_norm", "fc", "embed"):
        moved = n * (node.in_channels + node.out_channels) * FP32_BYTES + stored
    elif kind == "truncate":
        moved = n * node.in_channels * FP32_BYTES + n * out_numel * FP32_BYTES + stored
    elif kind == "const":
        moved = stored + n * out_numel * act
    elif kind in ("conv", "input", "skip"):
        r_in = node.resolution // node.up if kind != "input" else node.resolution
        moved = n * node.in_channels * r_in**2 * act + stored + w_read + n * out_numel * act
    elif kind == "torgb":
        # Reads the block's activations; writes the image contribution in fp32.
        moved = n * node.in_channels * node.resolution**2 * act + stored + w_read + n * out_numel * FP32_BYTES
    elif kind == "upsample_image":
        moved = n * node.in_channels * (node.resolution // node.up) ** 2 * FP32_BYTES + stored \
            + n * out_numel * FP32_BYTES
    else:
        raise ValueError(f"node.kind={kind!r}: no cost rule")
    return Cost(2 * n * macs_per_sample, int(moved), dtype)


def node_dtype(node: LayerNode, fp16_active: bool) -> torch.dtype:
    """The activation dtype ``node`` runs in: fp16 for fp16-marked block nodes when fp16 is active."""
    if fp16_active and node.use_fp16 and node.kind in _BLOCK_DTYPE_KINDS:
        return torch.float16
    return torch.float32


def _stored_values(G: nn.Module, node: LayerNode) -> int:
    """Parameters and buffers of the node's module (its own tensor for ``const``)."""
    obj = module_at(G, node.name)
    if isinstance(obj, nn.Module):
        return sum(t.numel() for t in obj.parameters()) + sum(t.numel() for t in obj.buffers())
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if node.kind == "truncate":
        return node.out_channels  # w_avg
    return 0


def generator_cost(G: nn.Module, batch: int = 1, device: torch.device | str = "cpu",
                   force_fp32: bool = False) -> GeneratorCost:
    """Per-node costs of generator ``G`` (a real or ``meta`` one) for ``batch`` samples on ``device``.

    fp16-marked blocks count as fp16 only on CUDA without ``force_fp32``, as they run. Launches are
    the plan's kernels for ``G``'s backend on ``device``.
    """
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch={batch!r}: expected an int >= 1")
    device = torch.device(device)
    fp16_active = device.type == "cuda" and not force_fp32
    nodes = []
    for row in plan_rows(G, device):
        node = row.node
        cost = node_cost(node, row.flops // 2, batch, node_dtype(node, fp16_active),
                         _stored_values(G, node))
        nodes.append(NodeCost(node, cost, row.kernels))
    return GeneratorCost(batch, tuple(nodes))


# --------------------------------------------------------------------------------------------
# Device peaks and the roofline
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevicePeak:
    """A GPU's peak rates and the per-SM resources the performance model needs.

    Peaks derive from per-SM, per-clock rates: ``sms * rate * clock_hz`` (so the performance
    model's cycle counts and the roofline use the same numbers). ``tensor_flops_per_clock`` are
    dense tensor-core FLOPs per SM per clock by input type; ``fp32_flops_per_clock`` CUDA-core FMA
    FLOPs. ``bandwidth`` is the datasheet DRAM bandwidth (the roofline's), ``copy_bandwidth`` what
    a device copy achieves (the model's memory time).
    """

    name: str
    capability: int
    sms: int
    clock_hz: float
    tensor_flops_per_clock: dict[str, float]
    fp32_flops_per_clock: float
    bandwidth: float
    copy_bandwidth: float
    shared_per_sm: int
    source: str
    registers_per_sm: int = 65536
    threads_per_sm: int = 2048
    ctas_per_sm: int = 32

    @property
    def flops(self) -> dict[str, float]:
        """Peak FLOP/s by dtype: ``fp16``, ``bf16``, ``tf32`` (tensor cores, dense) and ``fp32`` (FMA)."""
        peaks = {key: self.sms * rate * self.clock_hz for key, rate in self.tensor_flops_per_clock.items()}
        peaks["fp32"] = self.sms * self.fp32_flops_per_clock * self.clock_hz
        return peaks

    def peak_flops(self, dtype: torch.dtype) -> float:
        key = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "tf32"}.get(dtype, "fp32")
        return self.flops[key]


_HOPPER_SXM_TENSOR = {"fp16": 4096.0, "bf16": 4096.0, "tf32": 2048.0, "fp8": 8192.0}

#: Matched by substring of the device name, first match wins (so H200 before H100). SXM parts.
DEVICE_PEAKS: tuple[DevicePeak, ...] = (
    DevicePeak("H200", 90, 132, 1.83e9, _HOPPER_SXM_TENSOR, 256.0, 4.8e12, 4.3e12, 233472,
               "NVIDIA H100/H200 SXM datasheet: 989.4 TFLOP/s fp16/bf16 dense, 494.7 tf32 (132 SMs x 1.83 GHz "
               "x 4096 / 2048 FLOP/clk/SM); 4.8 TB/s HBM3e; ~4.3 TB/s device copy and 770-800 TFLOP/s bf16 "
               "GEMM measured on an H200 (2026-11); 228 KB shared memory per SM"),
    DevicePeak("H100", 90, 132, 1.83e9, _HOPPER_SXM_TENSOR, 256.0, 3.35e12, 3.0e12, 233472,
               "NVIDIA H100 SXM datasheet: 989.4 TFLOP/s fp16/bf16 dense, 494.7 tf32; 3.35 TB/s HBM3; "
               "~3 TB/s device copy and ~800 TFLOP/s bf16 measured on an H100; 228 KB shared memory per SM"),
    DevicePeak("A100", 80, 108, 1.41e9, {"fp16": 2048.0, "bf16": 2048.0, "tf32": 1024.0}, 128.0, 2.039e12,
               1.7e12, 167936,
               "NVIDIA A100 SXM4 80GB datasheet: 312 TFLOP/s fp16/bf16 dense, 156 tf32, 19.5 fp32 (108 SMs x "
               "1.41 GHz); 2.04 TB/s HBM2e, copy assumed ~1.7 TB/s (not measured here); 164 KB shared per SM"),
)


def device_peak(device_name: str | None) -> DevicePeak | None:
    """The peak table entry whose name occurs in ``device_name`` (e.g. ``'NVIDIA H100 80GB HBM3'``)."""
    if not device_name:
        return None
    for peak in DEVICE_PEAKS:
        if peak.name.lower() in device_name.lower():
            return peak
    return None


def roofline_seconds(cost: Cost, peak: DevicePeak) -> float:
    """``max(flops / P[dtype], bytes / B)``: the least time the work can take on the device."""
    return max(cost.flops / peak.peak_flops(cost.dtype), cost.bytes / peak.bandwidth)


def roofline_fraction(cost: Cost | GeneratorCost, seconds: float, peak: DevicePeak | None) -> float | None:
    """The fraction of the roofline a measured time of ``seconds`` reaches (``None`` without a peak)."""
    if peak is None or seconds <= 0:
        return None
    floor = cost.roofline_seconds(peak) if isinstance(cost, GeneratorCost) else roofline_seconds(cost, peak)
    return floor / seconds
