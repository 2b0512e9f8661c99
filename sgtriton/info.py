"""``sgtriton info NETWORK [--json]``: what a checkpoint holds and what ``generate`` would do with it.

Reports the file's format, its architecture (the preset it is equivalent to, if any; block type,
resolution, channels per resolution, ``num_ws``, the fp16 layers, ``conv_clamp``, ``c_dim``), the
parameter count, whether it carries ``w_avg`` (truncation needs it), the file's sha256, and the
backend and kernels ``generate`` would run on this machine's default device.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import click

from sgtriton.cli_options import PLAN_DEVICE

#: Architecture fields a preset fixes; a checkpoint equal on all of them is "equivalent" to it.
_PRESET_FIELDS = ("block", "synthesis.architecture", "synthesis.channel_base", "synthesis.channel_max",
                  "mapping.num_layers", "mapping.flavour")


def _field(config: Any, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = getattr(value, part, None)
    return value


def preset_equivalent(config: Any) -> str | None:
    """The first preset whose architecture fields (:data:`_PRESET_FIELDS`) equal ``config``'s, else None."""
    from sgtriton.config import PRESETS, make_config

    for name in sorted(PRESETS):
        candidate = make_config(name, img_resolution=config.img_resolution)
        if all(_field(candidate, f) == _field(config, f) for f in _PRESET_FIELDS):
            return name
    return None


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def network_info(path: str | os.PathLike[str], device: str | None = None) -> dict[str, Any]:
    """Everything ``sgtriton info`` reports about the checkpoint at ``path``, as a JSON-ready dict."""
    import torch

    from sgtriton.backends import default_device, resolve_impl
    from sgtriton.checkpoints import detect_format, load
    from sgtriton.graph.plan import plan_rows

    device = device or default_device()
    fmt = detect_format(path)
    G = load(path, backend="auto", device="cpu")
    config = G.config
    fp16_layers = [r for r in config.block_resolutions if config.synthesis.num_fp16_res and r >= config.fp16_resolution]
    w_avg = getattr(G.mapping, "w_avg", None)
    rows = plan_rows(G, device)
    kernels = sorted({k for row in rows for k in row.kernels})
    impl = resolve_impl(G.backend, torch.device(device), G.graph.block_type.implementations)
    return {
        "file": os.fspath(path),
        "format": fmt,
        "sha256": file_sha256(path),
        "architecture": {
            "preset_equivalent": preset_equivalent(config),
            "block": config.block,
            "synthesis": config.synthesis.architecture,
            "resolution": config.img_resolution,
            "img_channels": config.img_channels,
            "channels": {str(r): config.channels(r) for r in config.block_resolutions},
            "z_dim": config.z_dim,
            "w_dim": config.w_dim,
            "c_dim": config.c_dim,
            "num_ws": G.num_ws,
            "mapping_layers": config.mapping.num_layers,
            "fp16_resolutions": fp16_layers,
            "conv_clamp": config.synthesis.conv_clamp,
        },
        "parameters": sum(p.numel() for p in G.parameters()),
        "w_avg": "absent" if w_avg is None else "zero" if not bool(w_avg.abs().sum()) else "present",
        "truncation_default": {"psi": config.truncation_psi, "cutoff": config.truncation_cutoff},
        "generate_runs": {"device": device, "backend": G.backend, "implementation": impl, "kernels": kernels},
    }


def format_info(info: dict[str, Any]) -> str:
    arch = info["architecture"]
    channels = ", ".join(f"{r}:{c}" for r, c in arch["channels"].items())
    runs = info["generate_runs"]
    lines = [
        f"file         {info['file']}",
        f"format       {info['format']}",
        f"sha256       {info['sha256']}",
        f"preset       {arch['preset_equivalent'] or 'none (a custom architecture)'}",
        f"block        {arch['block']} ({arch['synthesis']} synthesis)",
        f"resolution   {arch['resolution']}x{arch['resolution']}, {arch['img_channels']} image channels",
        f"channels     {channels}",
        f"latents      z_dim={arch['z_dim']} w_dim={arch['w_dim']} c_dim={arch['c_dim']} num_ws={arch['num_ws']} "
        f"({arch['mapping_layers']} mapping layers)",
        f"fp16         {', '.join(map(str, arch['fp16_resolutions'])) or 'none'}"
        + (" (fp16 on CUDA only)" if arch["fp16_resolutions"] else ""),
        f"conv_clamp   {arch['conv_clamp']}",
        f"parameters   {info['parameters']:,}",
        f"w_avg        {info['w_avg']}",
        f"truncation   psi={info['truncation_default']['psi']} cutoff={info['truncation_default']['cutoff']}",
        f"generate     on {runs['device']}: backend {runs['backend']} -> {runs['implementation']}; "
        f"kernels {', '.join(runs['kernels']) or 'none'}",
    ]
    return "\n".join(lines)


@click.command("info")
@click.argument("network", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--device", type=PLAN_DEVICE, default=None,
              help="cpu|cuda|cuda:N to report for (needs none) [default: cuda if available, else cpu].")
def info_command(network: str, as_json: bool, device: str | None) -> None:
    """Describe the checkpoint NETWORK: format, architecture, parameters, sha256, what generate runs."""
    info = network_info(network, device)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))
