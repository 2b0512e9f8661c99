"""From recovered configuration + named tensors to a generator, checked before anything is kept.

Every reader ends here: it recovers a :class:`~sgtriton.config.GeneratorConfig` and a flat
``{state-dict name: tensor}`` map, and :func:`build_loaded_generator` builds the generator, checks
the names strictly (nothing missing, nothing unexpected), checks every shape against what the
configuration implies, and only then copies the weights. Any failure raises
:class:`~sgtriton.checkpoints.errors.CheckpointError` and no generator is returned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from sgtriton.checkpoints.errors import CheckpointError
from sgtriton.config import GeneratorConfig, make_config
from sgtriton.generator import Generator
from sgtriton.graph.builder import build_graph

#: Buffers every generator recomputes from its configuration (FIR filters); a file may omit them,
#: and when it has them they must equal ours.
DERIVED_BUFFERS = ("resample_filter", "blur_filter")
_LIST_LIMIT = 8


def _is_derived(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in DERIVED_BUFFERS


def _listing(items: list[str]) -> str:
    more = f" (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
    return ", ".join(items[:_LIST_LIMIT]) + more


def make_checked_config(source: str, preset: str | None = None, **kwargs: Any) -> GeneratorConfig:
    """:func:`~sgtriton.config.make_config`, with its errors reported against ``source``."""
    try:
        return make_config(preset, **kwargs)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{source}: the recovered configuration is invalid: {exc}") from exc


def implied_weights(config: GeneratorConfig) -> int:
    """A lower bound on the weights ``config`` implies, from its graph alone (no tensor is made).

    Every style layer (``conv`` node) holds at least ``in_channels x out_channels`` weights,
    whatever its block type.
    """
    return sum(node.in_channels * node.out_channels for node in build_graph(config).synthesis_nodes
               if node.kind == "conv")


def check_budget(config: GeneratorConfig, tensors: Mapping[str, Any], source: str) -> None:
    """Refuse a configuration that implies more weights than the file holds, before allocating.

    A config claiming 2048 channels at 1024^2 beside a few kilobytes of weights is refused from
    the numbers alone; the generator built after this costs about as much memory as the file.
    """
    held = sum(t.numel() for t in tensors.values() if isinstance(t, torch.Tensor))
    try:
        implied = implied_weights(config)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{source}: cannot build a generator for the recovered configuration: {exc}") from exc
    if implied > held:
        raise CheckpointError(f"{source}: the recovered configuration ({describe(config)}) implies at least "
                              f"{implied:,} style-layer weights, but the file holds {held:,} tensor elements in all")


def check_tensors(expected: Mapping[str, torch.Tensor], tensors: Mapping[str, Any], config: GeneratorConfig,
                  source: str) -> None:
    """Refuse ``tensors`` unless their names, shapes and kinds are exactly the generator's (``expected``)."""
    missing = [k for k in expected if k not in tensors and not _is_derived(k)]
    unexpected = [str(k) for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {_listing(unexpected)}")
        raise CheckpointError(f"{source}: the tensors do not match a {describe(config)} generator: "
                              + "; ".join(parts))

    mismatched = []
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {name} is a {type(value).__name__}, expected a tensor")
        if tuple(value.shape) != tuple(expected[name].shape):
            mismatched.append(f"{name} {list(value.shape)} (expected {list(expected[name].shape)})")
        elif not (value.is_floating_point() or value.numel() == 0):
            mismatched.append(f"{name} has dtype {value.dtype} (expected floating point)")
    if mismatched:
        raise CheckpointError(f"{source}: tensor shapes contradict the recovered configuration "
                              f"({describe(config)}): {_listing(mismatched)}")


def build_loaded_generator(config: GeneratorConfig, tensors: Mapping[str, torch.Tensor], *, source: str,
                           backend: str | None = "auto", device: torch.device | str | None = None) -> Generator:
    """A generator for ``config`` holding ``tensors``; budget, strict names and shapes checked first."""
    check_budget(config, tensors, source)
    with torch.random.fork_rng(devices=[]):  # loading must not move the caller's RNG stream
        try:
            G = Generator(config, backend=backend)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: cannot build a generator for the recovered configuration: {exc}") from exc
    expected = G.state_dict()
    check_tensors(expected, tensors, config, source)
    for name, value in tensors.items():
        if _is_derived(name) and not torch.allclose(value.double(), expected[name].double(), atol=1e-6):
            raise CheckpointError(f"{source}: {name} differs from the filter implied by resample_filter="
                                  f"{list(config.synthesis.resample_filter)}; the network used another filter")

    full = {k: (tensors[k] if k in tensors else v).detach() for k, v in expected.items()}
    G.load_state_dict(full, strict=True)
    G.eval().requires_grad_(False)
    return G.to(device) if device is not None else G


def dim(value: Any, axis: int, name: str, source: str, ndim: int | None = None) -> int:
    """``value.shape[axis]`` of the tensor or array ``name``, after checking it has ``ndim`` dims."""
    shape = tuple(getattr(value, "shape", ()))
    if not isinstance(value, (torch.Tensor, np.ndarray)) or (ndim is not None and len(shape) != ndim) \
            or not -len(shape) <= axis < len(shape):
        want = f"{ndim}-D" if ndim is not None else f"at least {axis + 1}-D"
        raise CheckpointError(f"{source}: {name} has shape {list(shape)} ({type(value).__name__}), expected a {want} "
                              f"tensor")
    return int(shape[axis])


def describe(config: GeneratorConfig) -> str:
    syn = config.synthesis
    return (f"{config.block}/{syn.architecture} {config.img_resolution}x{config.img_resolution}, "
            f"z_dim={config.z_dim}, c_dim={config.c_dim}, w_dim={config.w_dim}, "
            f"channel_base={syn.channel_base}, channel_max={syn.channel_max}, "
            f"mapping layers={config.mapping.num_layers}")


def channel_layout(observed: Mapping[int, int], hint_base: int | None, hint_max: int | None,
                   source: str) -> tuple[int, int]:
    """``(channel_base, channel_max)`` with ``min(channel_base // r, channel_max) == observed[r]``.

    The hints (from stored keyword arguments) win when they fit; otherwise both are inferred.
    """
    def fits(base: int, cmax: int) -> bool:
        return all(min(base // r, cmax) == c for r, c in observed.items())

    hint_base = hint_base if _positive_int(hint_base) else None
    hint_max = hint_max if _positive_int(hint_max) else None

    if hint_base and hint_max and fits(hint_base, hint_max):
        return int(hint_base), int(hint_max)
    cmax = max(observed.values())
    below = sorted((r, c) for r, c in observed.items() if c < cmax)
    if below:
        base = below[0][0] * below[0][1]
    else:
        top = max(observed)
        base = hint_base if hint_base and hint_base // top >= cmax else cmax * top
    if fits(base, cmax):
        return int(base), int(cmax)
    raise CheckpointError(f"{source}: feature-map counts per resolution {dict(sorted(observed.items()))} "
                          f"cannot be written as min(channel_base // r, channel_max)")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**40


def fp16_layout(flags: Mapping[int, bool], hint: int | None, img_resolution: int, source: str) -> int:
    """``num_fp16_res`` reproducing the per-block fp16 flags (the hint when it does)."""
    log2 = int(math.log2(img_resolution))

    def flags_for(n: int) -> dict[int, bool]:
        lowest = max(2 ** (log2 + 1 - n), 8)
        return {r: r >= lowest for r in flags}

    if isinstance(hint, int) and hint >= 0 and flags_for(hint) == dict(flags):
        return hint
    count = sum(bool(v) for v in flags.values())
    if flags_for(count) == dict(flags):
        return count
    raise CheckpointError(f"{source}: fp16 blocks {sorted(r for r, v in flags.items() if v)} are not the highest "
                          f"resolutions; sgtriton marks the num_fp16_res highest blocks (never 4x4)")


def single_value(values: Iterable[Any], what: str, source: str) -> Any:
    """The one value every module agrees on; several distinct values raise naming them."""
    distinct: list[Any] = []
    for value in values:
        if value not in distinct:
            distinct.append(value)
    if len(distinct) != 1:
        raise CheckpointError(f"{source}: modules disagree on {what} ({distinct}); sgtriton uses one value "
                              f"for the whole network")
    return distinct[0]

