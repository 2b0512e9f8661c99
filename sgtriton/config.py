"""Generator configurations: plain dataclasses, NVlabs keyword names, and the preset table.

A :class:`GeneratorConfig` is everything needed to build a generator's graph (and to save it as
JSON beside the weights). Keyword names follow NVlabs ``Generator(z_dim, c_dim, w_dim,
img_resolution, img_channels, mapping_kwargs, synthesis_kwargs)``; ``block`` picks the registered
block type that every style layer uses.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from sgtriton.filters import STYLEGAN_FILTER

ARCHITECTURES = ("orig", "skip", "resnet")
MAPPING_FLAVOURS = ("stylegan2", "stylegan1")

# Limits on the numbers a configuration may hold. They are far above every published network
# (1024^2, 512 channels, 8 mapping layers) and keep a configuration read from an untrusted file
# from asking for unbounded work before its tensors are checked.
MAX_RESOLUTION = 2**14
MAX_FEATURES = 2**16  # z_dim, c_dim, w_dim, channel_max, mapping layer widths
MAX_CHANNEL_BASE = 2**31
MAX_MAPPING_LAYERS = 64
MAX_IMG_CHANNELS = 64
MAX_FILTER_TAPS = 16


def _check_positive_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name}={_quote(value)}: expected an int >= {minimum}{upper}")


def _quote(value: Any) -> str:
    """``repr`` that survives what a hostile file can put in a config (huge ints, deep lists)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return f"<a {type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _finite_number(name: str, value: Any, *, positive: bool = False, unit_interval: bool = False) -> float:
    """``value`` as a float after checking it is a finite real number (ints included, bools not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={_quote(value)}: expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{name}={_quote(value)}: expected a finite number")
    if positive and not number > 0:
        raise ValueError(f"{name}={_quote(value)}: expected a number > 0")
    if unit_interval and not 0 <= number <= 1:
        raise ValueError(f"{name}={_quote(value)}: expected a number in [0, 1]")
    return number


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


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
        _check_positive_int("mapping_kwargs.num_layers", self.num_layers, maximum=MAX_MAPPING_LAYERS)
        for name in ("embed_features", "layer_features"):
            value = getattr(self, name)
            if value is not None:
                _check_positive_int(f"mapping_kwargs.{name}", value, maximum=MAX_FEATURES)
        _set(self, "lr_multiplier", _finite_number("mapping_kwargs.lr_multiplier", self.lr_multiplier, positive=True))
        if self.w_avg_beta is not None:
            _set(self, "w_avg_beta", _finite_number("mapping_kwargs.w_avg_beta", self.w_avg_beta, unit_interval=True))
        if self.flavour not in MAPPING_FLAVOURS:
            raise ValueError(f"mapping_kwargs.flavour={_quote(self.flavour)}: expected one of {MAPPING_FLAVOURS}")


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
        _check_positive_int("synthesis_kwargs.channel_base", self.channel_base, maximum=MAX_CHANNEL_BASE)
        _check_positive_int("synthesis_kwargs.channel_max", self.channel_max, maximum=MAX_FEATURES)
        _check_positive_int("synthesis_kwargs.num_fp16_res", self.num_fp16_res, minimum=0,
                            maximum=int(math.log2(MAX_RESOLUTION)))
        if self.conv_clamp is not None:
            _set(self, "conv_clamp", _finite_number("synthesis_kwargs.conv_clamp", self.conv_clamp, positive=True))
        if not isinstance(self.architecture, str) or self.architecture not in ARCHITECTURES:
            raise ValueError(f"synthesis_kwargs.architecture={_quote(self.architecture)}: expected one of "
                             f"{ARCHITECTURES}")
        if not isinstance(self.use_noise, bool):
            raise ValueError(f"synthesis_kwargs.use_noise={_quote(self.use_noise)}: expected True or False")
        taps = self.resample_filter
        if not isinstance(taps, (tuple, list)) or not 1 <= len(taps) <= MAX_FILTER_TAPS:
            raise ValueError(f"synthesis_kwargs.resample_filter={_quote(taps)}: expected a list of 1 to "
                             f"{MAX_FILTER_TAPS} numbers, e.g. [1, 3, 3, 1]")
        taps = tuple(_finite_number("synthesis_kwargs.resample_filter", t) for t in taps)
        if not sum(taps) > 0:
            raise ValueError(f"synthesis_kwargs.resample_filter={_quote(self.resample_filter)}: the taps must sum "
                             f"to a positive number (the filter is normalised by its sum)")
        _set(self, "resample_filter", tuple(int(t) if t.is_integer() else t for t in taps))


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
        _check_positive_int("z_dim", self.z_dim, minimum=0, maximum=MAX_FEATURES)
        _check_positive_int("c_dim", self.c_dim, minimum=0, maximum=MAX_FEATURES)
        _check_positive_int("w_dim", self.w_dim, maximum=MAX_FEATURES)
        _check_positive_int("img_channels", self.img_channels, maximum=MAX_IMG_CHANNELS)
        if self.z_dim == 0 and self.c_dim == 0:
            raise ValueError("z_dim=0, c_dim=0: at least one of them must be positive")
        if not isinstance(self.mapping, MappingConfig) or not isinstance(self.synthesis, SynthesisConfig):
            raise ValueError("mapping / synthesis: expected a MappingConfig and a SynthesisConfig")
        if (self.mapping.flavour == "stylegan1" and self.z_dim == 0 and self.c_dim
                and not self.mapping.embed_features):
            raise ValueError("z_dim=0 with mapping_kwargs.flavour='stylegan1': StyleGAN1 projects the label to "
                             "z_dim features, so the first mapping layer would have no input; expected z_dim > 0 "
                             "or mapping_kwargs.embed_features > 0")
        res = self.img_resolution
        if isinstance(res, bool) or not isinstance(res, int) or res < 4 or res > MAX_RESOLUTION or res & (res - 1):
            raise ValueError(f"img_resolution={_quote(res)}: expected a power of two from 4 to {MAX_RESOLUTION} "
                             f"(4, 8, ..., 1024)")
        if self.synthesis.channel_base < res:
            raise ValueError(f"synthesis_kwargs.channel_base={self.synthesis.channel_base}: gives no feature maps at "
                             f"{res}x{res} (channels = channel_base // resolution); expected >= {res}")
        if not isinstance(self.block, str) or not self.block:
            raise ValueError(f"block={_quote(self.block)}: expected a registered block name")
        if not isinstance(self.block_kwargs, dict) or not all(isinstance(k, str) for k in self.block_kwargs):
            raise ValueError(f"block_kwargs={_quote(self.block_kwargs)}: expected a dict with str keys")
        _set(self, "truncation_psi", _finite_number("truncation_psi", self.truncation_psi))
        if self.truncation_cutoff is not None:
            _check_positive_int("truncation_cutoff", self.truncation_cutoff, minimum=0, maximum=MAX_FEATURES)

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
        """The inverse of :meth:`to_dict`; unknown or mistyped fields raise ``ValueError`` naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"config: expected a dict, got {type(data).__name__}")
        data = dict(data)
        parts = {}
        for key, kind in (("mapping", MappingConfig), ("synthesis", SynthesisConfig)):
            part = data.pop(key, {})
            fields = {f.name for f in dataclasses.fields(kind)}
            if not isinstance(part, dict) or not set(part) <= fields:
                raise ValueError(f"config.{key}: expected a dict with keys among {sorted(fields)}, got "
                                 f"{_quote(part if not isinstance(part, dict) else sorted(map(str, part)))}")
            parts[key] = kind(**part)
        unknown = sorted(map(str, set(data) - _TOP_KEYS))
        if unknown:
            raise ValueError(f"config: unexpected keys {unknown[:8]}; expected some of {sorted(_TOP_KEYS)}")
        return cls(**parts, **data)


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

#: NVlabs' mixed precision (stylegan2-ada's training configs): the four highest resolutions marked
#: fp16, activations clamped to +-256. What an "fp16" generator is where its config marks no block
#: fp16 (the benchmarks, ``sgtriton kernels --model --dtype fp16``).
NVLABS_MIXED_PRECISION: dict[str, Any] = {"num_fp16_res": 4, "conv_clamp": 256}

_SYNTHESIS_KEYS = {f.name for f in dataclasses.fields(SynthesisConfig)}
_MAPPING_KEYS = {f.name for f in dataclasses.fields(MappingConfig)}
_TOP_KEYS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "block", "block_kwargs",
             "truncation_psi", "truncation_cutoff"}


def make_config(preset: str | None = None, **kwargs: Any) -> GeneratorConfig:
    """A :class:`GeneratorConfig` from a preset name (or NVlabs defaults) and NVlabs keywords.

    Accepts ``mapping_kwargs={...}`` and ``synthesis_kwargs={...}`` (ada style) and synthesis
    keywords at the top level (stylegan3 style); later values override the preset's.
    """
    if isinstance(preset, GeneratorConfig):
        raise TypeError("preset: got a GeneratorConfig; pass it as config=... (build_generator(config=cfg))")
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
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
