"""The generator users hold: a ``torch.nn.Module`` with NVlabs ``G_ema``'s interface.

``G(z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='random', force_fp32=False)``
= ``G.synthesis(G.mapping(z, c, truncation_psi, truncation_cutoff), noise_mode, force_fp32)``.
Attributes ``z_dim, c_dim, w_dim, img_resolution, img_channels, num_ws``. For ``moddemod``
generators the state-dict names are NVlabs', so ``G_ema.state_dict()`` loads with ``strict=True``,
and the parameters and buffers are exactly NVlabs' (``misc.copy_params_and_buffers`` works with
``require_all=True`` in both directions).

As NVlabs' persistent classes do, ``G.init_args`` / ``G.init_kwargs`` (and those of ``G.mapping``
and ``G.synthesis``) rebuild the network: ``type(G)(*G.init_args, **G.init_kwargs)``. The keywords
are NVlabs' ``Generator`` keywords (``z_dim ... mapping_kwargs, synthesis_kwargs``) plus ``block``,
``block_kwargs``, the truncation defaults and ``backend``, so a caller may edit them first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sgtriton.backends import check_backend, default_backend
from sgtriton.config import GeneratorConfig, make_config
from sgtriton.graph.builder import build_graph
from sgtriton.graph.mapping import MappingNetwork
from sgtriton.graph.synthesis import SynthesisNetwork


class Generator(nn.Module):
    """A StyleGAN generator built from a :class:`~sgtriton.config.GeneratorConfig`."""

    def __init__(self, config: GeneratorConfig | None = None, backend: str | None = None,
                 autotune: str | None = None, **nvlabs_kwargs: Any) -> None:
        """``Generator(config)``, or ``Generator(z_dim=..., ..., mapping_kwargs=..., synthesis_kwargs=...)``
        with the keywords of :func:`~sgtriton.config.make_config` (NVlabs defaults for the rest)."""
        super().__init__()
        if config is None:
            config = make_config(None, **nvlabs_kwargs)
        elif nvlabs_kwargs:
            raise TypeError(f"config: pass either config or NVlabs keywords, not both (got {sorted(nvlabs_kwargs)})")
        self.config = config
        self.backend = check_backend(backend) if backend is not None else default_backend()
        _install_tuning_policy(autotune)
        self.graph = build_graph(config)
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.num_ws = self.graph.num_ws
        # NVlabs registers synthesis before mapping; state-dict order follows.
        self.synthesis = SynthesisNetwork(self.graph, self.backend)
        self.mapping = MappingNetwork(self.graph, self.backend)

    @property
    def init_args(self) -> tuple:
        """Positional arguments that rebuild this network (none: everything is in :attr:`init_kwargs`)."""
        return ()

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """Keywords that rebuild this network (fresh weights): a new dict on every access."""
        return {**nvlabs_kwargs(self.config), "backend": self.backend}

    def set_backend(self, backend: str) -> Generator:
        """Switch between ``'reference'``, ``'triton'`` and ``'auto'`` in place."""
        self.backend = self.synthesis.backend = self.mapping.backend = check_backend(backend)
        return self

    def warmup(self, batch_sizes: tuple[int, ...] = (1,), dtypes: tuple[str, ...] = ("fp32",), **kwargs: Any):
        """Compile (and under ``SGTRITON_AUTOTUNE=full`` tune) every kernel for these batch sizes and
        dtypes ahead of the first real call; see :func:`sgtriton.autotune.warmup`."""
        from sgtriton.autotune import warmup

        return warmup(self, batch_sizes, dtypes, **kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool | None = None,
                **synthesis_kwargs: Any) -> torch.Tensor:
        """``mapping`` then ``synthesis``; ``update_emas`` as in :class:`~sgtriton.graph.mapping.MappingNetwork`
        (None: NVlabs stylegan2-ada's rule, tracking ``w_avg`` in training mode)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, img_resolution="
                f"{self.img_resolution}, img_channels={self.img_channels}, num_ws={self.num_ws}, "
                f"block={self.config.block}, backend={self.backend}")


def nvlabs_kwargs(config: GeneratorConfig) -> dict[str, Any]:
    """``config`` as keywords of :func:`~sgtriton.config.make_config` (NVlabs ``Generator`` names)."""
    data = config.to_dict()
    data["mapping_kwargs"] = data.pop("mapping")
    data["synthesis_kwargs"] = data.pop("synthesis")
    return data


def _install_tuning_policy(autotune: str | None) -> None:
    """Kernel configs come from the tuning policy: ``autotune`` if given, else ``$SGTRITON_AUTOTUNE``
    (default ``cached``: cache, then shipped table, then default -- never benchmarks at start-up)."""
    from sgtriton.autotune import install, installed_policy

    if autotune is not None:
        install(autotune)
    elif installed_policy() is None:
        install()


def build_generator(preset: str | GeneratorConfig | None = None, *, backend: str | None = None, seed: int | None = None,
                    device: torch.device | str | None = None, autotune: str | None = None,
                    **kwargs: Any) -> Generator:
    """Build a generator from a preset (or NVlabs defaults) and NVlabs ``Generator`` keywords.

    ``build_generator("stylegan2-f", img_resolution=256)``;
    ``build_generator(None, z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
    mapping_kwargs={"num_layers": 8}, synthesis_kwargs={"channel_base": 16384}, block="moddemod")``.
    ``seed`` makes the random initial weights reproducible; ``autotune`` (``'off'|'cached'|'full'``)
    sets the process-wide kernel tuning policy. The generator is in eval mode. A
    :class:`~sgtriton.config.GeneratorConfig` may stand in the preset's place (or be passed as ``config=``).
    """
    config = kwargs.pop("config", None)
    if isinstance(preset, GeneratorConfig) and config is None:
        preset, config = None, preset
    if config is None:
        config = make_config(preset, **kwargs)
    elif preset is not None or kwargs:
        raise TypeError("config: pass either config= or a preset and keywords, not both")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        G = Generator(config, backend=backend, autotune=autotune)
    G.eval().requires_grad_(False)
    return G.to(device) if device is not None else G
