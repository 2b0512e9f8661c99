"""Generator configurations: plain dataclasses, NVlabs keyword names, and the preset table.

A :class:`GeneratorConfig` is everything needed to build a generator's graph (and to save it as
JSON beside the weights). Keyword names follow NVlabs ``Generator(z_dim, c_dim, w_dim,
img_resolution, img_channels, mapping_kwargs, synthesis_kwargs)``; ``block`` picks the registered
block type that every style layer uses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from sgtriton.ops.upfirdn2d import STYLEGAN_FILTER

ARCHITECTURES = ("orig", "skip", "resnet")
MAPPING_FLAVOURS = ("stylegan2", "stylegan1")


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an int >= {minimum}")


@dataclass(frozen=True)
class MappingConfig:
    """Mapping network z (+ c) -> w; NVlabs ``mapping_kwargs`` names.

    ``flavour='stylegan2'``: pixel-norm z and the embedded label separately, ``sqrt 2`` gain after
    each lrelu. ``'stylegan1'``: concatenate the (unscaled) label projection before one joint pixel
    norm, ``sqrt 2`` inside the weight scale and none after the lrelu.
    """

    num_layers: int = 8
    embed_features: int | None = None
    layer_features: int | None = None
    lr_multiplier: float = 0.01
    w_avg_beta: float | None = 0.995
    flavour: str = "stylegan2"

    def __post_init__(self) -> None:
        _check_positive_int("mapping_kwargs.num_layers", self.num_layers)
        for name in ("embed_features", "layer_features"):
            value = getattr(self, name)
            if value is not None:
                _check_positive_int(f"mapping_kwargs.{name}", value)
        if not self.lr_multiplier > 0:
            raise ValueError(f"mapping_kwargs.lr_multiplier={self.lr_multiplier!r}: expected a number > 0")
        if self.flavour not in MAPPING_FLAVOURS:
            raise ValueError(f"mapping_kwargs.flavour={self.flavour!r}: expected one of {MAPPING_FLAVOURS}")


@dataclass(frozen=True)
class SynthesisConfig:
    """Synthesis network; NVlabs ``synthesis_kwargs`` names.

    Channels at resolution ``r``: ``min(channel_base // r, channel_max)``. Blocks at the
    ``num_fp16_res`` highest resolutions (never 4x4) are marked fp16 and run in fp16 on CUDA.
    """

    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    architecture: str = "skip"
    use_noise: bool = True
    resample_filter: tuple[int, ...] = STYLEGAN_FILTER

    def __post_init__(self) -> None:
        _check_positive_int("synthesis_kwargs.channel_base", self.channel_base)
        _check_positive_int("synthesis_kwargs.channel_max", self.channel_max)
        _check_positive_int("synthesis_kwargs.num_fp16_res", self.num_fp16_res, minimum=0)
        if self.conv_clamp is not None and not self.conv_clamp > 0:
            raise ValueError(f"synthesis_kwargs.conv_clamp={self.conv_clamp!r}: expected None or a number > 0")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"synthesis_kwargs.architecture={self.architecture!r}: expected one of {ARCHITECTURES}")
        object.__setattr__(self, "resample_filter", tuple(self.resample_filter))


@dataclass(frozen=True)
class GeneratorConfig:
    """A whole generator: dimensions, mapping, synthesis and the style-block type."""

    z_dim: int = 512
    c_dim: int = 0
    w_dim: int = 512
    img_resolution: int = 1024
    img_channels: int = 3
    mapping: MappingConfig = field(default_factory=MappingConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    block: str = "moddemod"
    block_kwargs: dict[str, Any] = field(default_factory=dict)
    # Defaults the CLI uses when no --trunc is given (StyleGAN1: psi 0.7 on the first 8 ws).
    truncation_psi: float = 1.0
    truncation_cutoff: int | None = None

    def __post_init__(self) -> None:
        _check_positive_int("z_dim", self.z_dim, minimum=0)
        _check_positive_int("c_dim", self.c_dim, minimum=0)
        _check_positive_int("w_dim", self.w_dim)
        _check_positive_int("img_channels", self.img_channels)
        if self.z_dim == 0 and self.c_dim == 0:
            raise ValueError("z_dim=0, c_dim=0: at least one of them must be positive")
        res = self.img_resolution
        if isinstance(res, bool) or not isinstance(res, int) or res < 4 or res & (res - 1):
            raise ValueError(f"img_resolution={res!r}: expected a power of two >= 4 (4, 8, ..., 1024)")
        if not isinstance(self.block, str) or not self.block:
            raise ValueError(f"block={self.block!r}: expected a registered block name")

    @property
    def resolution_log2(self) -> int:
        return int(math.log2(self.img_resolution))

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, self.resolution_log2 + 1)]

    def channels(self, resolution: int) -> int:
        """Feature maps at ``resolution``: ``min(channel_base // resolution, channel_max)``."""
        return min(self.synthesis.channel_base // resolution, self.synthesis.channel_max)

    @property
    def fp16_resolution(self) -> int:
        """Lowest resolution whose block is marked fp16 (never below 8)."""
        return max(2 ** (self.resolution_log2 + 1 - self.synthesis.num_fp16_res), 8)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict (the native format's metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        data = dict(data)
        mapping = MappingConfig(**data.pop("mapping", {}))
        synthesis = SynthesisConfig(**data.pop("synthesis", {}))
        return cls(mapping=mapping, synthesis=synthesis, **data)


# The preset table: StyleGAN1 config A, the revised architecture (Fig. 2c), and StyleGAN2 configs.
# Configs B-D share one generator; A-E use half the feature maps of F at 64^2 and above.
PRESETS: dict[str, dict[str, Any]] = {
    "stylegan1": {
        "block": "adain",
        "mapping_kwargs": {"flavour": "stylegan1"},
        "synthesis_kwargs": {"channel_base": 16384, "architecture": "orig"},
        "truncation_psi": 0.7,
        "truncation_cutoff": 8,
    },
    "revised": {
        "block": "revised",
        "synthesis_kwargs": {"channel_base": 16384, "architecture": "orig"},
    },
    "stylegan2-b": {
        "block": "moddemod",
        "synthesis_kwargs": {"channel_base": 16384, "architecture": "orig"},
    },
    "stylegan2-e": {
        "block": "moddemod",
        "synthesis_kwargs": {"channel_base": 16384, "architecture": "skip"},
    },
    "stylegan2-f": {
        "block": "moddemod",
        "synthesis_kwargs": {"channel_base": 32768, "architecture": "skip"},
    },
}

_SYNTHESIS_KEYS = {f.name for f in dataclasses.fields(SynthesisConfig)}
_MAPPING_KEYS = {f.name for f in dataclasses.fields(MappingConfig)}
_TOP_KEYS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "block", "block_kwargs",
             "truncation_psi", "truncation_cutoff"}


def make_config(preset: str | None = None, **kwargs: Any) -> GeneratorConfig:
    """A :class:`GeneratorConfig` from a preset name (or NVlabs defaults) and NVlabs keywords.

    Accepts ``mapping_kwargs={...}`` and ``synthesis_kwargs={...}`` (ada style) and synthesis
    keywords at the top level (stylegan3 style); later values override the preset's.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset={preset!r}: expected None or one of {sorted(PRESETS)}")
    base = PRESETS.get(preset, {}) if preset else {}
    top = {k: v for k, v in base.items() if k in _TOP_KEYS}
    mapping = dict(base.get("mapping_kwargs", {}))
    synthesis = dict(base.get("synthesis_kwargs", {}))

    for key, value in kwargs.items():
        if key == "mapping_kwargs":
            _merge("mapping_kwargs", mapping, value, _MAPPING_KEYS)
        elif key == "synthesis_kwargs":
            _merge("synthesis_kwargs", synthesis, value, _SYNTHESIS_KEYS)
        elif key in _SYNTHESIS_KEYS:
            synthesis[key] = value
        elif key in _TOP_KEYS:
            top[key] = value
        else:
            allowed = sorted(_TOP_KEYS | _SYNTHESIS_KEYS | {"mapping_kwargs", "synthesis_kwargs"})
            raise TypeError(f"unexpected keyword {key!r}: expected one of {allowed}")
    return GeneratorConfig(mapping=MappingConfig(**mapping), synthesis=SynthesisConfig(**synthesis), **top)


def _merge(name: str, target: dict[str, Any], value: Any, allowed: set[str]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise TypeError(f"{name}={value!r}: expected a dict")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise TypeError(f"{name}: unexpected keys {unknown}; expected some of {sorted(allowed)}")
    target.update(value)
