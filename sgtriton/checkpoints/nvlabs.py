"""NVlabs PyTorch network pickles (stylegan2-ada-pytorch and stylegan3's ``networks_stylegan2``).

A snapshot is a plain pickle of a dict with ``G``, ``D``, ``G_ema`` ... whose modules were pickled
by ``torch_utils.persistence``; read through the allow-list they arrive as
:class:`~sgtriton.checkpoints.safe_pickle.PersistentRecord` trees (class name + ``__dict__``).

From ``G_ema``:

* tensors: walk ``_parameters`` / ``_buffers`` (persistent only) / ``_modules`` -> the NVlabs
  state-dict names, which are sgtriton's ``moddemod`` names;
* configuration: the per-module attributes every record stores (``architecture``, ``use_fp16``,
  ``conv_clamp``, ``use_noise``, ``activation``, mapping ``num_layers`` / ``w_avg_beta`` /
  ``bias_gain``), shapes for channel counts and label/embedding sizes, and ``_init_kwargs`` (ada:
  ``synthesis_kwargs`` nested; sg3: flat) only for what neither gives, with each flavour's own
  defaults (ada: w_avg_beta 0.995, num_fp16_res 0, conv_clamp None; sg3: 0.998, 4, 256).

StyleGAN3 (alias-free) generators -- synthesis children ``input``, ``L0_36_512`` ... -- are
refused: sgtriton does not implement them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from sgtriton.checkpoints.assemble import (
    build_loaded_generator,
    channel_layout,
    dim,
    fp16_layout,
    make_checked_config,
    single_value,
)
from sgtriton.checkpoints.errors import CheckpointError, quote
from sgtriton.checkpoints.safe_pickle import PersistentRecord
from sgtriton.config import MAX_RESOLUTION, GeneratorConfig
from sgtriton.filters import STYLEGAN_FILTER
from sgtriton.generator import Generator

#: Class defaults of the two NVlabs flavours, used only where a pickle stores no value.
FLAVOUR_DEFAULTS: dict[str, dict[str, Any]] = {
    "ada": {"w_avg_beta": 0.995, "num_fp16_res": 0, "conv_clamp": None, "channel_base": 32768,
            "channel_max": 512, "architecture": "skip", "lr_multiplier": 0.01},
    "sg3": {"w_avg_beta": 0.998, "num_fp16_res": 4, "conv_clamp": 256, "channel_base": 32768,
            "channel_max": 512, "architecture": "skip", "lr_multiplier": 0.01},
}
_GENERATOR_KWARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                     "synthesis_kwargs")
_STYLEGAN3_CLASSES = ("SynthesisInput",)


def is_nvlabs_snapshot(data: Any) -> bool:
    """Whether unpickled ``data`` looks like an NVlabs PyTorch snapshot (a dict of records)."""
    return isinstance(data, dict) and any(isinstance(v, PersistentRecord) for v in data.values())


def generator_from_nvlabs(data: Any, *, source: str, backend: str | None = "auto",
                          device: torch.device | str | None = None) -> Generator:
    """The ``G_ema`` of an unpickled NVlabs snapshot as an sgtriton generator."""
    record = g_ema_record(data, source)
    refuse_stylegan3(record, source)
    tensors = collect_tensors(record, source)
    config = recover_config(record, tensors, source)
    return build_loaded_generator(config, tensors, source=source, backend=backend, device=device)


def g_ema_record(data: Any, source: str) -> PersistentRecord:
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: expected a network snapshot dict with 'G_ema', got {type(data).__name__}")
    if "G_ema" not in data:
        keys = sorted(map(str, data))
        raise CheckpointError(f"{source}: no 'G_ema' in this network pickle (it holds {keys}); sgtriton loads "
                              f"the exponential-moving-average generator of a training snapshot")
    record = data["G_ema"]
    if not isinstance(record, PersistentRecord):
        raise CheckpointError(f"{source}: 'G_ema' is a {type(record).__name__}, not a persistent NVlabs module")
    if record.class_name != "Generator":
        raise CheckpointError(f"{source}: 'G_ema' is a {record.class_name!r}, expected 'Generator'")
    return record


def refuse_stylegan3(record: PersistentRecord, source: str) -> None:
    synthesis = record.modules.get("synthesis")
    if not isinstance(synthesis, PersistentRecord):
        return
    children = synthesis.modules
    alias_free = any(isinstance(c, PersistentRecord) and c.class_name in _STYLEGAN3_CLASSES for c in children.values())
    if alias_free or "input" in children or synthesis.attr("layer_names") is not None:
        raise CheckpointError(f"{source}: this is a StyleGAN3 (alias-free) generator "
                              f"(synthesis layers {list(children)[:4]}...); sgtriton implements StyleGAN1/2 "
                              f"generators only, not StyleGAN3")


def collect_tensors(record: PersistentRecord, source: str, prefix: str = "",
                    seen: set[int] | None = None) -> dict[str, torch.Tensor]:
    """State-dict names -> tensors, walking records like ``nn.Module.state_dict`` does.

    A module reached twice is refused: NVlabs generators share none, and a file that repeats one
    at every level would otherwise cost exponential time to walk.
    """
    seen = set() if seen is None else seen
    if id(record) in seen:
        raise CheckpointError(f"{source}: module {prefix.rstrip('.') or 'G_ema'} appears twice in G_ema's module tree")
    seen.add(id(record))
    tensors: dict[str, torch.Tensor] = {}
    skip = record.non_persistent_buffers
    named = [*record.parameters.items(), *((k, v) for k, v in record.buffers.items() if k not in skip)]
    for name, value in named:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {prefix}{name} is a {type(value).__name__}, expected a tensor")
        tensors[prefix + name] = value
    for name, child in record.modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise CheckpointError(f"{source}: module {prefix}{name} is a {type(child).__name__}, "
                                  f"not a persistent NVlabs module")
        tensors.update(collect_tensors(child, source, f"{prefix}{name}.", seen))
    return tensors


def _child(record: PersistentRecord, name: str, path: str, source: str) -> PersistentRecord:
    child = record.modules.get(name)
    if not isinstance(child, PersistentRecord):
        raise CheckpointError(f"{source}: G_ema has no module {path}{name}")
    return child


def _int_attr(record: PersistentRecord, name: str, source: str) -> int:
    value = record.attr(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{source}: G_ema.{name}={quote(value)}, expected an int")
    return value


def _number(value: Any, name: str, source: str) -> float | None:
    """A stored numeric attribute (Python or numpy number; ``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CheckpointError(f"{source}: {name}={quote(value)} ({type(value).__name__}), expected a number")
    try:
        return float(value)
    except OverflowError as exc:
        raise CheckpointError(f"{source}: {name}={quote(value)} is too large for a number") from exc


def _kwargs(value: Any, name: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise CheckpointError(f"{source}: G_ema {name} is a {type(value).__name__}, expected a dict of keyword "
                              f"arguments")
    return dict(value)


def recover_config(record: PersistentRecord, tensors: Mapping[str, torch.Tensor], source: str) -> GeneratorConfig:
    """The :class:`~sgtriton.config.GeneratorConfig` of an NVlabs ``G_ema`` record."""
    init_kwargs = record.init_kwargs
    flavour = "ada" if "synthesis_kwargs" in init_kwargs else "sg3"
    defaults = FLAVOUR_DEFAULTS[flavour]
    if flavour == "ada":
        syn_kwargs = _kwargs(init_kwargs.get("synthesis_kwargs"), "_init_kwargs.synthesis_kwargs", source)
    else:
        syn_kwargs = {k: v for k, v in init_kwargs.items() if k not in _GENERATOR_KWARGS}
    map_kwargs = _kwargs(init_kwargs.get("mapping_kwargs"), "_init_kwargs.mapping_kwargs", source)

    def hint(kwargs: Mapping[str, Any], key: str) -> Any:
        return kwargs.get(key, defaults[key])

    dims = {k: _int_attr(record, k, source) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
    resolution = dims["img_resolution"]
    if not 4 <= resolution <= MAX_RESOLUTION or resolution & (resolution - 1):
        raise CheckpointError(f"{source}: G_ema.img_resolution={quote(resolution)}, expected a power of two from 4 "
                              f"to {MAX_RESOLUTION}")
    synthesis = _child(record, "synthesis", "", source)
    mapping = _child(record, "mapping", "", source)
    resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
    blocks = {r: _child(synthesis, f"b{r}", "synthesis.", source) for r in resolutions}
    layers = [child for block in blocks.values() for name, child in block.modules.items()
              if name in ("conv0", "conv1") and isinstance(child, PersistentRecord)]
    torgbs = [b.modules["torgb"] for b in blocks.values() if isinstance(b.modules.get("torgb"), PersistentRecord)]

    for layer in layers:
        if layer.attr("activation", "lrelu") != "lrelu":
            raise CheckpointError(f"{source}: a synthesis layer uses activation {layer.attr('activation')!r}; "
                                  f"sgtriton implements 'lrelu' only")
    architecture = single_value((b.attr("architecture", hint(syn_kwargs, "architecture")) for b in blocks.values()),
                                "architecture", source)
    use_noise = single_value((bool(layer.attr("use_noise", True)) for layer in layers), "use_noise", source)
    conv_clamp = single_value((_number(m.attr("conv_clamp", hint(syn_kwargs, "conv_clamp")), "conv_clamp", source)
                               for m in layers + torgbs), "conv_clamp", source)

    observed = {}
    for r in resolutions:
        key = f"synthesis.b{r}.conv1.weight"
        if key not in tensors:
            raise CheckpointError(f"{source}: G_ema has no tensor {key}")
        observed[r] = dim(tensors[key], 0, key, source, ndim=4)
    channel_base, channel_max = channel_layout(observed, hint(syn_kwargs, "channel_base"),
                                               hint(syn_kwargs, "channel_max"), source)
    num_fp16_res = fp16_layout({r: bool(b.attr("use_fp16", False)) for r, b in blocks.items()},
                               hint(syn_kwargs, "num_fp16_res"), resolution, source)
    resample_filter = syn_kwargs.get("resample_filter", STYLEGAN_FILTER)  # the config checks its type

    fcs = sorted((int(name[2:]), child) for name, child in mapping.modules.items()
                 if name.startswith("fc") and name[2:].isdigit() and len(name) < 9
                 and isinstance(child, PersistentRecord))
    if not fcs or [i for i, _ in fcs] != list(range(len(fcs))):
        raise CheckpointError(f"{source}: G_ema.mapping has no consecutive fc0, fc1, ... layers")
    for _, fc in fcs:
        if fc.attr("activation", "lrelu") != "lrelu":
            raise CheckpointError(f"{source}: a mapping layer uses activation {fc.attr('activation')!r}; "
                                  f"sgtriton implements 'lrelu' only")
    lr_multiplier = fcs[0][1].attr("bias_gain", map_kwargs.get("lr_multiplier", defaults["lr_multiplier"]))
    w_avg_beta = mapping.attr("w_avg_beta", map_kwargs.get("w_avg_beta", defaults["w_avg_beta"]))
    w_dim = dims["w_dim"]
    embed = tensors.get("mapping.embed.weight")
    embed_features = dim(embed, 0, "mapping.embed.weight", source, 2) if dims["c_dim"] and embed is not None else None
    fc0 = tensors.get("mapping.fc0.weight")
    if fc0 is None:
        raise CheckpointError(f"{source}: G_ema has no tensor mapping.fc0.weight")
    layer_features = dim(fc0, 0, "mapping.fc0.weight", source, 2) if len(fcs) > 1 else None

    return make_checked_config(
        source, None, block="moddemod", **dims,
        mapping_kwargs={
            "num_layers": len(fcs),
            "embed_features": None if embed_features == w_dim else embed_features,
            "layer_features": None if layer_features == w_dim else layer_features,
            "lr_multiplier": _number(lr_multiplier, "mapping.fc0.bias_gain", source),
            "w_avg_beta": _number(w_avg_beta, "mapping.w_avg_beta", source),
        },
        synthesis_kwargs={
            "channel_base": channel_base, "channel_max": channel_max, "num_fp16_res": num_fp16_res,
            "conv_clamp": conv_clamp, "architecture": architecture, "use_noise": use_noise,
            "resample_filter": resample_filter,
        },
    )
