"""Training-step cases: one forward and backward of the synthesis network w.r.t. ``ws`` and every parameter.

The step is what projection, fine-tuning and training repeat: ``img = G.synthesis(ws)``, the loss
``sum(img * c)`` for a fixed cotangent ``c``, and ``d loss / d (ws, parameters)``. The workload returns
every gradient flattened into one vector, so the runner's accuracy gate compares the providers'
gradients with the eager reference's before anything is timed. Providers: the eager reference,
``torch.compile`` of the same step (Inductor compiles the forward and, through AOTAutograd, its
backward), and the Triton kernels (their backward formulas; CUDA only).

Config F (``stylegan2-f``) at 256^2 on every device; on CUDA also batch 8 and NVlabs mixed fp16.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.cases import Case, Workload, _module_triton, _randn, _rng

PRESET = "stylegan2-f"
RESOLUTION = 256


def training_step_workload(device: torch.device, dtype: torch.dtype, batch: int, preset: str,
                           resolution: int) -> Workload:
    """``(ws) -> concat(d loss/d ws, d loss/d params)`` for ``loss = sum(G.synthesis(ws) * c)``."""
    from sgtriton import build_generator
    from sgtriton.graph.cost import generator_cost

    extra = {"num_fp16_res": 4, "conv_clamp": 256} if dtype == torch.float16 else {}
    G = build_generator(preset, img_resolution=resolution, seed=0, backend="reference", device=device, **extra)
    G.requires_grad_(True)
    params = [p for p in G.synthesis.parameters()]
    gen = _rng()
    ws = _randn(gen, [batch, G.num_ws, G.w_dim], device)
    cotangent = _randn(gen, [batch, G.img_channels, resolution, resolution], device)

    def run(impl: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def step(ws):
            with torch.enable_grad():  # the runner times every provider under no_grad
                ws = ws.detach().requires_grad_()
                img = G.synthesis(ws, noise_mode="const", impl=impl)
                grads = torch.autograd.grad((img * cotangent).sum(), [ws, *params])
            return torch.cat([g.flatten().float() for g in grads])
        return step

    cost = generator_cost(G, batch, device)
    alternatives = {"triton": _module_triton(G.synthesis.block_type, lambda: run("triton"))}
    return Workload(run("reference"), (ws,), None, batch, alternatives, launches={"reference": cost.launches})


def training_step_cases(device_type: str, suite: str = "quick") -> list[Case]:
    """``stylegan2-f`` 256^2 batch 1 everywhere; on CUDA also batch 8 and mixed fp16."""
    shapes = [(torch.float32, 1)]
    if device_type == "cuda":
        shapes += [(torch.float32, 8), (torch.float16, 1), (torch.float16, 8)]
    return [Case("training_step", f"{PRESET} {RESOLUTION}x{RESOLUTION} fwd+bwd(ws, params) N{batch}", dtype,
                 training_step_workload, (("batch", batch), ("preset", PRESET), ("resolution", RESOLUTION)))
            for dtype, batch in shapes]
