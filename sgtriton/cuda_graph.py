"""``G.synthesis`` replayed from CUDA graphs: batch-1 latency without launch overhead.

A synthesis forward is a few dozen small launches (``sgtriton plan`` counts them: 43 for config F
at 256^2 on the Triton kernels, 55 at 1024^2), each costing the host microseconds to issue --
at batch 1 more than the GPU needs to run most of them. :class:`CudaGraphSynthesis` records the
forward once per fixed call signature and then replays the recording, one launch for the host::

    graphed = sgtriton.CudaGraphSynthesis(G.synthesis)
    img = graphed(ws, noise_mode="const")      # first call per signature: warm-up + capture
    img = graphed(ws2, noise_mode="const")     # later calls: copy ws in, replay, copy the image out

Per signature -- ``ws`` shape, dtype and device, ``noise_mode``, ``force_fp32``, ``impl``, whether
a noise source is installed, the network's backend and train/eval mode -- the first call runs the
forward once on a side stream (kernels compile, weight-derived caches such as the up=2 phase weights are
filled on the device), then captures a second forward into a ``torch.cuda.CUDAGraph`` reading a
static copy of ``ws``. Capturing needs a forward that does no host work after its warm-up
(:func:`sgtriton.testing.host_sync.no_host_syncs` checks that on any device). A replay reads the
network's parameters where they are, so in-place weight updates are seen, but operands derived
from them were computed at capture; so each call compares every parameter's and buffer's
storage and version counter with the capture's (host bookkeeping only) and captures again when
one changed. The derived operands the graph reads are kept alive with it (an LRU eviction must
not free memory a replay reads).

Noise with ``noise_mode='random'``:

* from the global RNG (the default): drawn inside the graph by the device generator, which CUDA
  graphs support (each replay advances its Philox offset), so every replay has fresh noise --
  from the same distribution as an eager call, not the same numbers;
* from a source installed with :func:`~sgtriton.blocks.layers.noise_source` (such as
  :func:`~sgtriton.blocks.layers.per_sample_noise`, which ``sgtriton generate`` uses so that a
  seed's image does not depend on its batch): the graph reads one static noise buffer per noisy
  layer, and each call fills them by calling the source exactly as an eager forward would
  (same layers, same order, on the host), so the images equal the eager ones. Drawing that
  noise is the only host work per call, and it is the source's: a CPU generator has to run on
  the CPU.

Inference only: the capture runs under ``torch.no_grad()`` and ``ws`` must not require grad.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sgtriton.blocks.layers import active_noise_source, noise_source
from sgtriton.ops._runtime import recording_derived_operands

#: Where graphs are recorded (tests replace the recorder and this together to run the logic on a CPU).
DEVICE_TYPE = "cuda"


@dataclass
class CapturedForward:
    """One recorded forward: its graph, the static tensors it reads and writes, and what it assumed."""

    replay: Callable[[], None]  # the CUDA graph's replay
    ws: torch.Tensor
    image: torch.Tensor
    noise: list[torch.Tensor]
    #: The network's parameters and buffers at capture, and their (storage, version) then.
    tensors: list[torch.Tensor]
    versions: tuple
    #: Weight-derived operands (phase weights, ...) the graph reads, kept alive past their cache's LRU.
    derived: list[Any]


class CudaGraphSynthesis:
    """``synthesis(ws, noise_mode, force_fp32)`` replayed from one CUDA graph per call signature.

    ``synthesis`` is a :class:`~sgtriton.graph.synthesis.SynthesisNetwork` (or any module with its
    call signature). With ``clone_output=False`` a call returns the graph's own output tensor, which
    the next replay of the same signature overwrites (one copy fewer per call).
    """

    def __init__(self, synthesis: nn.Module, *, warmup_calls: int = 1, clone_output: bool = True) -> None:
        if warmup_calls < 1:
            raise ValueError(f"warmup_calls={warmup_calls!r}: expected >= 1 (kernels compile and caches fill "
                             f"in the warm-up)")
        self.synthesis = synthesis
        self.warmup_calls = warmup_calls
        self.clone_output = clone_output
        self._captured: dict[tuple, CapturedForward] = {}

    @property
    def captures(self) -> int:
        """How many call signatures are recorded now."""
        return len(self._captured)

    def _tensors(self) -> list[torch.Tensor]:
        return [*self.synthesis.parameters(), *self.synthesis.buffers()]

    def __call__(self, ws: torch.Tensor, noise_mode: str = "random", force_fp32: bool = False,
                 impl: str | None = None) -> torch.Tensor:
        """``ws [N, num_ws, w_dim]`` on a CUDA device -> image ``[N, img_channels, R, R]`` (module docstring);
        ``impl`` overrides the network's backend, as in ``G.synthesis``."""
        if not isinstance(ws, torch.Tensor) or ws.device.type != DEVICE_TYPE:
            where = ws.device if isinstance(ws, torch.Tensor) else type(ws).__name__
            raise ValueError(f"ws: CUDA graphs need a CUDA device, got ws on {where} (call the synthesis "
                             f"network itself there)")
        if ws.requires_grad:
            raise ValueError("ws: CUDA-graph synthesis is for inference; got ws that requires grad")
        source = active_noise_source() if noise_mode == "random" else None
        key = (tuple(ws.shape), ws.dtype, ws.device, noise_mode, bool(force_fp32), source is not None, impl,
               getattr(self.synthesis, "backend", None), self.synthesis.training)
        captured = self._captured.get(key)
        if captured is None or _versions(captured.tensors) != captured.versions:
            if captured is not None:  # a weight changed: every recording is stale
                self._captured.clear()
            captured = self._captured[key] = self._capture(ws, noise_mode, force_fp32, impl, source is not None)
        captured.ws.copy_(ws)
        if source is not None:
            for buffer in captured.noise:
                buffer.copy_(source(buffer.shape[0], buffer.shape[-1], torch.device("cpu")))
        captured.replay()
        return captured.image.clone() if self.clone_output else captured.image

    def _capture(self, ws: torch.Tensor, noise_mode: str, force_fp32: bool, impl: str | None,
                 with_source: bool) -> CapturedForward:
        static_ws = ws.detach().clone()
        options = {} if impl is None else {"impl": impl}
        shapes: list[tuple[int, int]] = []
        buffers: list[torch.Tensor] = []

        def record(batch: int, resolution: int, device: torch.device) -> torch.Tensor:
            shapes.append((batch, resolution))  # the warm-up learns the noisy layers, drawing nothing
            return torch.zeros([batch, 1, resolution, resolution], device=device)

        def warm_up() -> None:
            for _ in range(self.warmup_calls):
                shapes.clear()
                with noise_source(record) if with_source else contextlib.nullcontext():
                    self.synthesis(static_ws, noise_mode=noise_mode, force_fp32=force_fp32, **options)

        def forward() -> torch.Tensor:
            if not with_source:
                return self.synthesis(static_ws, noise_mode=noise_mode, force_fp32=force_fp32, **options)
            served = iter(buffers)  # the noisy layers read the static buffers, in forward order
            with noise_source(lambda batch, resolution, device: next(served)):
                return self.synthesis(static_ws, noise_mode=noise_mode, force_fp32=force_fp32, **options)

        with torch.no_grad():
            warm_up_on_side_stream(warm_up, ws.device)
            buffers.extend(torch.empty([batch, 1, r, r], device=ws.device) for batch, r in shapes)
            with recording_derived_operands() as derived:
                replay, image = record_graph(forward, ws.device)
        tensors = self._tensors()
        return CapturedForward(replay, static_ws, image, buffers, tensors, _versions(tensors), derived)


def _versions(tensors: list[torch.Tensor]) -> tuple:
    """Each tensor's storage and version counter: what an in-place update or a move changes (host only)."""
    return tuple((t.data_ptr(), t._version) for t in tensors)


def warm_up_on_side_stream(warm_up: Callable[[], None], device: torch.device) -> None:
    """Run ``warm_up()`` on a side stream, as ``torch.cuda.graphs`` recommends: lazy set-up (kernel
    compiles, cached operands) stays out of the capture and off the caller's stream."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        warm_up()
    torch.cuda.current_stream(device).wait_stream(side)


def record_graph(forward: Callable[[], torch.Tensor], device: torch.device) -> tuple[Callable[[], None], torch.Tensor]:
    """Capture ``forward()`` in a ``torch.cuda.CUDAGraph``: ``(replay, the static output it rewrites)``."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = forward()
    return graph.replay, output
