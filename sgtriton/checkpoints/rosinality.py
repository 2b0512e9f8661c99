"""rosinality/stylegan2-pytorch checkpoints (``.pt``, a ``torch.save`` dict).

``convert_weight.py`` writes ``{"g_ema": state_dict, "latent_avg": [style_dim]}``; ``train.py``
writes ``{"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}`` (``args`` is an
``argparse.Namespace``, read as an inert record). Only ``g_ema`` and ``latent_avg`` are used.

Size, ``n_mlp``, ``style_dim`` and the channel multiplier are inferred from the shapes (and checked
against ``args`` when present). The mapping to NVlabs names is one-to-one, no flips or transposes
(spec section 5.3)::

    style.{i+1}.*                 -> mapping.fc{i}.*
    input.input [1, C, 4, 4]      -> synthesis.b4.const
    conv1 / to_rgb1               -> synthesis.b4.conv1 / synthesis.b4.torgb
    convs.{2(k-3)} / {2(k-3)+1}   -> synthesis.b{2^k}.conv0 / conv1
    to_rgbs.{k-3}                 -> synthesis.b{2^k}.torgb
    noises.noise_{i}              -> the noise_const of the layer that reads w i (i = 0, 2k-5, 2k-4)
    per layer: conv.weight [1, O, I, k, k] -> weight, conv.modulation.* -> affine.*,
               activate.bias -> bias, noise.weight [1] -> noise_strength []; ToRGB bias [1, C, 1, 1]

rosinality's modulated conv folds ``1/sqrt(I k^2)`` into the weight before demodulating, so its
eps acts ``I k^2`` times stronger than NVlabs' -- a relative difference near 1e-8, not a change of
network. Without ``latent_avg`` (training checkpoints), ``w_avg`` is estimated as rosinality's
``mean_latent`` does, from 4096 mapped z (seeded, so loading is deterministic), with a warning.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from sgtriton.checkpoints.assemble import build_loaded_generator, channel_layout, dim, make_checked_config
from sgtriton.checkpoints.errors import CheckpointError
from sgtriton.checkpoints.safe_pickle import NamespaceRecord
from sgtriton.config import MAX_RESOLUTION
from sgtriton.filters import STYLEGAN_FILTER
from sgtriton.generator import Generator
from sgtriton.ops.upfirdn2d import setup_filter

#: rosinality's blur / upsample kernels: ``make_kernel([1, 3, 3, 1]) * factor**2``.
BLUR_KERNEL = setup_filter(STYLEGAN_FILTER) * 4
W_AVG_SAMPLES = 4096
W_AVG_SEED = 0
LR_MLP = 0.01


def is_rosinality_checkpoint(data: Any) -> bool:
    return isinstance(data, dict) and ("g_ema" in data or "style.1.weight" in data)


def _state_dict(data: Any, source: str) -> tuple[Mapping[str, Any], Any, Any]:
    if isinstance(data, dict) and "g_ema" in data:
        state = data["g_ema"]
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{source}: 'g_ema' is a {type(state).__name__}, expected a state dict")
        return state, data.get("latent_avg"), data.get("args")
    if isinstance(data, dict) and "style.1.weight" in data:
        return data, None, None
    raise CheckpointError(f"{source}: no 'g_ema' state dict in this rosinality checkpoint")


def _tensor(state: Mapping[str, Any], key: str, source: str) -> torch.Tensor:
    value = state.get(key)
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{source}: g_ema has no tensor {key!r}")
    return value


def _count(state: Mapping[str, Any], pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.fullmatch(pattern, k))})


def generator_from_rosinality(data: Any, *, source: str, backend: str | None = "auto",
                              device: torch.device | str | None = None) -> Generator:
    """The ``g_ema`` of an unpickled rosinality checkpoint as an sgtriton generator."""
    state, latent_avg, args = _state_dict(data, source)
    n_mlp = _count(state, r"style\.(\d+)\.weight")
    n_rgbs = _count(state, r"to_rgbs\.(\d+)\.conv\.weight")
    if n_mlp == 0 or any(f"style.{i}.weight" not in state for i in range(1, n_mlp + 1)):
        raise CheckpointError(f"{source}: g_ema has no consecutive style.1 ... style.N mapping layers")
    log_size = n_rgbs + 2
    size = 2**log_size
    # rosinality has z_dim == w_dim == style_dim; read each from its own layer anyway.
    if log_size > MAX_RESOLUTION.bit_length() - 1:
        raise CheckpointError(f"{source}: {n_rgbs} to_rgbs layers imply {2**log_size}x{2**log_size} images, more "
                              f"than {MAX_RESOLUTION}x{MAX_RESOLUTION}")

    def shape(key: str, axis: int, ndim: int) -> int:
        return dim(_tensor(state, key, source), axis, key, source, ndim)

    z_dim = shape("style.1.weight", 1, 2)
    hidden = shape("style.1.weight", 0, 2)
    w_dim = shape(f"style.{n_mlp}.weight", 0, 2)
    img_channels = shape("to_rgb1.conv.weight", 1, 5)
    observed = {4: shape("conv1.conv.weight", 1, 5)}
    for k in range(3, log_size + 1):
        observed[2**k] = shape(f"convs.{2 * (k - 3) + 1}.conv.weight", 1, 5)
    channel_base, channel_max = channel_layout(observed, 16384 * 2, 512, source)
    inferred = {"size": size, "n_mlp": n_mlp, "latent": w_dim}
    # The multiplier is defined for rosinality's own layout only, and only visible below the cap.
    if channel_max == 512 and channel_base % 16384 == 0 and min(observed.values()) < channel_max:
        inferred["channel_multiplier"] = channel_base // 16384
    _check_args(args, inferred, source)

    tensors = nvlabs_tensors(state, n_mlp, log_size, source)
    has_avg = isinstance(latent_avg, torch.Tensor)
    if has_avg:
        tensors["mapping.w_avg"] = _reshaped(latent_avg, [-1], "latent_avg", source)
    config = make_checked_config(
        source, None, block="moddemod", z_dim=z_dim, c_dim=0, w_dim=w_dim, img_resolution=size,
        img_channels=img_channels,
        mapping_kwargs={"num_layers": n_mlp, "lr_multiplier": LR_MLP,
                        "layer_features": hidden if n_mlp > 1 and hidden != w_dim else None},
        synthesis_kwargs={"channel_base": channel_base, "channel_max": channel_max, "architecture": "skip"},
    )
    if not has_avg:
        tensors["mapping.w_avg"] = torch.zeros(w_dim)
    G = build_loaded_generator(config, tensors, source=source, backend=backend, device=device)
    if not has_avg:
        warnings.warn(f"{source}: no 'latent_avg' in this rosinality checkpoint; w_avg (used by truncation) is "
                      f"estimated from {W_AVG_SAMPLES} mapped z (seed {W_AVG_SEED}) like rosinality's "
                      f"mean_latent", UserWarning, stacklevel=3)
        estimate_w_avg(G)
    return G


def estimate_w_avg(G: Generator, samples: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED) -> None:
    """Set ``G.mapping.w_avg`` to the mean of ``samples`` mapped z from a private, seeded RNG."""
    device = G.mapping.w_avg.device
    z = torch.randn([samples, G.z_dim], generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(z, None)[:, 0].mean(dim=0))


def _check_args(args: Any, inferred: dict[str, int], source: str) -> None:
    if not isinstance(args, NamespaceRecord):
        return
    for name, value in inferred.items():
        stored = args.get(name)
        if isinstance(stored, int) and not isinstance(stored, bool) and stored != value:
            raise CheckpointError(f"{source}: args.{name}={stored} contradicts the weights, which imply {value}")


def nvlabs_tensors(state: Mapping[str, Any], n_mlp: int, log_size: int, source: str) -> dict[str, torch.Tensor]:
    """rosinality ``g_ema`` names -> NVlabs names (every key must be used exactly once)."""
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return _tensor(state, key, source)

    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = take(f"style.{i + 1}.weight")
        out[f"mapping.fc{i}.bias"] = take(f"style.{i + 1}.bias")
    out["synthesis.b4.const"] = _squeeze0(take("input.input"), "input.input", source)

    def styled_conv(src: str, dst: str, noise: int) -> None:
        out[f"{dst}.weight"] = _squeeze0(take(f"{src}.conv.weight"), f"{src}.conv.weight", source)
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = take(f"{src}.activate.bias")
        out[f"{dst}.noise_strength"] = _reshaped(take(f"{src}.noise.weight"), [], f"{src}.noise.weight", source)
        noise_map = take(f"noises.noise_{noise}")
        dim(noise_map, 0, f"noises.noise_{noise}", source, 4)
        out[f"{dst}.noise_const"] = noise_map[0, 0]
        if f"{src}.conv.blur.kernel" in state:
            _check_kernel(take(f"{src}.conv.blur.kernel"), f"{src}.conv.blur.kernel", source)

    def to_rgb(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = _squeeze0(take(f"{src}.conv.weight"), f"{src}.conv.weight", source)
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = _reshaped(take(f"{src}.bias"), [-1], f"{src}.bias", source)
        if f"{src}.upsample.kernel" in state:
            _check_kernel(take(f"{src}.upsample.kernel"), f"{src}.upsample.kernel", source)

    styled_conv("conv1", "synthesis.b4.conv1", 0)
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for k in range(3, log_size + 1):
        r = 2**k
        styled_conv(f"convs.{2 * (k - 3)}", f"synthesis.b{r}.conv0", 2 * k - 5)
        styled_conv(f"convs.{2 * (k - 3) + 1}", f"synthesis.b{r}.conv1", 2 * k - 4)
        to_rgb(f"to_rgbs.{k - 3}", f"synthesis.b{r}.torgb")
    unused = sorted(k for k in state if k not in used)
    if unused:
        raise CheckpointError(f"{source}: g_ema has keys a rosinality StyleGAN2 generator of size {2**log_size} "
                              f"does not: {unused[:8]}")
    return out


def _reshaped(value: Any, shape: list[int], key: str, source: str) -> torch.Tensor:
    """``value.reshape(shape)`` for a tensor whose element count allows it; else a clean error."""
    if not isinstance(value, torch.Tensor) or (shape == [] and value.numel() != 1) or value.ndim == 0 and shape:
        raise CheckpointError(f"{source}: {key} has shape {list(getattr(value, 'shape', []))}, expected "
                              f"{'one element' if shape == [] else 'a vector'}")
    return value.reshape(shape)


def _squeeze0(value: torch.Tensor, key: str, source: str) -> torch.Tensor:
    if value.ndim == 0 or value.shape[0] != 1:
        raise CheckpointError(f"{source}: {key} has shape {list(value.shape)}, expected a leading 1")
    return value[0]


def _check_kernel(value: torch.Tensor, key: str, source: str) -> None:
    if tuple(value.shape) != (4, 4) or not torch.allclose(value.double(), BLUR_KERNEL.double(), atol=1e-6):
        raise CheckpointError(f"{source}: {key} is not rosinality's [1, 3, 3, 1] kernel; another blur kernel "
                              f"is not supported")
