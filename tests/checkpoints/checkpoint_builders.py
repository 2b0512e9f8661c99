"""Fixture writers: an sgtriton generator saved in each documented third-party format.

Written from the format descriptions (``reference/stylegan_spec.md`` sections 4, 5, 7) with our own
stand-in classes; no third-party code is involved. Pickles that must name third-party globals
(``torch_utils.persistence._reconstruct_persistent_obj``, ``dnnlib.tflib.network.Network``,
``dnnlib.util.EasyDict``) get them from dummy modules that exist in ``sys.modules`` only while
the pickle is being written.
"""

from __future__ import annotations

import contextlib
import io
import math
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

import sgtriton

SMALL = {"img_resolution": 16, "z_dim": 12, "w_dim": 10,
         "mapping_kwargs": {"num_layers": 2},
         "synthesis_kwargs": {"channel_base": 128, "channel_max": 16}}


def small_generator(preset: str | None = "stylegan2-f", seed: int = 0, **overrides: Any) -> sgtriton.Generator:
    """A small generator with every parameter and buffer randomised (zero-initialised ones too)."""
    kwargs = {**SMALL, **overrides}
    for key in ("mapping_kwargs", "synthesis_kwargs"):
        kwargs[key] = {**SMALL[key], **overrides.get(key, {})}
    G = sgtriton.build_generator(preset, seed=seed, backend="reference", **kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            scale = 0.3 if name.endswith("bias") or "noise" in name else 1.0
            p.copy_(torch.randn(p.shape, generator=gen) * scale + (1.0 if name.endswith("affine.bias") else 0.0))
        for name, b in G.named_buffers():
            if name.endswith(("noise_const", "w_avg")):
                b.copy_(torch.randn(b.shape, generator=gen))
    return G


@contextlib.contextmanager
def fake_modules(**objects: Any) -> Iterator[None]:
    """Make ``objects`` (keys ``'pkg.mod:Name'``) importable while pickling, then remove them."""
    created: list[str] = []
    try:
        for spec, obj in objects.items():
            module_name, name = spec.split(":")
            parts = module_name.split(".")
            for i in range(1, len(parts) + 1):
                mod = ".".join(parts[:i])
                if mod not in sys.modules:
                    sys.modules[mod] = types.ModuleType(mod)
                    created.append(mod)
            obj.__module__ = module_name
            obj.__qualname__ = name
            obj.__name__ = name
            setattr(sys.modules[module_name], name, obj)
        yield
    finally:
        for mod in reversed(created):
            sys.modules.pop(mod, None)


# ---------------------------------------------------------------------------------------------
# NVlabs PyTorch (torch_utils.persistence)


def _reconstruct_persistent_obj(meta):  # the stand-in global; never called in tests
    raise AssertionError("fixture stand-in must not run")


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``."""


class PersistentModule:
    """Pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` like NVlabs modules."""

    def __init__(self, class_name: str, state: dict[str, Any], module_src: str) -> None:
        self.class_name = class_name
        self.state = state
        self.module_src = module_src

    def __reduce__(self):
        meta = {"type": "class", "version": 6, "module_src": self.module_src, "class_name": self.class_name,
                "state": self.state}
        return (_reconstruct_persistent_obj, (meta,))


NVLABS_CLASSES = {"Generator": "Generator", "SynthesisNetwork": "SynthesisNetwork", "MappingNetwork": "MappingNetwork",
                  "SynthesisBlock": "SynthesisBlock", "ModulatedLayer": "SynthesisLayer",
                  "ModulatedToRGB": "ToRGBLayer", "FullyConnectedLayer": "FullyConnectedLayer",
                  "SkipConv": "Conv2dLayer"}
MODULE_SRC = "# training/networks.py stand-in\nimport os\nos.system('echo this must never run')\n"


def _nvlabs_attrs(module: torch.nn.Module, G: sgtriton.Generator, flavour: str) -> dict[str, Any]:
    config = G.config
    kind = type(module).__name__
    f64 = np.float64
    if kind == "Generator":
        dims = {k: getattr(G, k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
        syn = config.synthesis
        syn_kwargs = EasyDict(channel_base=syn.channel_base, channel_max=syn.channel_max,
                              num_fp16_res=syn.num_fp16_res, conv_clamp=syn.conv_clamp,
                              architecture=syn.architecture)
        map_kwargs = EasyDict(num_layers=config.mapping.num_layers)
        kwargs = ({**dims, "mapping_kwargs": map_kwargs, "synthesis_kwargs": syn_kwargs} if flavour == "ada"
                  else {**dims, "mapping_kwargs": map_kwargs, **syn_kwargs})
        return {**dims, "num_ws": G.num_ws, "_init_args": (), "_init_kwargs": EasyDict(kwargs)}
    if kind == "SynthesisNetwork":
        extra = {"num_fp16_res": config.synthesis.num_fp16_res} if flavour == "sg3" else {}
        return {"w_dim": G.w_dim, "img_resolution": G.img_resolution, "img_resolution_log2": config.resolution_log2,
                "img_channels": G.img_channels, "block_resolutions": config.block_resolutions,
                "num_ws": G.num_ws, **extra}
    if kind == "MappingNetwork":
        return {"z_dim": G.z_dim, "c_dim": G.c_dim, "w_dim": G.w_dim, "num_ws": G.num_ws,
                "num_layers": config.mapping.num_layers, "w_avg_beta": config.mapping.w_avg_beta}
    if kind == "SynthesisBlock":
        extra = {"fused_modconv_default": True} if flavour == "sg3" else {}
        return {"in_channels": module.in_channels, "w_dim": G.w_dim, "resolution": module.resolution,
                "img_channels": G.img_channels, "is_last": module.is_last, "architecture": module.architecture,
                "use_fp16": module.use_fp16, "channels_last": False, "num_conv": module.num_conv,
                "num_torgb": module.num_torgb, **extra}
    if kind == "ModulatedLayer":
        return {"resolution": module.resolution, "up": module.up, "use_noise": module.use_noise,
                "activation": "lrelu", "conv_clamp": module.conv_clamp, "padding": 1, "act_gain": f64(math.sqrt(2))}
    if kind == "ModulatedToRGB":
        return {"conv_clamp": module.conv_clamp, "weight_gain": f64(module.weight_gain)}
    if kind == "FullyConnectedLayer":
        return {"activation": module.activation, "weight_gain": f64(module.weight_gain),
                "bias_gain": module.bias_gain}
    if kind == "SkipConv":
        return {"activation": "linear", "up": 2, "down": 1, "conv_clamp": None, "padding": 0,
                "weight_gain": f64(module.weight_gain), "act_gain": 1.0}
    raise AssertionError(f"no NVlabs stand-in for {kind}")


def nvlabs_record(module: torch.nn.Module, G: sgtriton.Generator, flavour: str = "ada") -> PersistentModule:
    """The persistence record tree NVlabs would pickle for ``module`` (a part of ``G``)."""
    params = OrderedDict((n, torch.nn.Parameter(p.detach().clone(), requires_grad=False))
                         for n, p in module.named_parameters(recurse=False))
    buffers = OrderedDict((n, b.detach().clone()) for n, b in module.named_buffers(recurse=False))
    children = OrderedDict((n, nvlabs_record(c, G, flavour)) for n, c in module.named_children())
    state = {"training": False, "_parameters": params, "_buffers": buffers,
             "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
             "_backward_hooks": OrderedDict(), "_forward_hooks": OrderedDict(),
             "_forward_pre_hooks": OrderedDict(), "_state_dict_hooks": OrderedDict(),
             "_load_state_dict_pre_hooks": OrderedDict(), "_modules": children,
             **_nvlabs_attrs(module, G, flavour)}
    return PersistentModule(NVLABS_CLASSES[type(module).__name__], state, MODULE_SRC)


def nvlabs_pickle(G: sgtriton.Generator, flavour: str = "ada", snapshot: dict[str, Any] | None = None,
                  protocol: int = 4) -> bytes:
    """``G`` as an NVlabs training snapshot: ``{training_set_kwargs, G, D, G_ema, augment_pipe}``."""
    if snapshot is None:
        record = nvlabs_record(G, G, flavour)
        snapshot = {"training_set_kwargs": EasyDict(resolution=G.img_resolution), "G": record,
                    "D": PersistentModule("Discriminator", {"_modules": OrderedDict()}, MODULE_SRC),
                    "G_ema": record, "augment_pipe": None}
    with fake_modules(**{"torch_utils.persistence:_reconstruct_persistent_obj": _reconstruct_persistent_obj,
                         "dnnlib.util:EasyDict": EasyDict}):
        return pickle.dumps(snapshot, protocol=protocol)


# ---------------------------------------------------------------------------------------------
# NVlabs TensorFlow (dnnlib.tflib.network.Network)


class Network:
    """Stand-in for ``dnnlib.tflib.network.Network``: pickles its documented ``__getstate__`` dict."""

    def __init__(self, name: str, variables: dict[str, np.ndarray], components: dict[str, Network] | None = None,
                 static_kwargs: dict[str, Any] | None = None, version: int = 4,
                 build_func_name: str = "G_main", build_module_src: str = MODULE_SRC) -> None:
        self.state = {"version": version, "name": name, "static_kwargs": dict(static_kwargs or {}),
                      "components": dict(components or {}),
                      "build_module_src": build_module_src,
                      "build_func_name": build_func_name, "variables": list(variables.items())}

    def __getstate__(self) -> dict[str, Any]:
        return self.state


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy().astype(np.float32)


def _tf_dense(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(_np(t).T)


def _tf_conv(t: torch.Tensor, flip: bool = False) -> np.ndarray:
    w = _np(t).transpose(2, 3, 1, 0)
    return np.ascontiguousarray(w[::-1, ::-1] if flip else w)


def tf_stylegan2_variables(G: sgtriton.Generator, progressive: bool = False) -> tuple[dict, dict, dict]:
    """(Gs own, mapping, synthesis) variables of a TF StyleGAN2 network equal to ``G``."""
    sd = {k: v for k, v in G.state_dict().items()}
    config = G.config
    mapping: dict[str, np.ndarray] = {}
    if G.c_dim:
        mapping["LabelEmbed/weight"] = _tf_dense(sd["mapping.embed.weight"])
        mapping["LabelEmbed/bias"] = _np(sd["mapping.embed.bias"])
    for i in range(config.mapping.num_layers):
        mapping[f"Dense{i}/weight"] = _tf_dense(sd[f"mapping.fc{i}.weight"])
        mapping[f"Dense{i}/bias"] = _np(sd[f"mapping.fc{i}.bias"])
    syn: dict[str, np.ndarray] = {}
    noise_index = {}

    def modconv(scope: str, src: str, flip: bool = False) -> None:
        syn[f"{scope}/weight"] = _tf_conv(sd[f"{src}.weight"], flip)
        syn[f"{scope}/mod_weight"] = _tf_dense(sd[f"{src}.affine.weight"])
        syn[f"{scope}/mod_bias"] = _np(sd[f"{src}.affine.bias"] - 1)
        if f"{src}.noise_strength" in sd:
            syn[f"{scope}/noise_strength"] = _np(sd[f"{src}.noise_strength"])
            noise_index[src] = sd[f"{src}.noise_const"]
        syn[f"{scope}/bias"] = _np(sd[f"{src}.bias"])

    syn["4x4/Const/const"] = _np(sd["synthesis.b4.const"])[None]
    modconv("4x4/Conv", "synthesis.b4.conv1")
    R = G.img_resolution
    for r in config.block_resolutions:
        if r > 4:
            modconv(f"{r}x{r}/Conv0_up", f"synthesis.b{r}.conv0", flip=True)
            modconv(f"{r}x{r}/Conv1", f"synthesis.b{r}.conv1")
            if f"synthesis.b{r}.skip.weight" in sd:
                syn[f"{r}x{r}/Skip/weight"] = _tf_conv(sd[f"synthesis.b{r}.skip.weight"], flip=True)
        if f"synthesis.b{r}.torgb.weight" in sd:
            modconv("ToRGB_lod0" if progressive else f"{r}x{r}/ToRGB", f"synthesis.b{r}.torgb")
    if progressive:  # unused lower-resolution ToRGBs of progressive growing, plus the lod variable
        rng = np.random.default_rng(0)
        for lod in range(1, config.resolution_log2 - 1):
            c = config.channels(R >> lod)
            syn[f"ToRGB_lod{lod}/weight"] = rng.standard_normal([1, 1, c, G.img_channels]).astype(np.float32)
            syn[f"ToRGB_lod{lod}/mod_weight"] = rng.standard_normal([G.w_dim, c]).astype(np.float32)
            syn[f"ToRGB_lod{lod}/mod_bias"] = np.zeros([c], np.float32)
            syn[f"ToRGB_lod{lod}/bias"] = np.zeros([G.img_channels], np.float32)
        syn["lod"] = np.float32(0)
    layer_order = [name for name in noise_index]
    for i, name in enumerate(layer_order):
        syn[f"noise{i}"] = _np(noise_index[name])[None, None]
    gs = {"lod": np.float32(0), "dlatent_avg": _np(sd["mapping.w_avg"])}
    return gs, mapping, syn


def tf_stylegan1_variables(G: sgtriton.Generator) -> tuple[dict, dict, dict]:
    """(Gs own, mapping, synthesis) variables of a TF StyleGAN1 network equal to ``G``."""
    sd = G.state_dict()
    config = G.config
    mapping: dict[str, np.ndarray] = {}
    if G.c_dim:
        mapping["LabelConcat/weight"] = _tf_dense(sd["mapping.embed.weight"])
    for i in range(config.mapping.num_layers):
        mapping[f"Dense{i}/weight"] = _tf_dense(sd[f"mapping.fc{i}.weight"])
        mapping[f"Dense{i}/bias"] = _np(sd[f"mapping.fc{i}.bias"])
    syn: dict[str, np.ndarray] = {"lod": np.float32(0)}
    layer = 0

    def epilogue(scope: str, src: str) -> None:
        nonlocal layer
        syn[f"{scope}/Noise/weight"] = _np(sd[f"{src}.noise_weight"])
        syn[f"{scope}/bias"] = _np(sd[f"{src}.bias"])
        syn[f"{scope}/StyleMod/weight"] = _tf_dense(sd[f"{src}.affine.weight"])
        syn[f"{scope}/StyleMod/bias"] = _np(sd[f"{src}.affine.bias"])
        syn[f"noise{layer}"] = _np(sd[f"{src}.noise_const"])[None, None]
        layer += 1

    syn["4x4/Const/const"] = _np(sd["synthesis.b4.const"])[None]
    epilogue("4x4/Const", "synthesis.b4.input")
    syn["4x4/Conv/weight"] = _tf_conv(sd["synthesis.b4.conv1.weight"])
    epilogue("4x4/Conv", "synthesis.b4.conv1")
    for r in config.block_resolutions[1:]:
        for scope, attr in (("Conv0_up", "conv0"), ("Conv1", "conv1")):
            syn[f"{r}x{r}/{scope}/weight"] = _tf_conv(sd[f"synthesis.b{r}.{attr}.weight"])
            epilogue(f"{r}x{r}/{scope}", f"synthesis.b{r}.{attr}")
    R = G.img_resolution
    syn["ToRGB_lod0/weight"] = _tf_conv(sd[f"synthesis.b{R}.torgb.weight"])
    syn["ToRGB_lod0/bias"] = _np(sd[f"synthesis.b{R}.torgb.bias"])
    rng = np.random.default_rng(1)
    for lod in range(1, config.resolution_log2 - 1):
        c = config.channels(R >> lod)
        syn[f"ToRGB_lod{lod}/weight"] = rng.standard_normal([1, 1, c, G.img_channels]).astype(np.float32)
        syn[f"ToRGB_lod{lod}/bias"] = np.zeros([G.img_channels], np.float32)
    gs = {"lod": np.float32(0), "dlatent_avg": _np(sd["mapping.w_avg"])}
    return gs, mapping, syn


def tf_pickle(variables: tuple[dict, dict, dict], static_kwargs: dict[str, Any], version: int = 4,
              protocol: int = 4, build_module_src: str = MODULE_SRC) -> bytes:
    """A ``(G, D, Gs)`` TF pickle whose ``Gs`` has the given variables."""
    gs_vars, mapping_vars, syn_vars = variables
    common = {"static_kwargs": static_kwargs, "version": version, "build_module_src": build_module_src}
    components = {"mapping": Network("G_mapping", mapping_vars, build_func_name="G_mapping", **common),
                  "synthesis": Network("G_synthesis", syn_vars, build_func_name="G_synthesis", **common)}
    Gs = Network("Gs", gs_vars, components, **common)
    D = Network("D", {"Output/weight": np.zeros([2, 1], np.float32)}, static_kwargs=static_kwargs, version=version)
    with fake_modules(**{"dnnlib.tflib.network:Network": Network}):
        return pickle.dumps((Gs, D, Gs), protocol=protocol)


# ---------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch


def rosinality_state_dict(G: sgtriton.Generator) -> dict[str, torch.Tensor]:
    """``g_ema.state_dict()`` of a rosinality ``Generator`` equal to ``G`` (spec section 5.3)."""
    sd = G.state_dict()
    out: dict[str, torch.Tensor] = {}
    for i in range(G.config.mapping.num_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    kernel = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 16
    noises = {}

    def styled(dst: str, src: str, noise: int, up: bool) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        if up:
            out[f"{dst}.conv.blur.kernel"] = kernel.clone()
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        noises[noise] = sd[f"{src}.noise_const"][None, None]

    def rgb(dst: str, src: str, up: bool) -> None:
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
        if up:
            out[f"{dst}.upsample.kernel"] = kernel.clone()
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]

    styled("conv1", "synthesis.b4.conv1", 0, False)
    rgb("to_rgb1", "synthesis.b4.torgb", False)
    for k in range(3, G.config.resolution_log2 + 1):
        r = 2**k
        styled(f"convs.{2 * (k - 3)}", f"synthesis.b{r}.conv0", 2 * k - 5, True)
        styled(f"convs.{2 * (k - 3) + 1}", f"synthesis.b{r}.conv1", 2 * k - 4, False)
        rgb(f"to_rgbs.{k - 3}", f"synthesis.b{r}.torgb", True)
    for i in sorted(noises):
        out[f"noises.noise_{i}"] = noises[i]
    return {k: v.clone() for k, v in out.items()}


def torch_save_bytes(obj: Any, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------


def images(G: sgtriton.Generator, seed: int = 0, batch: int = 2, psi: float = 1.0,
           cutoff: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ws, img)`` for a fixed z (and c) with ``noise_mode='const'``."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([batch, G.z_dim], generator=gen)
    c = torch.nn.functional.one_hot(torch.arange(batch) % max(G.c_dim, 1), max(G.c_dim, 1)).float() \
        if G.c_dim else None
    ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
    return ws, G.synthesis(ws, noise_mode="const")
