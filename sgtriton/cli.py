"""The ``sgtriton`` command line: ``generate``, ``plan``, ``blocks`` (and the commands of the
checkpoint, kernel and tuning modules). ``generate`` mirrors NVlabs ``generate.py``:
``--network --seeds --trunc --class --noise-mode --outdir --projected-w``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm

from sgtriton.backends import BACKENDS, default_device
from sgtriton.blocks.base import NOISE_MODES
from sgtriton.config import PRESETS
from sgtriton.images import make_grid, parse_range, save_image, seed_to_z, to_uint8


def _fail(message: str) -> None:
    raise click.UsageError(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sgtriton")
def main() -> None:
    """sgtriton: StyleGAN generators on Triton kernels, proven against PyTorch references."""


def _parse_block_kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"--block-kwargs={text!r}: expected a JSON object, e.g. '{{\"bank_size\": 4}}' ({exc})")
    if not isinstance(value, dict):
        _fail(f"--block-kwargs={text!r}: expected a JSON object, e.g. '{{\"bank_size\": 4}}'")
    return value


def _open_generator(network: str | None, preset: str | None, resolution: int | None, block: str | None,
                    block_kwargs: str | None, init_seed: int, backend: str | None, device: str):
    from sgtriton.generator import build_generator

    if network is not None:
        if preset is not None or block is not None or resolution is not None:
            _fail("--network: a checkpoint fixes the architecture; drop --preset/--block/--resolution")
        from sgtriton.checkpoints import load

        return load(network, backend=backend or "auto", device=device)
    if preset is None:
        _fail(f"pass --network PATH or --preset NAME (one of {', '.join(sorted(PRESETS))})")
    kwargs = {"img_resolution": resolution or 1024}
    if block is not None:
        kwargs["block"] = block
    if block_kwargs:
        kwargs["block_kwargs"] = _parse_block_kwargs(block_kwargs)
    try:
        return build_generator(preset, backend=backend, seed=init_seed, device=device, **kwargs)
    except (ValueError, TypeError) as exc:
        _fail(str(exc))


def _network_options(fn):
    options = [
        click.option("--network", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Checkpoint: NVlabs .pkl, rosinality .pt, TensorFlow .pkl or sgtriton .safetensors."),
        click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
                     help="Build a generator from a preset instead of a checkpoint."),
        click.option("--resolution", type=int, default=None, help="Output resolution for --preset [default: 1024]."),
        click.option("--block", default=None, help="Registered block type for every style layer."),
        click.option("--block-kwargs", default=None, help="Block options as a JSON object."),
        click.option("--init-seed", type=int, default=0, show_default=True,
                     help="Seed of the random initial weights when no --network is given."),
        click.option("--backend", type=click.Choice(BACKENDS), default=None,
                     help="reference, triton or auto [default: $SGTRITON_BACKEND or auto]."),
        click.option("--device", default=None, help="torch device [default: cuda if available, else cpu]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command()
@_network_options
@click.option("--seeds", default=None, help="Seeds, e.g. '0-7' or '0,1,4-6'.")
@click.option("--trunc", "truncation_psi", type=float, default=None,
              help="Truncation psi [default: the generator's own: 1, or 0.7 for StyleGAN1].")
@click.option("--trunc-cutoff", "truncation_cutoff", type=int, default=None,
              help="Truncate only the first N ws [default: the network's own: all, or 8 for StyleGAN1].")
@click.option("--class", "class_idx", type=int, default=None, help="Class label (conditional networks).")
@click.option("--noise-mode", type=click.Choice(NOISE_MODES), default="const", show_default=True)
@click.option("--projected-w", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Render the ws of a projector .npz (key 'w') instead of seeds.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--grid/--no-grid", default=True, show_default=True, help="Also write grid.png.")
@click.option("--outdir", type=click.Path(file_okay=False), required=True, help="Where to write the images.")
def generate(network, preset, resolution, block, block_kwargs, init_seed, backend, device, seeds,
             truncation_psi, truncation_cutoff, class_idx, noise_mode, projected_w, batch_size, grid, outdir):
    """Generate images (seedNNNN.png and grid.png) with NVlabs generate.py conventions."""
    device = device or default_device()
    G = _open_generator(network, preset, resolution, block, block_kwargs, init_seed, backend, device)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    if projected_w is not None:
        if seeds is not None:
            click.echo("warning: --seeds is ignored when using --projected-w", err=True)
        ws = torch.as_tensor(np.load(projected_w)["w"], device=device)
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
            _fail(f"--projected-w: expected 'w' of shape [N, {G.num_ws}, {G.w_dim}], got {list(ws.shape)}")
        for idx, w in enumerate(tqdm(ws, desc="projected ws", unit="img")):
            img = G.synthesis(w.unsqueeze(0), noise_mode=noise_mode)
            save_image(to_uint8(img)[0], outdir / f"proj{idx:02d}.png")
        return

    if seeds is None:
        _fail("--seeds: required unless --projected-w is given")
    try:
        seed_list = parse_range(seeds, "--seeds")
    except ValueError as exc:
        _fail(str(exc))
    label = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim:
        if class_idx is None:
            _fail("--class: required for a conditional network")
        if not 0 <= class_idx < G.c_dim:
            _fail(f"--class={class_idx}: expected 0 <= class < {G.c_dim}")
        label[:, class_idx] = 1
    elif class_idx is not None:
        click.echo("warning: --class is ignored for an unconditional network", err=True)
    psi = G.config.truncation_psi if truncation_psi is None else truncation_psi
    cutoff = G.config.truncation_cutoff if truncation_cutoff is None else truncation_cutoff

    images = []
    with tqdm(total=len(seed_list), desc="generating", unit="img") as progress:
        for start in range(0, len(seed_list), batch_size):
            batch = seed_list[start : start + batch_size]
            z = torch.cat([seed_to_z(s, G.z_dim) for s in batch]).to(device)
            img = G(z, label.repeat(len(batch), 1), truncation_psi=psi, truncation_cutoff=cutoff,
                    noise_mode=noise_mode)
            for seed, array in zip(batch, to_uint8(img), strict=True):
                save_image(array, outdir / f"seed{seed:04d}.png")
                images.append(array)
            progress.update(len(batch))
    if grid and len(images) > 1:
        save_image(make_grid(images), outdir / "grid.png")
    click.echo(f"wrote {len(images)} image(s) to {outdir}")


@main.command()
@click.argument("preset", type=click.Choice(sorted(PRESETS)), required=False)
@click.option("--network", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Plan a checkpoint's generator instead of a preset.")
@click.option("--resolution", type=int, default=None, help="Output resolution [default: 1024].")
@click.option("--block", default=None, help="Registered block type for every style layer.")
@click.option("--block-kwargs", default=None, help="Block options as a JSON object.")
@click.option("--backend", type=click.Choice(BACKENDS), default=None, help="Backend whose kernels to show.")
@click.option("--device", default=None, help="Device the plan is for [default: cuda if available, else cpu].")
def plan(preset, network, resolution, block, block_kwargs, backend, device):
    """Print the generator graph: nodes, shapes, parameters, FLOPs and kernels."""
    from sgtriton.graph.plan import format_plan, meta_generator, plan_rows

    device = device or default_device()
    if network is not None:
        if preset is not None or block is not None or resolution is not None or block_kwargs is not None:
            _fail("--network: a checkpoint fixes the architecture; drop PRESET/--block/--block-kwargs/--resolution")
        G = _open_generator(network, None, None, None, None, 0, backend, "cpu")
    else:
        if preset is None:
            _fail(f"PRESET: expected one of {', '.join(sorted(PRESETS))} (or --network PATH)")
        kwargs = {"img_resolution": resolution or 1024, "block_kwargs": _parse_block_kwargs(block_kwargs)}
        if block is not None:
            kwargs["block"] = block
        try:
            G = meta_generator(preset, backend=backend, **kwargs)
        except (ValueError, TypeError) as exc:
            _fail(str(exc))
    click.echo(format_plan(G, plan_rows(G, device)))


@main.command()
def blocks():
    """List registered block types: name, source package, implementations, description."""
    from sgtriton.registry import available_blocks

    entries = available_blocks()
    width = max([len(e.name) for e in entries] + [5])
    source_width = max([len(e.source) for e in entries] + [6])
    click.echo(f"{'block':<{width}}  {'source':<{source_width}}  {'implementations':<20}  description")
    for e in entries:
        click.echo(f"{e.name:<{width}}  {e.source:<{source_width}}  {','.join(e.implementations):<20}  "
                   f"{e.description}")


def _attach_optional_commands() -> None:
    """Commands that live beside their subsystems."""
    import importlib

    for module, names in (
        ("sgtriton.checkpoints.commands", ("convert_command", "mix_command")),
        ("sgtriton.autotune.commands", ("autotune_command",)),
        ("sgtriton.inspection.compile_gate", ("kernels_command",)),
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for name in names:
            command = getattr(mod, name, None)
            if command is not None:
                main.add_command(command)


_attach_optional_commands()

if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(__file__))
