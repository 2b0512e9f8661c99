"""What is measured: per-op and whole-generator cases, their sizes per device, and their costs.

A :class:`Case` is a group (the op, or ``generator``), a label with the sizes, a dtype and a
builder. Building it on a device gives a :class:`Workload`: the reference computation
``fn(*args)`` (the same ``*_ref`` functions and modules the tests use, so benchmark and test
baselines cannot drift), the other providers' functions with the same signature (or the reason
they cannot run), the cost from :mod:`sgtriton.graph.cost`, and how many images one call makes.

Sizes: on CUDA, ops at StyleGAN2 config-F channel counts from 32^2 to 1024^2, batch 1 and 8, fp32
and fp16; generators at 256^2 and 1024^2 in fp32 and NVlabs mixed fp16 -- ``stylegan2-f`` (config
F) at batch 1/8/32 and ``stylegan1`` at batch 1/8 in the ``quick`` suite, every preset at batch
1/8/32 in ``full``; the ``short`` suite is three config-F cases (:data:`SHORT_GPU_CASES`).
On a CPU: small sizes, fp32 only (fp16 blocks run in fp32 off CUDA), plus the README example,
``stylegan2-f`` 256^2 batch 1, against the NVlabs-style baseline of :mod:`bench.nvlabs_style`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sgtriton.blocks.nodes import LayerNode
from sgtriton.graph.cost import (
    Cost,
    GeneratorCost,
    adain_epilogue_cost,
    bias_act_cost,
    generator_cost,
    mapping_chain_cost,
    node_cost,
    upfirdn2d_cost,
)

SQRT2 = math.sqrt(2)
FIR = (1, 3, 3, 1)
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
SUITES = ("short", "quick", "full")
#: The README's example and its speed target: `sgtriton generate` at 256^2, one image a call.
README_CASE = ("stylegan2-f", 256, 1)


@dataclass
class Workload:
    """One case built on one device."""

    fn: Callable[..., torch.Tensor]
    args: tuple[Any, ...]
    cost: Cost | GeneratorCost | None
    images: int
    #: provider -> a function with ``fn``'s signature, or the reason the provider cannot run.
    alternatives: dict[str, Callable[..., torch.Tensor] | str] = field(default_factory=dict)
    #: provider -> kernel launches per call according to the plan (generators only).
    launches: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    group: str
    label: str
    dtype: torch.dtype
    builder: Callable[..., Workload]
    params: tuple[tuple[str, Any], ...]
    #: provider -> why it is left out of this case in this suite.
    excluded: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        return f"{self.group}:{self.label}:{DTYPE_NAMES[self.dtype]}"

    @property
    def batch(self) -> int:
        return dict(self.params).get("batch", 1)

    def build(self, device: torch.device) -> Workload:
        return self.builder(device=device, dtype=self.dtype, **dict(self.params))

    def exclusion(self, provider: str) -> str | None:
        return dict(self.excluded).get(provider)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _randn(gen: torch.Generator, shape: list[int], device: torch.device,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def _rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def triton_op(module: str, name: str) -> Callable[..., torch.Tensor] | str:
    """``module.name`` bound to ``impl='triton'``, or why it cannot be (the op is being written)."""
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        return f"{module}.{name} is not available ({exc})"
    if "impl" not in inspect.signature(fn).parameters:
        return f"{module}.{name} takes no impl= argument"

    @functools.wraps(fn)  # keeps fn's signature visible to callers that bind by name
    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        return fn(*args, **kwargs, impl="triton")

    return run


def _block(name: str):
    from sgtriton.registry import create_block

    return create_block(name)


def _module_triton(block_type, call: Callable[[], Callable[..., torch.Tensor]]) -> Callable[..., torch.Tensor] | str:
    if "triton" not in block_type.implementations:
        return f"block {block_type.name!r} lists no triton implementation yet ({block_type.implementations})"
    return call()


def _stored(module: torch.nn.Module) -> int:
    return sum(t.numel() for t in module.parameters()) + sum(t.numel() for t in module.buffers())


# --------------------------------------------------------------------------------------------
# Op workloads
# --------------------------------------------------------------------------------------------


def modconv_workload(device: torch.device, dtype: torch.dtype, batch: int, cin: int, cout: int, res: int, up: int,
                     clamp: float | None = None) -> Workload:
    """One ``moddemod`` style layer after its affine: modulated 3x3 conv (+ up) + noise + bias_act."""
    from sgtriton.ops import modconv
    from sgtriton.ops.upfirdn2d import setup_filter

    gen = _rng()
    args = (
        _randn(gen, [batch, cin, res // up, res // up], device, dtype),  # x
        _randn(gen, [cout, cin, 3, 3], device),  # weight
        1 + 0.2 * _randn(gen, [batch, cin], device),  # styles
        0.1 * _randn(gen, [cout], device),  # bias
        _randn(gen, [res, res], device),  # noise (noise_const)
        torch.tensor(0.1, device=device),  # noise_strength
        setup_filter(FIR).to(device),  # resample_filter
    )
    fused = dtype == torch.float32 or batch == 1  # NVlabs' rule in eval mode
    kwargs = {"up": up, "act": "lrelu", "gain": SQRT2, "clamp": clamp, "fused_modconv": fused}

    def bind(layer: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def run(x, weight, styles, bias, noise, strength, f):
            return layer(x, weight, styles, bias=bias, noise=noise, noise_strength=strength, resample_filter=f,
                         **kwargs)
        return run

    node = LayerNode(f"b{res}.conv{0 if up > 1 else 1}", "conv", block="moddemod", resolution=res,
                     in_channels=cin, out_channels=cout, up=up, out_shape=(cout, res, res))
    # Read once besides x: weight, styles, bias, noise map, strength, filter.
    stored = sum(a.numel() for a in args[1:])
    cost = node_cost(node, _block("moddemod").macs(node), batch, dtype, stored)
    alternatives = {"triton": _bind_or_reason(triton_op("sgtriton.ops.modconv", "modulated_conv2d_layer"), bind)}
    return Workload(bind(modconv.modulated_conv2d_layer_ref), args, cost, batch, alternatives)


def _bind_or_reason(fn: Callable[..., torch.Tensor] | str, bind: Callable) -> Callable[..., torch.Tensor] | str:
    return fn if isinstance(fn, str) else bind(fn)


def torgb_workload(device: torch.device, dtype: torch.dtype, batch: int, channels: int, res: int,
                   img_channels: int = 3, w_dim: int = 512) -> Workload:
    """ToRGB (affine, modulated 1x1 conv, bias) plus the 2x-upsampled skip image added to it."""
    block = _block("moddemod")
    node = LayerNode(f"synthesis.b{res}.torgb", "torgb", block="moddemod", resolution=res, in_channels=channels,
                     out_channels=img_channels, kernel_size=1, w_index=0, w_dim=w_dim,
                     out_shape=(img_channels, res, res), options={"resample_filter": FIR})
    torgb = block.make_torgb(node).to(device).eval().requires_grad_(False)
    gen = _rng()
    args = (
        _randn(gen, [batch, channels, res, res], device, dtype),  # x
        _randn(gen, [batch, w_dim], device),  # w
        _randn(gen, [batch, img_channels, res // 2, res // 2], device),  # skip image (fp32)
    )
    fused = dtype == torch.float32 or batch == 1

    def run(impl: str) -> Callable[..., torch.Tensor]:
        def call(x, w, skip):
            return torgb(x, w, fused_modconv=fused, impl=impl, skip=skip)
        return call

    up_node = LayerNode(f"synthesis.b{res}.upsample_image", "upsample_image", resolution=res,
                        in_channels=img_channels, out_channels=img_channels, up=2, out_shape=(img_channels, res, res))
    cost = node_cost(node, block.macs(node), batch, dtype, _stored(torgb)) \
        + node_cost(up_node, block.macs(up_node), batch, torch.float32, 16)
    triton = _module_triton(block, lambda: run("triton"))
    if isinstance(triton, str):  # the block is not wired yet: use the fused op directly if it exists
        fused_op = triton_op("sgtriton.ops.torgb", "torgb_layer")
        triton = fused_op if isinstance(fused_op, str) else _torgb_by_name(fused_op, torgb, fused)
    return Workload(run("reference"), args, cost, batch, {"triton": triton})


def _torgb_by_name(op: Callable[..., torch.Tensor], torgb: torch.nn.Module,
                   fused: bool) -> Callable[..., torch.Tensor] | str:
    """Call a fused ToRGB op whose signature is known only by its parameter names."""
    def values(x, w, skip) -> dict[str, Any]:
        styles = torgb.affine(w) * torgb.weight_gain
        return {"x": x, "w": w, "styles": styles, "skip": skip, "img": skip, "weight": torgb.weight,
                "bias": torgb.bias, "clamp": torgb.conv_clamp, "conv_clamp": torgb.conv_clamp,
                "resample_filter": torgb.resample_filter, "f": torgb.resample_filter, "fused_modconv": fused,
                "demodulate": False}

    params = inspect.signature(op).parameters
    known = {"x", "w", "styles", "skip", "img", "weight", "bias", "clamp", "conv_clamp", "resample_filter", "f",
             "fused_modconv", "demodulate"}
    missing = [n for n, p in params.items() if n not in known and p.default is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if missing:
        return f"sgtriton.ops.torgb.torgb_layer: cannot bind parameter(s) {missing}"
    wanted = [n for n in params if n in known]

    def call(x, w, skip):
        v = values(x, w, skip)
        return op(**{n: v[n] for n in wanted})

    return call


def upfirdn2d_workload(device: torch.device, dtype: torch.dtype, batch: int, channels: int, size: int, up: int,
                       padding: tuple[int, int, int, int], gain: float) -> Workload:
    """``upfirdn2d`` with the 4x4 ``[1,3,3,1]`` FIR: after an up-conv (up=1, pad 1) or on the image (up=2)."""
    from sgtriton.ops.upfirdn2d import setup_filter, upfirdn2d_ref

    gen = _rng()
    args = (_randn(gen, [batch, channels, size, size], device, dtype), setup_filter(FIR).to(device))

    def bind(op: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def run(x, f):
            return op(x, f, up=up, padding=list(padding), gain=gain)
        return run

    out = (size * up + padding[0] + padding[1] - 4 + 1)
    cost = upfirdn2d_cost((batch, channels, size, size), (batch, channels, out, out), 16, up, dtype)
    alternatives = {"triton": _bind_or_reason(triton_op("sgtriton.ops.upfirdn2d", "upfirdn2d"), bind)}
    return Workload(bind(upfirdn2d_ref), args, cost, batch, alternatives)


def bias_act_workload(device: torch.device, dtype: torch.dtype, batch: int, channels: int, res: int,
                      clamp: float | None = 256.0) -> Workload:
    """``bias_act`` as a style layer uses it: bias, lrelu(0.2), gain sqrt(2), clamp."""
    from sgtriton.ops.bias_act import bias_act_ref

    gen = _rng()
    args = (_randn(gen, [batch, channels, res, res], device, dtype), _randn(gen, [channels], device))

    def bind(op: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def run(x, b):
            return op(x, b, act="lrelu", gain=SQRT2, clamp=clamp)
        return run

    cost = bias_act_cost(args[0].shape, dtype, has_bias=True, has_clamp=clamp is not None)
    alternatives = {"triton": _bind_or_reason(triton_op("sgtriton.ops.bias_act", "bias_act"), bind)}
    return Workload(bind(bias_act_ref), args, cost, batch, alternatives)


def adain_epilogue_workload(device: torch.device, dtype: torch.dtype, batch: int, channels: int,
                            res: int) -> Workload:
    """StyleGAN1's epilogue: noise, bias, lrelu, instance norm, AdaIN style."""
    from sgtriton.ops.normalization import adain_epilogue_ref

    gen = _rng()
    args = (
        _randn(gen, [batch, channels, res, res], device, dtype),  # x
        _randn(gen, [res, res], device),  # noise
        0.1 * _randn(gen, [channels], device),  # noise_weight
        0.1 * _randn(gen, [channels], device),  # bias
        0.2 * _randn(gen, [batch, 2 * channels], device),  # style
    )
    cost = adain_epilogue_cost(args[0].shape, dtype)
    alternatives = {"triton": triton_op("sgtriton.ops.normalization", "adain_epilogue")}
    return Workload(adain_epilogue_ref, args, cost, batch, alternatives)


def adain_layer_workload(device: torch.device, dtype: torch.dtype, batch: int, cin: int, cout: int, res: int,
                         up: int, w_dim: int = 512) -> Workload:
    """A whole StyleGAN1 layer (module): [up] conv [blur], epilogue, affine of w."""
    block = _block("adain")
    node = LayerNode(f"synthesis.b{res}.conv{0 if up > 1 else 1}", "conv", block="adain", resolution=res,
                     in_channels=cin, out_channels=cout, up=up, w_index=0, w_dim=w_dim,
                     out_shape=(cout, res, res), options={"resample_filter": FIR})
    layer = block.make_layer(node).to(device).eval().requires_grad_(False)
    with torch.no_grad():
        layer.noise_weight.fill_(0.1)
    gen = _rng()
    args = (_randn(gen, [batch, cin, res // up, res // up], device, dtype), _randn(gen, [batch, w_dim], device))

    def run(impl: str) -> Callable[..., torch.Tensor]:
        def call(x, w):
            return layer(x, w, noise_mode="const", impl=impl)
        return call

    cost = node_cost(node, block.macs(node), batch, dtype, _stored(layer))
    alternatives = {"triton": _module_triton(block, lambda: run("triton"))}
    return Workload(run("reference"), args, cost, batch, alternatives)


def mapping_workload(device: torch.device, dtype: torch.dtype, batch: int, layers: int = 8,
                     features: int = 512, lr_multiplier: float = 0.01) -> Workload:
    """The mapping chain: pixel norm, then ``layers`` x (equalised-lr FC + bias + lrelu * sqrt 2)."""
    from sgtriton.ops import fully_connected as fc

    gen = _rng()
    weights = [_randn(gen, [features, features], device) / lr_multiplier for _ in range(layers)]
    biases = [_randn(gen, [features], device) for _ in range(layers)]
    z = _randn(gen, [batch, features], device)
    gain = lr_multiplier / math.sqrt(features)

    def bind(chain: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def run(z, *params):
            return chain(z, list(params[:layers]), list(params[layers:]), gain, lr_multiplier, act="lrelu")
        return run

    cost = mapping_chain_cost(batch, [features] * (layers + 1))
    alternatives = {"triton": _bind_or_reason(triton_op("sgtriton.ops.fully_connected", "mapping_chain"), bind)}
    return Workload(bind(fc.mapping_chain_ref), (z, *weights, *biases), cost, batch, alternatives)


# --------------------------------------------------------------------------------------------
# Generator workloads
# --------------------------------------------------------------------------------------------


def generator_workload(device: torch.device, dtype: torch.dtype, batch: int, preset: str, resolution: int,
                       truncation_psi: float = 0.7) -> Workload:
    """A whole generator, ``G(z, None, truncation_psi, noise_mode='const')`` as ``sgtriton generate`` runs it.

    ``fp16`` builds NVlabs' mixed precision (``num_fp16_res=4, conv_clamp=256``): the four highest
    resolutions run in fp16 on CUDA.
    """
    from bench import nvlabs_style
    from sgtriton import build_generator
    from sgtriton.config import NVLABS_MIXED_PRECISION

    extra = dict(NVLABS_MIXED_PRECISION) if dtype == torch.float16 else {}
    G = build_generator(preset, img_resolution=resolution, seed=0, backend="reference", device=device, **extra)
    z = _randn(_rng(), [batch, G.z_dim], device)

    def run(impl: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def call(z):
            return G(z, None, truncation_psi=truncation_psi, noise_mode="const", impl=impl)
        return call

    cost = generator_cost(G, batch, device)
    launches = {"reference": cost.launches}
    alternatives: dict[str, Callable[..., torch.Tensor] | str] = {
        "triton": _module_triton(G.synthesis.block_type, lambda: run("triton")),
    }
    if not isinstance(alternatives["triton"], str):
        launches["triton"] = generator_cost(G.set_backend("triton"), batch, device).launches
        G.set_backend("reference")
    alternatives["triton-graph"] = _graphed_triton(G, device, batch, truncation_psi, alternatives["triton"])
    if nvlabs_style.supports(G.config):
        baseline = nvlabs_style.nvlabs_style_like(G)
        alternatives["nvlabs"] = lambda z: baseline(z, truncation_psi, "const")
    else:
        alternatives["nvlabs"] = "the NVlabs-style baseline covers unconditional moddemod skip/orig generators"
    return Workload(run("reference"), (z,), cost, batch, alternatives, launches=launches)


def _graphed_triton(G, device: torch.device, batch: int, truncation_psi: float,
                    triton: Callable[..., torch.Tensor] | str) -> Callable[..., torch.Tensor] | str:
    """``sgtriton generate --cuda-graph``'s computation: the mapping eagerly, the synthesis network
    replayed from a CUDA graph (:class:`~sgtriton.cuda_graph.CudaGraphSynthesis`), on the Triton kernels."""
    if isinstance(triton, str):
        return triton
    if device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if batch != 1:
        return "measured at batch 1, where launch overhead dominates"
    from sgtriton.cuda_graph import CudaGraphSynthesis

    graphed = CudaGraphSynthesis(G.synthesis)

    def call(z):
        ws = G.mapping(z, None, truncation_psi=truncation_psi, impl="triton")
        return graphed(ws, noise_mode="const", impl="triton")
    return call


# --------------------------------------------------------------------------------------------
# The case tables
# --------------------------------------------------------------------------------------------


def _case(group: str, label: str, dtype: torch.dtype, builder: Callable[..., Workload], **params: Any) -> Case:
    return Case(group, label, dtype, builder, tuple(params.items()))


def op_cases(device_type: str, suite: str = "quick") -> list[Case]:
    """Per-op cases for ``device_type`` (``'cuda'`` or ``'cpu'``)."""
    gpu = device_type == "cuda"
    dtypes = (torch.float32, torch.float16) if gpu else (torch.float32,)
    batches = (1, 8) if gpu else ((1, 4) if suite == "full" else (1,))
    # (cin, cout, res, up): config F layers. GPU: 32^2..1024^2; CPU: small ones.
    convs = [(512, 512, 32, 1), (512, 512, 64, 2), (256, 256, 128, 1), (512, 256, 128, 2), (64, 64, 512, 1),
             (32, 32, 1024, 1), (64, 32, 1024, 2)] if gpu else \
        [(512, 512, 8, 1), (512, 512, 16, 2), (128, 128, 64, 1), (256, 128, 64, 2)]
    torgbs = [(512, 64), (128, 256), (32, 1024)] if gpu else [(512, 16), (128, 64)]
    firs = [(256, 128), (32, 1024)] if gpu else [(128, 64)]  # (channels, res) of the FIR after an up-conv
    images = [512] if gpu else [64]  # skip-image upsample, from res to 2 res
    acts = [(512, 64), (128, 256), (32, 1024)] if gpu else [(512, 16), (128, 64)]
    adains = [(128, 128), (16, 1024)] if gpu else [(256, 32)]  # StyleGAN1 channel counts (fmap_base 8192)
    adain_layers = [(128, 128, 128, 1), (256, 128, 128, 2)] if gpu else [(256, 256, 32, 1), (256, 256, 32, 2)]
    mappings = (1, 8, 32) if gpu else ((1, 16) if suite == "full" else (1,))

    cases: list[Case] = []
    for dtype in dtypes:
        for batch in batches:
            for cin, cout, res, up in convs:
                kind = "up" if up > 1 else "conv"
                cases.append(_case("modconv", f"{kind} {cin}->{cout} {res}x{res} N{batch}", dtype, modconv_workload,
                                   batch=batch, cin=cin, cout=cout, res=res, up=up))
            for channels, res in torgbs:
                cases.append(_case("torgb", f"{channels}ch {res}x{res} +skip N{batch}", dtype, torgb_workload,
                                   batch=batch, channels=channels, res=res))
            for channels, res in firs:
                cases.append(_case("upfirdn2d", f"fir-after-upconv {channels}ch {2 * res + 1}->{2 * res} N{batch}",
                                   dtype, upfirdn2d_workload, batch=batch, channels=channels, size=2 * res + 1,
                                   up=1, padding=(1, 1, 1, 1), gain=4.0))
            for channels, res in acts:
                cases.append(_case("bias_act", f"{channels}ch {res}x{res} N{batch}", dtype, bias_act_workload,
                                   batch=batch, channels=channels, res=res))
            for channels, res in adains:
                cases.append(_case("adain", f"epilogue {channels}ch {res}x{res} N{batch}", dtype,
                                   adain_epilogue_workload, batch=batch, channels=channels, res=res))
            for cin, cout, res, up in adain_layers:
                kind = "up" if up > 1 else "conv"
                cases.append(_case("adain", f"layer {kind} {cin}->{cout} {res}x{res} N{batch}", dtype,
                                   adain_layer_workload, batch=batch, cin=cin, cout=cout, res=res, up=up))
    for batch in batches:  # the skip image is always fp32
        for res in images:
            cases.append(_case("upfirdn2d", f"upsample2d 3ch {res}->{2 * res} N{batch}", torch.float32,
                               upfirdn2d_workload, batch=batch, channels=3, size=res, up=2, padding=(2, 1, 2, 1),
                               gain=4.0))
    for batch in mappings:  # the mapping network always runs in fp32
        cases.append(_case("mapping", f"8x512 N{batch}", torch.float32, mapping_workload, batch=batch))
    return cases


PRESETS_ORDER = ("stylegan1", "revised", "stylegan2-b", "stylegan2-e", "stylegan2-f")

_COMPILE_COST = ("compile", "torch.compile of a whole generator costs tens of seconds per case; the short suite "
                            "compiles for the 1024^2 batch-8 fp16 case only")
#: The ``short`` suite on CUDA (``bench/device_check.sh``): batch-1 latency with and without the CUDA
#: graph at 256^2, and the throughput case the speed goals name (config F 1024^2, fp16, batch 8).
SHORT_GPU_CASES = (
    ("stylegan2-f", 256, 1, torch.float16, (_COMPILE_COST,)),
    ("stylegan2-f", 256, 1, torch.float32, (_COMPILE_COST,)),
    ("stylegan2-f", 1024, 8, torch.float16, ()),
)


def generator_cases(device_type: str, suite: str = "quick") -> list[Case]:
    """Whole-generator cases for ``device_type``; the README example comes first on a CPU."""
    cases: list[Case] = []
    if device_type == "cuda" and suite == "short":
        return [Case("generator", f"{preset} {res}x{res} N{batch}", dtype, generator_workload,
                     (("batch", batch), ("preset", preset), ("resolution", res)), excluded)
                for preset, res, batch, dtype, excluded in SHORT_GPU_CASES]
    if device_type == "cuda":
        for dtype in (torch.float32, torch.float16):
            for preset in (PRESETS_ORDER if suite == "full" else ("stylegan1", "stylegan2-f")):
                # config F at every batch size in one run; the other presets at 32 in the full suite only
                batches = (1, 8, 32) if suite == "full" or preset == "stylegan2-f" else (1, 8)
                for res in (256, 1024):
                    for batch in batches:
                        cases.append(_case("generator", f"{preset} {res}x{res} N{batch}", dtype, generator_workload,
                                           batch=batch, preset=preset, resolution=res))
        return cases

    preset, res, batch = README_CASE
    cases.append(_case("generator", f"{preset} {res}x{res} N{batch}", torch.float32, generator_workload,
                       batch=batch, preset=preset, resolution=res))
    if suite == "short":
        return cases
    small = [(p, 32, 1) for p in PRESETS_ORDER] + [("stylegan2-f", 64, 4)]
    if suite == "full":
        small += [("stylegan1", 256, 1), ("stylegan2-e", 256, 1), ("stylegan2-f", 128, 4)]
    slow_compile = ("compile", "torch.compile of a whole generator costs about a minute per case on a small "
                               "CPU; included with --suite full")
    for preset, res, batch in small:
        excluded = () if suite == "full" or (preset, res, batch) == ("stylegan2-f", 32, 1) else (slow_compile,)
        cases.append(Case("generator", f"{preset} {res}x{res} N{batch}", torch.float32, generator_workload,
                          (("batch", batch), ("preset", preset), ("resolution", res)), excluded))
    return cases


def all_cases(device_type: str, suite: str = "quick") -> list[Case]:
    """Every case of ``suite``: ``short`` is config F's generator alone (the device check's budget),
    ``quick`` adds the ops and the training step, ``full`` more sizes and presets."""
    if suite not in SUITES:
        raise ValueError(f"suite={suite!r}: expected one of {SUITES}")
    if suite == "short":
        return generator_cases(device_type, suite)
    from bench.training_step import training_step_cases  # builds on this module's Case and helpers

    return op_cases(device_type, suite) + generator_cases(device_type, suite) + training_step_cases(device_type, suite)
