"""The work of one kernel launch: programs, main-loop trips, FLOPs and minimum bytes, per kernel.

One table, :data:`WORK`, keyed by declared kernel name, reads a captured launch -- its grid, and
its arguments bound to the ``@triton.jit`` function's *parameter names* (never positions, so a
reordered signature still reads right) -- and returns a :class:`Work`:

* ``programs`` -- the grid's product;
* ``main_trips`` -- iterations of the kernel's main loop (the one :mod:`~sgtriton.inspection.sass`
  picks) per program; ``other_trips`` -- iterations assumed for every *other* loop of the SASS
  (``None``: as many as the main loop);
* ``flops`` -- FLOPs executed (``2 x`` multiply-adds as the kernel runs them, e.g. the up=2
  polyphase conv's four full 3x3 phases); ``useful_flops`` -- those the layer needs (the
  transposed conv's own multiply-adds for up=2);
* ``bytes`` -- the least DRAM traffic: every input the launch needs read once and every output
  written once (:mod:`sgtriton.graph.cost`'s convention: parameters as stored, activations in
  their dtype; operands derived from weights -- up=2 phase weights -- count as the weight they
  come from).

Conventions follow :mod:`sgtriton.graph.cost` (its ``bias_act_cost``, ``upfirdn2d_cost`` and
``adain_epilogue_cost`` are used as they are). A kernel missing from the table is still modelled
(:func:`generic_work`: bytes of its distinct tensor arguments, FLOPs 0, one trip) with a note.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sgtriton.graph.cost import adain_epilogue_cost, bias_act_cost, upfirdn2d_cost
from sgtriton.inspection.launches import CapturedLaunch
from sgtriton.ops._runtime import KernelSpec, jit_function


@dataclass(frozen=True)
class Work:
    """What one launch does (see the module docstring)."""

    kind: str
    programs: int
    main_trips: int
    flops: int
    useful_flops: int
    bytes: int
    other_trips: int | None = None
    notes: tuple[str, ...] = ()


class LaunchArgs:
    """A captured launch's arguments by the kernel's parameter names, and its grid."""

    def __init__(self, spec: KernelSpec, launch: CapturedLaunch) -> None:
        names = [param.name for param in jit_function(spec.fn).params]
        self.values: dict[str, Any] = dict(zip(names, launch.args, strict=False))
        self.values.update({k: v for k, v in launch.kwargs.items() if k in names})
        grid = launch.grid(dict(self.values)) if callable(launch.grid) else launch.grid
        self.grid = tuple(int(g) for g in (grid if isinstance(grid, (tuple, list)) else (grid,)))

    @property
    def programs(self) -> int:
        return math.prod(self.grid)

    def __getitem__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(f"the launch has no parameter {name!r} (parameters: {sorted(self.values)})") from None

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def tensors(self, names: tuple[str, ...] | None = None) -> list[torch.Tensor]:
        chosen = self.values if names is None else {n: self.values[n] for n in names if n in self.values}
        return [v for v in chosen.values() if isinstance(v, torch.Tensor)]


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a view spans once: ``1 + sum (size - 1) |stride|`` elements (a stride-0 broadcast counts once)."""
    if t.numel() == 0:
        return 0
    span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride(), strict=True))
    return span * t.element_size()


def distinct_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of ``tensors`` with views of one storage counted once (launchers pass an output as the
    dummy pointer of an unused argument)."""
    by_storage: dict[int, int] = {}
    for t in tensors:
        key = t.untyped_storage().data_ptr()
        by_storage[key] = max(by_storage.get(key, 0), tensor_bytes(t))
    return sum(by_storage.values())


def generic_work(spec: KernelSpec, launch: CapturedLaunch, kind: str = "other") -> Work:
    """Any kernel: its grid, one trip per loop, FLOPs 0 and the bytes of its tensor arguments."""
    args = LaunchArgs(spec, launch)
    return Work(kind, args.programs, 1, 0, 0, distinct_bytes(args.tensors()),
                notes=(f"no work formula for kernel {spec.name!r}: bytes = its tensor arguments once, "
                       "FLOPs 0, loops counted once",))


# --------------------------------------------------------------------------------------------
# Per-kernel formulas
# --------------------------------------------------------------------------------------------

#: Tensor arguments of the modulated-conv kernels a layer must move; flags gate the optional ones.
_MODCONV_OPERANDS = ("x_ptr", "w_ptr", "bank_ptr", "logits_ptr", "s_ptr", "out_ptr")
_MODCONV_OPTIONAL = {"bias_ptr": "HAS_BIAS", "noise_ptr": "HAS_NOISE", "strength_ptr": "HAS_NOISE",
                     "skip_ptr": "SKIP"}


def modconv_work(spec: KernelSpec, launch: CapturedLaunch, kind: str = "conv") -> Work:
    """Modulated conv (``modconv2d``, ``modconv2d_up2``, ``torgb``, the adaptive-kernel plugin's).

    Assumes only: grid = (pixel blocks x output-channel blocks, phases, samples or 1); main-loop
    trips = ``KH KW ceil(I / BLOCK_K)``; ``I, O, H, W, KH, KW, UP, BLOCK_K`` and the flags by name.
    Executed FLOPs ``2 N O (H UP)(W UP) I KH KW``; for ``UP = 2`` the useful FLOPs are the transposed
    conv's ``2 N O H W I 9`` (the FIR adds nothing). ``N`` = elements of ``out`` / ``(O H UP W UP)``.
    """
    args = LaunchArgs(spec, launch)
    i, o, h, w = (int(args[name]) for name in ("I", "O", "H", "W"))
    kh, kw, up = int(args["KH"]), int(args["KW"]), int(args.get("UP", 1))
    out = args["out_ptr"]
    n = out.numel() // max(o * h * up * w * up, 1)
    flops = 2 * n * o * (h * up) * (w * up) * i * kh * kw
    useful = 2 * n * o * h * w * i * 9 if up == 2 else flops
    names = _MODCONV_OPERANDS + tuple(name for name, flag in _MODCONV_OPTIONAL.items() if args.get(flag, True))
    notes = []
    if up == 2:
        notes.append("up=2 runs 4 full 3x3 phases: executed FLOPs = 4x the transposed conv's")
    return Work(kind, args.programs, kh * kw * math.ceil(i / int(args["BLOCK_K"])), flops, useful,
                distinct_bytes(args.tensors(names)), notes=tuple(notes))


def torgb_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    return modconv_work(spec, launch, "torgb")


def modconv_prologue_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    """The modulated conv's prologue: ``d = rsqrt(s'^2 Q'^T + eps)``, ``2 N I O`` FLOPs; a loop of
    ``ceil(I / BLOCK_I)`` trips (the max-abs pass of fp16 pre-normalisation runs as many)."""
    args = LaunchArgs(spec, launch)
    i, o = int(args["I"]), int(args["O"])
    n = args["d_ptr"].numel() // max(o, 1)
    trips = math.ceil(i / int(args["BLOCK_I"]))
    return Work("prologue", args.programs, trips, 2 * n * i * o, 2 * n * i * o,
                distinct_bytes(args.tensors(("s_ptr", "qt_ptr", "s_out_ptr", "d_ptr"))), other_trips=trips)


def fully_connected_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    """``y [batch, out] = act(x [batch, in] W^T ...)``: one K loop of ``ceil(in / BLOCK_K)`` trips."""
    args = LaunchArgs(spec, launch)
    batch, fan_in, fan_out = int(args["batch"]), int(args["in_features"]), int(args["out_features"])
    flops = 2 * batch * fan_in * fan_out
    return Work("fc", args.programs, math.ceil(fan_in / int(args["BLOCK_K"])), flops, flops,
                distinct_bytes(args.tensors(("x_ptr", "w_ptr", "b_ptr", "y_ptr"))))


def mapping_chain_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    """Pixel norm + ``L`` FC layers in one program per row block. Main loop: the K loop of layers
    ``1..L-1``, ``(L - 1) ceil(D / BLOCK_N) ceil(D / BLOCK_K)`` trips; other loops (layer 0's K loop,
    the norm): ``ceil(D / BLOCK_N) ceil(in / BLOCK_K)``. The scratch ping-pong stays in L2."""
    args = LaunchArgs(spec, launch)
    batch, fan_in, d, layers = (int(args[n]) for n in ("batch", "in_features", "features", "num_layers"))
    block_n, block_k = int(args["BLOCK_N"]), int(args["BLOCK_K"])
    flops = 2 * batch * (fan_in * d + (layers - 1) * d * d)
    main = max(layers - 1, 1) * math.ceil(d / block_n) * math.ceil(d / block_k)
    return Work("fc", args.programs, main, flops, flops,
                distinct_bytes(args.tensors(("x_ptr", "w_first_ptr", "w_rest_ptr", "b_ptr", "y_ptr"))),
                other_trips=math.ceil(d / block_n) * math.ceil(fan_in / block_k))


def truncate_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    """Broadcast ``w`` to ``num_ws`` rows with a lerp: a loop of ``num_ws`` trips, 3 FLOPs per output."""
    args = LaunchArgs(spec, launch)
    y = args["y_ptr"]
    return Work("truncate", args.programs, int(args["num_ws"]), 3 * y.numel(), 3 * y.numel(),
                distinct_bytes(args.tensors(("w_ptr", "w_avg_ptr", "y_ptr"))))


def pixel_norm_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    """Rows scaled by ``rsqrt(mean(x^2) + eps)``: two loops of ``ceil(features / BLOCK_F)`` trips."""
    args = LaunchArgs(spec, launch)
    rows, features = int(args["rows"]), int(args["features"])
    return Work("norm", args.programs, math.ceil(features / int(args["BLOCK_F"])), 3 * rows * features,
                3 * rows * features, distinct_bytes(args.tensors(("x_ptr", "y_ptr"))))


def bias_act_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    """Elementwise, no loop: :func:`~sgtriton.graph.cost.bias_act_cost`."""
    args = LaunchArgs(spec, launch)
    x = args["x_ptr"]
    cost = bias_act_cost(list(x.shape), x.dtype, bool(args["HAS_BIAS"]), bool(args["HAS_CLAMP"]))
    return Work("bias_act", args.programs, 0, cost.flops, cost.flops, cost.bytes)


def upfirdn2d_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    """One tile of one plane per program; the loop runs over ``ceil(FILTER_H / UP_Y)`` tap rows:
    :func:`~sgtriton.graph.cost.upfirdn2d_cost` (useful taps only)."""
    args = LaunchArgs(spec, launch)
    x, y = args["x_ptr"], args["y_ptr"]
    taps_h, taps_w, up = int(args["FILTER_H"]), int(args["FILTER_W"]), int(args["UP_Y"])
    cost = upfirdn2d_cost(list(x.shape), list(y.shape), taps_h * taps_w, up, x.dtype)
    return Work("upfirdn", args.programs, math.ceil(taps_h / up), cost.flops, cost.flops, cost.bytes)


def adain_epilogue_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    """One ``(n, c)`` plane per program, two passes of ``ceil(hw / BLOCK)`` trips:
    :func:`~sgtriton.graph.cost.adain_epilogue_cost`."""
    args = LaunchArgs(spec, launch)
    x = args["x_ptr"]
    cost = adain_epilogue_cost(list(x.shape), x.dtype)
    return Work("norm", args.programs, math.ceil(int(args["hw"]) / int(args["BLOCK"])), cost.flops, cost.flops,
                cost.bytes)


def rms_normalize_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    """One ``(n, c)`` plane per program, two passes of ``ceil(hw / BLOCK)`` trips; about 8 FLOPs per
    element (square-sum, scale, noise FMA, bias, activation, gain)."""
    args = LaunchArgs(spec, launch)
    x = args["x_ptr"]
    names = ("x_ptr", "y_ptr") + tuple(n for n, flag in (("noise_ptr", "HAS_NOISE"), ("bias_ptr", "HAS_BIAS"))
                                       if args.get(flag))
    return Work("norm", args.programs, math.ceil(int(args["hw"]) / int(args["BLOCK"])), 8 * x.numel(),
                8 * x.numel(), distinct_bytes(args.tensors(names)))


#: Work formula per declared kernel name (kernels not listed: :func:`generic_work`).
WORK: dict[str, Callable[[KernelSpec, CapturedLaunch], Work]] = {
    "modconv2d": modconv_work,
    "modconv2d_up2": modconv_work,
    "modconv2d_prologue": modconv_prologue_work,
    "torgb": torgb_work,
    "adaptive_modconv2d": modconv_work,
    "adaptive_modconv2d_large_bank": modconv_work,
    "adaptive_modconv2d_up2": modconv_work,
    "adaptive_modconv2d_up2_large_bank": modconv_work,
    "fully_connected": fully_connected_work,
    "mapping_chain": mapping_chain_work,
    "truncate": truncate_work,
    "pixel_norm": pixel_norm_work,
    "bias_act": bias_act_work,
    "upfirdn2d": upfirdn2d_work,
    "adain_epilogue": adain_epilogue_work,
    "rms_normalize": rms_normalize_work,
}


def launch_work(spec: KernelSpec, launch: CapturedLaunch) -> Work:
    """:data:`WORK`'s formula for ``spec`` on ``launch``; a kernel without one, or whose formula
    cannot read this launch (a changed signature), gets :func:`generic_work` and a note."""
    formula = WORK.get(spec.name)
    if formula is None:
        return generic_work(spec, launch)
    try:
        return formula(spec, launch)
    except (KeyError, TypeError, ValueError) as exc:
        fallback = generic_work(spec, launch)
        return Work(fallback.kind, fallback.programs, fallback.main_trips, 0, 0, fallback.bytes,
                    notes=(f"work formula for {spec.name!r} failed ({type(exc).__name__}: {exc}); "
                           "generic: bytes of its tensor arguments, FLOPs 0",))


__all__ = ["WORK", "LaunchArgs", "Work", "distinct_bytes", "generic_work", "launch_work", "tensor_bytes"]
