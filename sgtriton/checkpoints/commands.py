"""``sgtriton convert`` and ``sgtriton mix``: click commands the CLI attaches.

``convert IN OUT`` reads any supported checkpoint and writes sgtriton's native safetensors file
(``--format nvlabs --nvlabs-src DIR``: an NVlabs snapshot, see :mod:`sgtriton.checkpoints.nvlabs_export`).
``mix`` renders a style-mixing grid the way NVlabs ``style_mixing.py`` does: row seeds give the
coarse ws, column seeds replace the ws listed in ``--styles``; files ``{row}-{col}.png`` (the
diagonal ``{seed}-{seed}.png`` are the unmixed images) and ``grid.png``. Seeds map to z with
``np.random.RandomState(seed).randn(z_dim)``; images to uint8 with ``clamp(x * 127.5 + 128)``.
"""

from __future__ import annotations

import os

import click
import PIL.Image
import torch
from tqdm import tqdm

from sgtriton.backends import default_device
from sgtriton.checkpoints import FORMATS, CheckpointError, convert
from sgtriton.checkpoints.assemble import describe
from sgtriton.cli_options import (
    FINITE_FLOAT,
    INT_LIST,
    NOISE_MODE_NAMES,
    OUTPUT_DIR,
    OUTPUT_FILE,
    SEEDS,
    interpreter_note,
    layer_progress,
    network_options,
    open_generator,
    random_weights_note,
)
from sgtriton.images import image_mode, save_image, seed_to_z, to_pil, to_uint8


@click.command("convert")
@click.argument("source", metavar="IN", type=click.Path(exists=True, dir_okay=False))
@click.argument("destination", metavar="OUT", type=OUTPUT_FILE)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Insist on the input format instead of detecting it; with --nvlabs-src, 'nvlabs' names the "
                   "output format and the input is detected.")
@click.option("--nvlabs-src", type=click.Path(exists=True, file_okay=False), default=None,
              help="Write OUT as an NVlabs snapshot built by the Generator of this stylegan2-ada-pytorch or "
                   "stylegan3 source tree (its code is imported).")
def convert_command(source: str, destination: str, fmt: str | None, nvlabs_src: str | None) -> None:
    """Convert IN (NVlabs/TensorFlow .pkl, rosinality .pt, sgtriton .safetensors) to native OUT.

    With --format nvlabs --nvlabs-src DIR, OUT is an NVlabs snapshot built by that tree's Generator."""
    if nvlabs_src is not None:
        _export_nvlabs(source, destination, fmt, nvlabs_src)
        return
    try:
        G = convert(source, destination, format=fmt)
    except (CheckpointError, ValueError) as exc:  # unreadable input; a destination that is the source
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {destination}: {describe(G.config)}")


def _export_nvlabs(source: str, destination: str, fmt: str | None, nvlabs_src: str) -> None:
    from sgtriton.checkpoints import load
    from sgtriton.checkpoints.nvlabs_export import export_nvlabs

    if fmt not in (None, "nvlabs"):
        raise click.BadParameter(f"{fmt!r}: with --nvlabs-src the output is an NVlabs snapshot; pass --format nvlabs "
                                 f"or leave it out", param_hint="--format")
    try:
        G = load(source, backend="reference", device="cpu")
        export_nvlabs(G, destination, nvlabs_src)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote NVlabs snapshot {destination}: {describe(G.config)}")


@click.command("mix")
@network_options
@click.option("--rows", "row_seeds", required=True, type=SEEDS, help="Seeds of the rows, e.g. 85,100.")
@click.option("--cols", "col_seeds", required=True, type=SEEDS, help="Seeds of the columns.")
@click.option("--styles", "col_styles", default="0-6", show_default=True, type=INT_LIST,
              help="The ws the column seeds replace (0..num_ws-1).")
@click.option("--trunc", "truncation_psi", type=FINITE_FLOAT, default=None,
              help="Truncation psi [default: the network's, 1 for StyleGAN2, 0.7 for StyleGAN1].")
@click.option("--class", "class_idx", type=click.IntRange(min=0), default=None,
              help="Class label (conditional networks).")
@click.option("--noise-mode", type=click.Choice(NOISE_MODE_NAMES), default="const", show_default=True)
@click.option("--outdir", required=True, type=OUTPUT_DIR, help="Where to write the images (created if missing).")
def mix_command(network: str | None, preset: str | None, resolution: int | None, block: str | None,
                block_kwargs: str | None, init_seed: int, backend: str | None, device: str | None,
                row_seeds: list[int], col_seeds: list[int], col_styles: list[int], truncation_psi: float | None,
                class_idx: int | None, noise_mode: str, outdir: os.PathLike[str]) -> None:
    """Render a style-mixing grid (NVlabs style_mixing.py)."""
    device = device or default_device()
    G = open_generator(network, preset, resolution, block, block_kwargs, init_seed, backend, device)
    bad = [s for s in col_styles if not 0 <= s < G.num_ws]
    if bad:
        raise click.BadParameter(f"{bad[:5]}{'...' if len(bad) > 5 else ''}: this network has ws 0..{G.num_ws - 1}",
                                 param_hint="--styles")
    c = None
    if G.c_dim:
        if class_idx is None or not 0 <= class_idx < G.c_dim:
            raise click.BadParameter(f"{class_idx!r}: a conditional network needs a class in 0..{G.c_dim - 1}",
                                     param_hint="--class")
        c = torch.zeros([1, G.c_dim], device=device)
        c[0, class_idx] = 1
    psi = G.config.truncation_psi if truncation_psi is None else truncation_psi
    random_weights_note(G, network)
    if interpreter_note(G):
        layer_progress(G, 1 + len(row_seeds) * len(col_seeds))
    os.makedirs(outdir, exist_ok=True)

    seeds = sorted(set(row_seeds + col_seeds))
    z = torch.cat([seed_to_z(s, G.z_dim) for s in seeds]).to(device)
    with torch.no_grad():
        ws = G.mapping(z, None if c is None else c.repeat(len(seeds), 1), truncation_psi=psi,
                       truncation_cutoff=G.config.truncation_cutoff)
        w_of = dict(zip(seeds, ws, strict=True))
        images = {(s, s): img for s, img in zip(seeds, to_uint8(G.synthesis(ws, noise_mode=noise_mode)), strict=True)}
        for row in tqdm(row_seeds, desc="mixing", disable=len(row_seeds) * len(col_seeds) < 8):
            for col in col_seeds:
                w = w_of[row].clone()
                w[col_styles] = w_of[col][col_styles]
                images[(row, col)] = to_uint8(G.synthesis(w[None], noise_mode=noise_mode))[0]

    for (row, col), image in images.items():
        save_image(image, os.path.join(outdir, f"{row}-{col}.png"))
    size = G.img_resolution
    mode = image_mode(G.img_channels)
    canvas = PIL.Image.new(mode, (size * (len(col_seeds) + 1), size * (len(row_seeds) + 1)))
    for i, row in enumerate([None, *row_seeds]):
        for j, col in enumerate([None, *col_seeds]):
            if row is None and col is None:
                continue
            key = (col, col) if row is None else (row, row) if col is None else (row, col)
            canvas.paste(to_pil(images[key]), (size * j, size * i))
    save_image(canvas, os.path.join(outdir, "grid.png"))
    click.echo(f"wrote {len(images)} images and grid.png to {outdir}")
