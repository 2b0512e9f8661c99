"""The synthesis network: const 4x4 -> one block per resolution -> image, built from the graph.

Block ``b{r}`` (attribute names are NVlabs'), for ``x [N, C(r/2), r/2, r/2]`` and the running
skip image ``img [N, img_channels, r/2, r/2]``::

    x = const (r = 4, repeated over the batch) [-> input layer, StyleGAN1]
    'orig'/'skip':  x = conv1(conv0(x, w_a), w_b)
    'resnet':       x = skip(x) * sqrt(.5) + conv1(conv0(x, w_a), w_b) * sqrt(.5)
    img = upsample2d(img) + torgb(x, w_c)          (w_c = next block's w_a when ToRGB is styled)

Blocks marked fp16 run in fp16 on CUDA only (and never with ``force_fp32``); the image path is
float32 (float64 for a generator converted with ``.double()``, the float64 reference).
``fused_modconv=None`` picks NVlabs' rule: fused in eval mode when not fp16, or at batch 1.

As in NVlabs, every block reads only its own ws: the network hands block ``b{r}`` the slice
``ws[:, i : i + num_conv + num_torgb]`` and then advances ``i`` by ``num_conv`` (a block's ToRGB and
the next block's conv0 share a w), so a training loop of NVlabs' shape,
``x, img = block(x, img, ws.narrow(1, i, block.num_conv + block.num_torgb), noise_mode=...)``,
drives the blocks directly.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
from torch import nn

from sgtriton.backends import resolve_impl
from sgtriton.blocks.base import NOISE_MODES, BlockType
from sgtriton.blocks.layers import SkipConv
from sgtriton.blocks.nodes import LayerNode
from sgtriton.graph.builder import BuiltFromGraph, Graph
from sgtriton.ops.upfirdn2d import setup_filter

#: Set by :func:`fp16_as_on_cuda`: fp16-marked blocks run in fp16 on every device.
_FP16_ON_EVERY_DEVICE = contextvars.ContextVar("sgtriton_fp16_on_every_device", default=False)


def block_runs_fp16(marked_fp16: bool, force_fp32: bool, device: torch.device) -> bool:
    """NVlabs' rule: a block marked fp16 (``num_fp16_res``) runs in fp16 on CUDA unless ``force_fp32``.

    Inside :func:`fp16_as_on_cuda` the device does not matter, so a CPU run launches what a CUDA
    run of the same generator would.
    """
    on_cuda = device.type == "cuda" or _FP16_ON_EVERY_DEVICE.get()
    return marked_fp16 and not force_fp32 and on_cuda


@contextlib.contextmanager
def fp16_as_on_cuda() -> Iterator[None]:
    """Within the block, fp16-marked blocks run in fp16 off CUDA too (the performance model captures
    a CUDA run's kernel launches on the CPU: ``sgtriton kernels --model``)."""
    token = _FP16_ON_EVERY_DEVICE.set(True)
    try:
        yield
    finally:
        _FP16_ON_EVERY_DEVICE.reset(token)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network, with NVlabs ``SynthesisBlock`` attribute names."""

    def __init__(self, nodes: dict[str, LayerNode], block_type: BlockType, architecture: str,
                 img_channels: int, is_last: bool, resample_filter: tuple[int, ...], backend: str = "auto") -> None:
        super().__init__()
        main = nodes["conv1"]
        self.resolution = main.resolution
        self.in_channels = nodes["conv0"].in_channels if "conv0" in nodes else 0
        self.out_channels = main.out_channels
        self.w_dim = main.w_dim
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = main.use_fp16
        self.num_conv = sum(n.kind in ("conv", "input") for n in nodes.values())
        self.num_torgb = int("torgb" in nodes and nodes["torgb"].w_index is not None)
        # NVlabs attribute: whether fp16 activations use channels-last memory; sgtriton's kernels
        # take contiguous NCHW, so never.
        self.channels_last = False
        self.backend = backend
        self.nodes = nodes
        self.block_type_implementations = block_type.implementations
        # Position of each styled node's w inside this block's slice of ws (see the module docstring).
        styled = {attr: n.w_index for attr, n in nodes.items() if n.w_index is not None}
        self.first_w = min(styled.values()) if styled else 0
        self.local_w = {attr: index - self.first_w for attr, index in styled.items()}
        if "const" in nodes:
            init = torch.ones if block_type.const_init == "ones" else torch.randn
            self.const = nn.Parameter(init([self.out_channels, 4, 4]))
        # NVlabs' per-block FIR buffer (kept for state-dict names; ToRGB applies the skip filter).
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        for attr in ("input", "conv0", "conv1"):
            if attr in nodes:
                setattr(self, attr, block_type.make_layer(nodes[attr]))
        if "torgb" in nodes:
            self.torgb = block_type.make_torgb(nodes["torgb"])
        if "skip" in nodes:
            self.skip = SkipConv(nodes["skip"].in_channels, nodes["skip"].out_channels, resample_filter)

    def check_ws(self, ws: torch.Tensor) -> None:
        expected = (self.num_conv + self.num_torgb, self.w_dim)
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or tuple(ws.shape[1:]) != expected:
            got = list(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
            raise ValueError(f"ws: block b{self.resolution} expected its own slice [N, {expected[0]}, {expected[1]}] "
                             f"(num_conv + num_torgb ws), got {got}")

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str = "random", force_fp32: bool = False, fused_modconv: bool | None = None,
                update_emas: bool = False, impl: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, in_channels, r/2, r/2]`` (None for b4), ``img [N, img_channels, r/2, r/2]`` or None and this
        block's ``ws [N, num_conv + num_torgb, w_dim]`` -> ``(x [N, out_channels, r, r], img)``.

        ``update_emas`` is accepted for NVlabs compatibility (blocks track no averages); ``impl``
        overrides the backend's choice."""
        self.check_ws(ws)
        if impl is None:
            impl = resolve_impl(self.backend, ws.device, self.block_type_implementations)
        batch = ws.shape[0]
        use_fp16 = block_runs_fp16(self.use_fp16, force_fp32, ws.device)
        dtype = torch.float16 if use_fp16 else ws.dtype  # ws.dtype: float32, or float64 for a .double() G
        if fused_modconv is None:
            fused_modconv = (not self.training) and (dtype != torch.float16 or batch == 1)
        layer_kwargs = {"noise_mode": noise_mode, "fused_modconv": fused_modconv, "impl": impl}

        def w_of(attr: str) -> torch.Tensor:
            return ws[:, self.local_w[attr]]

        if x is None:
            x = self.const.to(dtype).unsqueeze(0).repeat([batch, 1, 1, 1])
            if hasattr(self, "input"):
                x = self.input(x, w_of("input"), **layer_kwargs)
        else:
            x = x.to(dtype)

        if self.architecture == "resnet" and hasattr(self, "skip"):
            y = self.skip(x, gain=math.sqrt(0.5), impl=impl)
            x = self.conv0(x, w_of("conv0"), **layer_kwargs)
            x = self.conv1(x, w_of("conv1"), gain=math.sqrt(0.5), **layer_kwargs)
            x = y + x
        else:
            if hasattr(self, "conv0"):
                x = self.conv0(x, w_of("conv0"), **layer_kwargs)
            x = self.conv1(x, w_of("conv1"), **layer_kwargs)

        # Every block that receives an image has a ToRGB ('skip'; 'orig'/'resnet' start the image in the
        # last block), and ToRGB adds the upsampled skip image itself, so kernels can fuse the two.
        if hasattr(self, "torgb"):
            w = w_of("torgb") if "torgb" in self.local_w else None
            img = self.torgb(x, w, fused_modconv=fused_modconv, impl=impl, skip=img)
        return x, img

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, architecture={self.architecture}, "
                f"in_channels={self.in_channels}, out_channels={self.out_channels}, use_fp16={self.use_fp16}")


class SynthesisNetwork(BuiltFromGraph, nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image ``[N, img_channels, R, R]`` (float32, not clamped)."""

    def __init__(self, graph: Graph, backend: str = "auto") -> None:
        super().__init__()
        config = graph.config
        self.graph = graph
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_resolution_log2 = config.resolution_log2
        self.img_channels = config.img_channels
        self.channel_base = config.synthesis.channel_base
        self.channel_max = config.synthesis.channel_max
        self.num_fp16_res = config.synthesis.num_fp16_res
        self.block_resolutions = config.block_resolutions
        self.num_ws = graph.num_ws
        self.block_type = graph.block_type
        for r in self.block_resolutions:
            block = SynthesisBlock(graph.block_nodes(r), graph.block_type, config.synthesis.architecture,
                                   config.img_channels, r == config.img_resolution,
                                   config.synthesis.resample_filter, backend)
            setattr(self, f"b{r}", block)
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self._backend = value
        for r in self.block_resolutions:
            getattr(self, f"b{r}").backend = value

    def check_ws(self, ws: torch.Tensor) -> None:
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            got = list(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
            raise ValueError(f"ws: expected a tensor of shape [N, {self.num_ws}, {self.w_dim}], got {got}")
        if not ws.is_floating_point():
            raise TypeError(f"ws: expected a floating-point tensor, got dtype {ws.dtype}")

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", force_fp32: bool = False,
                fused_modconv: bool | None = None, update_emas: bool | None = None,
                impl: str | None = None) -> torch.Tensor:
        """``update_emas`` is accepted for NVlabs compatibility (synthesis tracks no averages); ``impl``
        overrides the backend's choice (``'reference'`` or ``'triton'``)."""
        self.check_ws(ws)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode={noise_mode!r}: expected one of {NOISE_MODES}")
        if impl is None:
            impl = resolve_impl(self.backend, ws.device, self.block_type.implementations)
        # NVlabs computes in float32; a generator converted with .double() computes in float64.
        ws = ws.to(torch.float64 if self.b4.const.dtype == torch.float64 else torch.float32)
        x = img = None
        w_idx = 0
        for r in self.block_resolutions:
            block = getattr(self, f"b{r}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode, force_fp32, fused_modconv, impl=impl)
        return img

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, block={self.block_type.name}")
