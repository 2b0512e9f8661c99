"""NVlabs TensorFlow pickles -- StyleGAN1 and StyleGAN2 (configs A-F, StyleGAN2-ADA-TF) -- without TF.

The file is a pickled ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` objects, read through the
allow-list as inert :class:`~sgtriton.checkpoints.safe_pickle.TFNetworkRecord` s (their
``build_module_src`` is never executed). ``Gs`` holds ``dlatent_avg`` / ``lod`` and two components,
``mapping`` and ``synthesis``, each with ``variables`` relative to itself; flattened they read
``mapping/Dense0/weight``, ``synthesis/4x4/Conv/weight``, ``dlatent_avg`` ...

Which generator it is comes from the variables, not from the build-function names:

* ``*/StyleMod/weight``   -> StyleGAN1 (``networks_stylegan.G_synthesis``, also StyleGAN2 config A):
  sgtriton's ``adain`` block, ``stylegan1`` mapping, truncation psi 0.7 / cutoff 8 by default;
* ``*/mod_weight``        -> StyleGAN2 (``moddemod``); ``ToRGB_lod*`` = progressive growing
  (configs B-D, ``G_synthesis_stylegan_revised``), architecture 'orig', ``lod`` must be 0;
  ``{r}x{r}/Skip`` -> 'resnet'; a ToRGB in every block -> 'skip'; else 'orig'.

Layouts: TF dense ``[in, out]`` -> ``[out, in]``; TF conv ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``.
StyleGAN2 ``Conv0_up`` / ``Skip`` weights are also flipped in H and W (TF's up-conv runs a true
convolution), ``mod_bias`` gets its run-time +1, noise inputs ``[1, 1, r, r]`` become ``[r, r]``.
StyleGAN1 keeps its StyleMod bias as stored (the +1 is applied at run time there too) and its
fused up-conv needs no flip. Every variable must be used, except unused progressive ToRGBs and
``lod``: anything else means a variant sgtriton does not implement, and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sgtriton.checkpoints.assemble import build_loaded_generator, channel_layout, make_checked_config
from sgtriton.checkpoints.errors import CheckpointError, quote
from sgtriton.checkpoints.safe_pickle import TFNetworkRecord
from sgtriton.config import GeneratorConfig
from sgtriton.filters import STYLEGAN_FILTER
from sgtriton.generator import Generator

#: Static kwargs that only choose run-time behaviour (or are checked against shapes).
_IGNORED_KWARGS = {
    "truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val", "dlatent_avg_beta",
    "w_avg_beta", "style_mixing_prob", "structure", "randomize_noise", "fused_modconv", "dtype",
    "synthesis_func", "mapping_func", "latent_size", "label_size", "dlatent_size", "resolution", "num_channels",
    "mapping_layers", "mapping_fmaps", "label_fmaps", "fmap_base", "fmap_max", "fmap_min", "mapping_lrmul",
    "num_fp16_res", "conv_clamp", "architecture", "use_noise", "is_template_graph", "force_clean_graph",
    "conditioning", "fused_scale", "resample_kernel", "blur_filter", "mapping_nonlinearity", "nonlinearity",
    "normalize_latents", "fmap_decay", "use_styles", "const_input_layer", "use_wscale", "use_pixel_norm",
    "use_instance_norm", "dlatent_broadcast", "num_layers",
}
#: Static kwargs that change the network: only these values are implemented.
_REQUIRED_VALUES: dict[str, tuple[Any, ...]] = {
    "mapping_nonlinearity": ("lrelu",), "nonlinearity": ("lrelu",), "normalize_latents": (True,),
    "fmap_decay": (1, 1.0), "use_styles": (True,), "const_input_layer": (True,), "use_wscale": (True,),
    "use_pixel_norm": (False,), "use_instance_norm": (True,), "fused_scale": ("auto",),
    "blur_filter": ([1, 2, 1], (1, 2, 1)), "dtype": ("float32",),
}


def is_tensorflow_pickle(data: Any) -> bool:
    items = data if isinstance(data, (tuple, list)) else (data,)
    return any(isinstance(item, TFNetworkRecord) for item in items)


class _Variables:
    """Flattened TF variables with use tracking, so leftovers can be refused."""

    def __init__(self, gs: TFNetworkRecord, source: str) -> None:
        self.source = source
        self.values: dict[str, Any] = {}
        self.used: set[str] = set()

        seen: set[int] = set()

        def add(prefix: str, net: TFNetworkRecord) -> None:
            if id(net) in seen:
                raise CheckpointError(f"{source}: TensorFlow network {net.name!r} appears twice among Gs's components")
            seen.add(id(net))
            for name, value in net.variables.items():
                self.values[prefix + name] = value
            for name, component in net.components.items():
                if not isinstance(component, TFNetworkRecord):
                    raise CheckpointError(f"{source}: component {prefix}{name} is a {type(component).__name__}")
                add(f"{prefix}{name}/", component)

        add("", gs)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def names(self, pattern: str) -> list[re.Match[str]]:
        return [m for name in self.values if (m := re.fullmatch(pattern, name))]

    def take(self, name: str, transform: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> torch.Tensor:
        if name not in self.values:
            raise CheckpointError(f"{self.source}: the TensorFlow network has no variable {name!r}")
        self.used.add(name)
        try:
            value = self.values[name]
            if not isinstance(value, (np.ndarray, np.generic)):
                raise TypeError(f"a {type(value).__name__}, not a numpy array")
            array = np.asarray(value, dtype=np.float32)
            return torch.from_numpy(np.array(transform(array), dtype=np.float32, order="C"))
        except (TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"{self.source}: variable {name!r} (shape "
                                  f"{getattr(self.values[name], 'shape', '?')}) cannot be converted: {exc}") from exc

    def shape(self, name: str, ndim: int | None = None) -> tuple[int, ...]:
        if name not in self.values:
            raise CheckpointError(f"{self.source}: the TensorFlow network has no variable {name!r}")
        value = self.values[name]
        shape = tuple(value.shape) if isinstance(value, (np.ndarray, np.generic)) else None
        if shape is None or (ndim is not None and len(shape) != ndim):
            raise CheckpointError(f"{self.source}: variable {name!r} has shape {list(shape or [])} "
                                  f"({type(value).__name__}), expected a {ndim}-D array")
        return shape

    def scalar(self, name: str) -> float:
        self.used.add(name)
        value = self.values[name]
        if not isinstance(value, (np.ndarray, np.generic, int, float)) or np.size(value) != 1:
            raise CheckpointError(f"{self.source}: variable {name!r} should hold one number, got "
                                  f"{type(value).__name__} of shape {list(np.shape(value))}")
        return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])

    def refuse_leftovers(self, ignorable: Callable[[str], bool]) -> None:
        left = sorted(n for n in self.values if n not in self.used and not ignorable(n))
        if left:
            raise CheckpointError(f"{self.source}: TensorFlow variables that sgtriton's generator has no place for "
                                  f"(a variant it does not implement): {left[:8]}")


def _kw_number(kwargs: dict[str, Any], key: str, default: Any, source: str) -> Any:
    """A numeric static kwarg (``None`` kept), refused by name when it is anything else."""
    value = kwargs.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CheckpointError(f"{source}: TensorFlow kwarg {key}={quote(value)} ({type(value).__name__}), expected "
                              f"a number")
    return value.item() if isinstance(value, np.generic) else value


def _dense(a: np.ndarray) -> np.ndarray:
    return a.T


def _conv(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 2, 0, 1)


def _flipped_conv(a: np.ndarray) -> np.ndarray:
    return a[::-1, ::-1].transpose(3, 2, 0, 1)


def _noise(a: np.ndarray) -> np.ndarray:
    return a[0, 0]


def _plus_one(a: np.ndarray) -> np.ndarray:
    return a + 1


def _pick_gs(data: Any, source: str) -> TFNetworkRecord:
    items = data if isinstance(data, (tuple, list)) else (data,)
    nets = [item for item in items if isinstance(item, TFNetworkRecord)]
    named = [net for net in nets if net.name == "Gs"]
    gs = named[-1] if named else (nets[-1] if nets else None)
    if gs is None:
        raise CheckpointError(f"{source}: no TensorFlow network in this pickle")
    missing = [c for c in ("mapping", "synthesis") if c not in gs.components]
    if missing:
        raise CheckpointError(f"{source}: TensorFlow network {gs.name!r} has no {missing} component(s); expected "
                              f"the (G, D, Gs) tuple of a StyleGAN training run")
    return gs


def _check_kwargs(kwargs: dict[str, Any], source: str) -> None:
    unknown = sorted(set(kwargs) - _IGNORED_KWARGS)
    if unknown:
        raise CheckpointError(f"{source}: unknown TensorFlow network kwarg(s) {unknown}; refusing to guess "
                              f"what they change")
    if "resample_kernel" in kwargs and kwargs["resample_kernel"] is None:
        raise CheckpointError(f"{source}: TensorFlow kwarg resample_kernel=None (no resampling filter) is not "
                              f"implemented")
    for name, allowed in _REQUIRED_VALUES.items():
        if name in kwargs and kwargs[name] not in allowed:
            raise CheckpointError(f"{source}: TensorFlow kwarg {name}={kwargs[name]!r} is not implemented "
                                  f"(sgtriton supports {allowed[0]!r})")


def generator_from_tensorflow(data: Any, *, source: str, backend: str | None = "auto",
                              device: torch.device | str | None = None) -> Generator:
    """``Gs`` of an unpickled TF StyleGAN1/StyleGAN2 pickle as an sgtriton generator."""
    gs = _pick_gs(data, source)
    kwargs = {**gs.components["synthesis"].static_kwargs, **gs.static_kwargs}
    kwargs.pop("dlatent_broadcast", None)
    _check_kwargs(kwargs, source)
    variables = _Variables(gs, source)
    stylegan1 = bool(variables.names(r"synthesis/.*StyleMod/weight"))
    reader = _stylegan1 if stylegan1 else _stylegan2
    config, tensors, ignorable = reader(variables, kwargs, source)
    variables.refuse_leftovers(ignorable)
    return build_loaded_generator(config, tensors, source=source, backend=backend, device=device)


def _resolutions(variables: _Variables, source: str) -> list[int]:
    found = sorted({int(m.group(1)) for m in variables.names(r"synthesis/(\d{1,6})x\1/.*")})
    if not found or found[0] != 4 or found != [2**i for i in range(2, len(found) + 2)]:
        raise CheckpointError(f"{source}: synthesis blocks {found} are not 4x4, 8x8, ... consecutively")
    return found


def _check_lod(variables: _Variables, source: str) -> None:
    for name in ("lod", "synthesis/lod"):
        if name in variables and variables.scalar(name) != 0:
            raise CheckpointError(f"{source}: {name}={variables.scalar(name)}: a progressive-growing snapshot taken "
                                  f"mid-transition; only finished networks (lod 0) can be loaded")


def _mapping(variables: _Variables, kwargs: dict[str, Any], tensors: dict[str, torch.Tensor],
             label_var: str | None) -> dict[str, Any]:
    """Mapping tensors and dims; ``label_var`` is the TF label layer's scope, when any."""
    layers = sorted(int(m.group(1)) for m in variables.names(r"mapping/Dense(\d{1,6})/weight"))
    if layers != list(range(len(layers))) or not layers:
        raise CheckpointError(f"{variables.source}: mapping layers {layers} are not Dense0, Dense1, ...")
    for i in layers:
        tensors[f"mapping.fc{i}.weight"] = variables.take(f"mapping/Dense{i}/weight", _dense)
        tensors[f"mapping.fc{i}.bias"] = variables.take(f"mapping/Dense{i}/bias")
    in_features = variables.shape("mapping/Dense0/weight", 2)[0]
    w_dim = variables.shape(f"mapping/Dense{layers[-1]}/weight", 2)[1]
    c_dim = embed = 0
    if label_var is not None:
        c_dim, embed = variables.shape(f"mapping/{label_var}/weight", 2)
        tensors["mapping.embed.weight"] = variables.take(f"mapping/{label_var}/weight", _dense)
        if f"mapping/{label_var}/bias" in variables:
            tensors["mapping.embed.bias"] = variables.take(f"mapping/{label_var}/bias")
    if "dlatent_avg" in variables:
        tensors["mapping.w_avg"] = variables.take("dlatent_avg")
    layer_features = variables.shape("mapping/Dense0/weight", 2)[1] if len(layers) > 1 else None
    mapping_kwargs = {
        "num_layers": len(layers),
        "layer_features": None if layer_features == w_dim else layer_features,
        "lr_multiplier": _kw_number(kwargs, "mapping_lrmul", 0.01, variables.source),
        "w_avg_beta": 0.995 if "dlatent_avg" in variables else None,
    }
    return {"z_dim": in_features - embed, "c_dim": c_dim, "w_dim": w_dim, "embed": embed,
            "mapping_kwargs": mapping_kwargs}


def _stylegan2(variables: _Variables, kwargs: dict[str, Any], source: str):
    tensors: dict[str, torch.Tensor] = {}
    if variables.names(r"mapping/LabelConcat/.*"):
        raise CheckpointError(f"{source}: conditional TensorFlow StyleGAN2 networks (LabelConcat) are not supported: "
                              f"their mapping normalises z and the label projection jointly with StyleGAN2 gains, "
                              f"which no sgtriton mapping flavour implements (NVlabs legacy.py refuses them too)")
    label = "LabelEmbed" if variables.names(r"mapping/LabelEmbed/weight") else None
    dims = _mapping(variables, kwargs, tensors, label)
    embed = dims.pop("embed")
    if label is not None and embed != dims["w_dim"]:
        dims["mapping_kwargs"]["embed_features"] = embed
    resolutions = _resolutions(variables, source)
    top = resolutions[-1]
    progressive = bool(variables.names(r"synthesis/ToRGB_lod\d+/.*"))
    if progressive:
        _check_lod(variables, source)
        architecture = "orig"
    elif variables.names(r"synthesis/\d+x\d+/Skip/weight"):
        architecture = "resnet"
    elif all(f"synthesis/{r}x{r}/ToRGB/weight" in variables for r in resolutions):
        architecture = "skip"
    else:
        architecture = "orig"
    use_noise = "synthesis/4x4/Conv/noise_strength" in variables

    def modconv(scope: str, dst: str, noise: int | None, weight: Callable = _conv) -> None:
        tensors[f"{dst}.weight"] = variables.take(f"{scope}/weight", weight)
        tensors[f"{dst}.bias"] = variables.take(f"{scope}/bias")
        tensors[f"{dst}.affine.weight"] = variables.take(f"{scope}/mod_weight", _dense)
        tensors[f"{dst}.affine.bias"] = variables.take(f"{scope}/mod_bias", _plus_one)
        if noise is not None and use_noise:
            tensors[f"{dst}.noise_strength"] = variables.take(f"{scope}/noise_strength")
            tensors[f"{dst}.noise_const"] = variables.take(f"synthesis/noise{noise}", _noise)

    tensors["synthesis.b4.const"] = variables.take("synthesis/4x4/Const/const", lambda a: a[0])
    modconv("synthesis/4x4/Conv", "synthesis.b4.conv1", 0)
    for r in resolutions[1:]:
        k = r.bit_length() - 1
        modconv(f"synthesis/{r}x{r}/Conv0_up", f"synthesis.b{r}.conv0", 2 * k - 5, _flipped_conv)
        modconv(f"synthesis/{r}x{r}/Conv1", f"synthesis.b{r}.conv1", 2 * k - 4)
        if architecture == "resnet":
            tensors[f"synthesis.b{r}.skip.weight"] = variables.take(f"synthesis/{r}x{r}/Skip/weight", _flipped_conv)
    for r in resolutions if architecture == "skip" else [top]:
        scope = "synthesis/ToRGB_lod0" if progressive else f"synthesis/{r}x{r}/ToRGB"
        modconv(scope, f"synthesis.b{r}.torgb", None)

    observed = {r: int(tensors[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in resolutions}
    channel_base, channel_max = channel_layout(observed, 2 * _kw_number(kwargs, "fmap_base", 16384, source),
                                               _kw_number(kwargs, "fmap_max", 512, source), source)
    config = make_checked_config(
        source, None, block="moddemod", img_resolution=top,
        img_channels=int(tensors[f"synthesis.b{top}.torgb.weight"].shape[0]), **dims,
        synthesis_kwargs={
            "channel_base": channel_base, "channel_max": channel_max, "architecture": architecture,
            "num_fp16_res": _kw_number(kwargs, "num_fp16_res", 0, source) or 0,
            "conv_clamp": _kw_number(kwargs, "conv_clamp", None, source),
            "use_noise": use_noise, "resample_filter": kwargs.get("resample_kernel") or STYLEGAN_FILTER,
        },
    )

    def ignorable(name: str) -> bool:
        return name == "lod" or (progressive and (name == "synthesis/lod" or name.startswith("synthesis/ToRGB_lod")))

    return config, tensors, ignorable


def _stylegan1(variables: _Variables, kwargs: dict[str, Any], source: str):
    tensors: dict[str, torch.Tensor] = {}
    label = "LabelConcat" if variables.names(r"mapping/LabelConcat/weight") else None
    dims = _mapping(variables, kwargs, tensors, label)
    dims.pop("embed")
    _check_lod(variables, source)
    resolutions = _resolutions(variables, source)
    top = resolutions[-1]
    use_noise = "synthesis/noise0" in variables

    def epilogue(scope: str, dst: str, layer: int) -> None:
        tensors[f"{dst}.bias"] = variables.take(f"{scope}/bias")
        tensors[f"{dst}.affine.weight"] = variables.take(f"{scope}/StyleMod/weight", _dense)
        tensors[f"{dst}.affine.bias"] = variables.take(f"{scope}/StyleMod/bias")
        if use_noise:
            tensors[f"{dst}.noise_weight"] = variables.take(f"{scope}/Noise/weight")
            tensors[f"{dst}.noise_const"] = variables.take(f"synthesis/noise{layer}", _noise)

    tensors["synthesis.b4.const"] = variables.take("synthesis/4x4/Const/const", lambda a: a[0])
    epilogue("synthesis/4x4/Const", "synthesis.b4.input", 0)
    tensors["synthesis.b4.conv1.weight"] = variables.take("synthesis/4x4/Conv/weight", _conv)
    epilogue("synthesis/4x4/Conv", "synthesis.b4.conv1", 1)
    for r in resolutions[1:]:
        k = r.bit_length() - 1
        for scope, dst, layer in ((f"{r}x{r}/Conv0_up", "conv0", 2 * k - 4), (f"{r}x{r}/Conv1", "conv1", 2 * k - 3)):
            tensors[f"synthesis.b{r}.{dst}.weight"] = variables.take(f"synthesis/{scope}/weight", _conv)
            epilogue(f"synthesis/{scope}", f"synthesis.b{r}.{dst}", layer)
    tensors[f"synthesis.b{top}.torgb.weight"] = variables.take("synthesis/ToRGB_lod0/weight", _conv)
    tensors[f"synthesis.b{top}.torgb.bias"] = variables.take("synthesis/ToRGB_lod0/bias")

    observed = {r: int(tensors[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in resolutions}
    channel_base, channel_max = channel_layout(observed, 2 * _kw_number(kwargs, "fmap_base", 8192, source),
                                               _kw_number(kwargs, "fmap_max", 512, source), source)
    # TF G_style truncates only when both psi and cutoff are set.
    psi = _kw_number(kwargs, "truncation_psi", 0.7, source)
    cutoff = _kw_number(kwargs, "truncation_cutoff", 8, source)
    if psi is None or cutoff is None or cutoff <= 0:
        psi, cutoff = 1.0, None
    config: GeneratorConfig = make_checked_config(
        source, "stylegan1", img_resolution=top,
        img_channels=int(tensors[f"synthesis.b{top}.torgb.weight"].shape[0]), **dims,
        synthesis_kwargs={"channel_base": channel_base, "channel_max": channel_max, "use_noise": use_noise},
        truncation_psi=psi, truncation_cutoff=cutoff,
    )

    def ignorable(name: str) -> bool:
        return name in ("lod", "synthesis/lod") or re.fullmatch(r"synthesis/ToRGB_lod[1-9]\d*/.*", name) is not None

    return config, tensors, ignorable
