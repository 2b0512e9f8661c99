"""Fused bias + activation + gain + clamp (``bias_act``).

Maths, applied elementwise with ``b`` broadcast along ``dim``::

    y = clamp(act(x + b, alpha) * gain, -clamp, +clamp)

in exactly this order (NVlabs ``bias_act``). ``gain`` defaults to the activation's own gain
(``sqrt(2)`` for ``lrelu``/``relu``, 1 for ``linear``); ``clamp=None`` disables clamping.

Shapes: ``x`` any shape ``[..., C at dim, ...]``; ``b`` ``[C]`` or ``None``; returns ``x.shape``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Activation:
    """One row of the activation table: the function, its default slope and default gain."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    default_alpha: float
    default_gain: float


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, alpha: x, 0.0, 1.0),
    "relu": Activation(lambda x, alpha: torch.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, alpha: torch.nn.functional.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
}


def resolve_activation(act: str, alpha: float | None, gain: float | None) -> tuple[Activation, float, float]:
    """Look ``act`` up in :data:`ACTIVATIONS` and fill in its default ``alpha`` and ``gain``."""
    if act not in ACTIVATIONS:
        raise ValueError(f"act={act!r}: expected one of {sorted(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    return (
        spec,
        float(spec.default_alpha if alpha is None else alpha),
        float(spec.default_gain if gain is None else gain),
    )


def bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Reference ``bias_act`` in plain PyTorch (the specification; any device, any float dtype)."""
    spec, alpha, gain = resolve_activation(act, alpha, gain)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"b: expected shape [{x.shape[dim]}] (x.shape[{dim}]), got {list(b.shape)}")
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "ref",
) -> torch.Tensor:
    """``bias_act`` with a choice of implementation (``impl='ref'|'triton'``)."""
    if impl == "ref":
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    raise ValueError(f"impl={impl!r}: expected 'ref'")
