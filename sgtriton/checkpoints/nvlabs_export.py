"""Writing an sgtriton generator back as an NVlabs network snapshot, for users who keep the NVlabs tree.

``export_nvlabs(G, "out.pkl", nvlabs_src="stylegan2-ada-pytorch/")`` imports NVlabs' own
``Generator`` from that source tree (``training/networks.py``, or stylegan3's
``training/networks_stylegan2.py``), builds it from ``G``'s configuration, loads ``G``'s state dict
with ``strict=True`` and pickles a snapshot dict as their ``train.py`` does, through their
``torch_utils.persistence`` (which embeds their source). Their ``legacy.load_network_pkl`` and
``generate.py`` then render ``G``'s images.

The snapshot holds ``G`` and ``G_ema`` (both ``G``'s weights), ``D`` (their ``Discriminator`` for the
same image size, freshly initialised: sgtriton has no discriminator; it is there because their
loaders require one), ``augment_pipe = None`` and ``training_set_kwargs = None``, in the key order
of the tree's own training loop.

Importing the tree runs its code: name a tree you trust. Only ``moddemod`` generators with the
StyleGAN2 mapping exist in NVlabs' PyTorch code; anything else is refused.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from sgtriton.checkpoints.errors import CheckpointError
from sgtriton.config import GeneratorConfig
from sgtriton.files import atomic_write

#: The tree's network module per flavour, tried in this order (stylegan3 also ships networks.py's successor).
NETWORK_MODULES = (("sg3", "training.networks_stylegan2"), ("ada", "training.networks"))
#: Top-level packages an NVlabs tree brings; imported only for the export and removed again after it.
_TREE_PACKAGES = ("training", "dnnlib", "torch_utils", "legacy", "metrics")


def generator_kwargs(config: GeneratorConfig, flavour: str) -> dict[str, Any]:
    """NVlabs ``Generator`` keywords for ``config``: every value explicit, so neither flavour's class
    defaults (ada: fp32, no clamp; sg3: fp16 at 4 resolutions, clamp 256) leak in."""
    if config.block != "moddemod" or config.mapping.flavour != "stylegan2":
        raise CheckpointError(f"config: NVlabs' PyTorch generator is StyleGAN2's moddemod network; this one uses "
                              f"block={config.block!r} with the {config.mapping.flavour} mapping")
    m, s = config.mapping, config.synthesis
    mapping_kwargs = {"num_layers": m.num_layers, "embed_features": m.embed_features,
                      "layer_features": m.layer_features, "lr_multiplier": m.lr_multiplier,
                      "w_avg_beta": m.w_avg_beta}
    synthesis_kwargs = {"channel_base": s.channel_base, "channel_max": s.channel_max,
                        "num_fp16_res": s.num_fp16_res, "conv_clamp": s.conv_clamp,
                        "architecture": s.architecture, "resample_filter": list(s.resample_filter),
                        "use_noise": s.use_noise}
    dims = {"z_dim": config.z_dim, "c_dim": config.c_dim, "w_dim": config.w_dim,
            "img_resolution": config.img_resolution, "img_channels": config.img_channels}
    if flavour == "ada":
        return {**dims, "mapping_kwargs": mapping_kwargs, "synthesis_kwargs": synthesis_kwargs}
    return {**dims, "mapping_kwargs": mapping_kwargs, **synthesis_kwargs}


@contextlib.contextmanager
def nvlabs_tree(nvlabs_src: str | os.PathLike) -> Iterator[tuple[str, ModuleType]]:
    """``(flavour, network module)`` of the NVlabs tree at ``nvlabs_src``, importable while inside."""
    root = Path(nvlabs_src)
    found = [(flavour, name) for flavour, name in NETWORK_MODULES
             if (root / (name.replace(".", "/") + ".py")).is_file()]
    if not (root / "torch_utils" / "persistence.py").is_file() or not found:
        raise CheckpointError(f"nvlabs_src={os.fspath(nvlabs_src)!r}: expected a stylegan2-ada-pytorch or "
                              f"stylegan3 source tree (with torch_utils/persistence.py and "
                              f"training/networks.py or training/networks_stylegan2.py)")
    flavour, name = found[0]

    def tree_modules() -> dict[str, ModuleType]:
        return {k: v for k, v in sys.modules.items() if k.split(".")[0] in _TREE_PACKAGES}

    saved_modules, saved_path = tree_modules(), list(sys.path)
    for key in saved_modules:
        del sys.modules[key]
    sys.path.insert(0, os.fspath(root.resolve()))
    try:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # their code, their failure: report it with the tree's name
            raise CheckpointError(f"nvlabs_src={os.fspath(nvlabs_src)!r}: importing {name} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        yield flavour, module
    finally:
        sys.path[:] = saved_path
        for key in tree_modules():
            del sys.modules[key]
        sys.modules.update(saved_modules)


def export_nvlabs(G: torch.nn.Module, path: str | os.PathLike, nvlabs_src: str | os.PathLike) -> Path:
    """Write ``G`` (an sgtriton :class:`~sgtriton.generator.Generator`) to ``path`` as an NVlabs snapshot
    (see the module docstring) and return ``path``."""
    config = G.config
    with nvlabs_tree(nvlabs_src) as (flavour, networks):
        kwargs = generator_kwargs(config, flavour)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the placeholder discriminator's initial weights
            nv_G = networks.Generator(**copy.deepcopy(kwargs))
            D = networks.Discriminator(c_dim=config.c_dim, img_resolution=config.img_resolution,
                                       img_channels=config.img_channels, channel_base=config.synthesis.channel_base,
                                       channel_max=config.synthesis.channel_max)
        state = {k: v.detach().to("cpu", torch.float32) for k, v in G.state_dict().items()}
        try:
            nv_G.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"NVlabs' Generator from {os.fspath(nvlabs_src)!r} does not take this network's "
                                  f"state dict: {exc}") from exc
        nv_G = nv_G.eval().requires_grad_(False)
        nets = {"G": nv_G, "D": D.eval().requires_grad_(False), "G_ema": copy.deepcopy(nv_G), "augment_pipe": None}
        if flavour == "ada":
            snapshot = {"training_set_kwargs": None, **nets}
        else:
            snapshot = {**nets, "training_set_kwargs": None}
        data = pickle.dumps(snapshot)
    return atomic_write(path, data)
