"""``sgtriton autotune``: tune every kernel a generator launches on this GPU, show or clear the cache.

    sgtriton autotune --preset stylegan2-f --resolution 1024 --batch 1,8 --dtype fp16,fp32
    sgtriton autotune --network ffhq.pkl --batch 1
    sgtriton autotune --show
    sgtriton autotune --clear
    sgtriton autotune --preset stylegan2-f --resolution 256 --export-table sm_90.json

Without a CUDA GPU (Triton's interpreter) there is nothing to measure: the command says so,
lists the declared kernels and the config each will run with, and exits successfully.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import click

from sgtriton.autotune.cache import autotune_dir, cache_files, clear_cache, read_cache_file
from sgtriton.autotune.environment import current_environment
from sgtriton.autotune.policy import ConfigPolicy, install
from sgtriton.autotune.tables import table_from_cache
from sgtriton.autotune.warmup import normalize_dtype, warmup
from sgtriton.config import PRESETS
from sgtriton.ops._runtime import KERNELS, KernelConfig, interpreter_active

NO_GPU_MESSAGE = (
    "sgtriton autotune: no CUDA GPU here{why}, so there is nothing to benchmark: kernels run under "
    "Triton's interpreter, where only each kernel's default config runs and timings say nothing about a "
    "GPU. Nothing was measured and the cache was not changed. Run this command on the GPU you will "
    "generate on; until then every kernel uses its default config (or a shipped table for its GPU family)."
)


def _parse_batch(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(size < 1 for size in sizes):
        raise click.UsageError(f"--batch={text!r}: expected positive integers separated by commas, e.g. 1,8")
    return sizes


def _parse_dtypes(text: str) -> list[str]:
    try:
        return [normalize_dtype(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.UsageError(f"--dtype={text!r}: expected fp32, fp16 or both (fp16,fp32)") from None


def _declared_kernels() -> dict:
    """Import every op module so that all kernels are declared; return :data:`KERNELS`."""
    import sgtriton.ops

    for module in pkgutil.iter_modules(sgtriton.ops.__path__):
        if module.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"sgtriton.ops.{module.name}")
        except Exception as exc:  # an op module that fails to import is reported, not fatal here
            click.echo(f"warning: sgtriton.ops.{module.name} failed to import ({exc})", err=True)
    return KERNELS


def _format_config(data: dict) -> str:
    try:
        return str(KernelConfig(dict(data["meta"]), int(data["num_warps"]), int(data["num_stages"])))
    except (KeyError, TypeError, ValueError):
        return "?"


def _show(root: str | None) -> None:
    files = cache_files(root)
    if not files:
        click.echo(f"autotune cache {autotune_dir(root)} is empty")
        return
    for path in files:
        file = read_cache_file(path)
        if file.problem is not None:
            click.echo(f"{path}: unusable -- {file.problem}")
            continue
        env = file.environment
        click.echo(f"{path}: {env.gpu} (sm_{env.capability}), triton {env.triton}, torch {env.torch}, "
                   f"{len(file.entries)} entries")
        rows = [("kernel", "shape bucket", "config", "best (ms)", "default (ms)", "speedup", "tuned")]
        for entry in sorted(file.entries.values(), key=lambda e: (e.kernel, e.bucket)):
            rows.append((entry.kernel, entry.bucket, _format_config(entry.config),
                         f"{entry.best_ms:.4f}" if entry.best_ms is not None else "-",
                         f"{entry.default_ms:.4f}" if entry.default_ms is not None else "-",
                         f"{entry.speedup:.2f}x" if entry.speedup is not None else "-", entry.tuned_at))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            click.echo("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def _explain_no_gpu(why: str) -> None:
    click.echo(NO_GPU_MESSAGE.format(why=why))
    kernels = _declared_kernels()
    if not kernels:
        click.echo("\nno Triton kernels are declared yet.")
        return
    click.echo(f"\n{len(kernels)} declared kernel(s); on a GPU each one this generator launches is tuned per "
               f"shape bucket:")
    rows = [("kernel", "configs", "default config", "dtypes")]
    rows += [(s.name, str(len(s.configs)), str(s.default_config), ",".join(s.dtypes))
             for s in sorted(kernels.values(), key=lambda s: s.name)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def _open_generator(network: str | None, preset: str | None, resolution: int | None, device: str):
    from sgtriton.generator import build_generator

    if network is not None:
        try:
            from sgtriton.checkpoints import load
        except ImportError as exc:
            raise click.UsageError(f"--network: checkpoint loading is not available ({exc})") from None
        return load(network, backend="triton", device=device)
    try:
        return build_generator(preset, backend="triton", seed=0, device=device,
                               img_resolution=resolution or 1024)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None


def _check_generator_args(network: str | None, preset: str | None, resolution: int | None) -> None:
    if network is not None:
        if preset is not None or resolution is not None:
            raise click.UsageError("--network: a checkpoint fixes the architecture; drop --preset/--resolution")
        return
    from sgtriton.config import make_config

    try:
        make_config(preset, img_resolution=resolution or 1024)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None


@click.command("autotune")
@click.option("--network", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Checkpoint whose generator to tune.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None, help="Tune a preset generator instead.")
@click.option("--resolution", type=int, default=None, help="Output resolution for --preset [default: 1024].")
@click.option("--batch", "batch", default="1", show_default=True, help="Batch sizes, comma-separated (e.g. 1,8).")
@click.option("--dtype", "dtype", default="fp32", show_default=True,
              help="Generator precision(s): fp32, fp16 or fp16,fp32.")
@click.option("--device", default=None, help="CUDA device [default: cuda].")
@click.option("--retune", is_flag=True, help="Measure again even what the cache already holds.")
@click.option("--show", is_flag=True, help="Print the cache (then exit, unless a generator to tune is given).")
@click.option("--clear", is_flag=True, help="Delete the cache (then exit, unless a generator to tune is given).")
@click.option("--export-table", type=click.Path(dir_okay=False), default=None,
              help="Write this GPU's cache as a shippable table (JSON) to this path.")
@click.option("--cache-dir", default=None, help="Cache root [default: $SGTRITON_CACHE_DIR or ~/.cache/sgtriton].")
def autotune_command(network, preset, resolution, batch, dtype, device, retune, show, clear, export_table,
                     cache_dir):
    """Tune every kernel a generator launches, per batch size and precision, and cache the result."""
    if clear:
        removed = clear_cache(cache_dir)
        click.echo(f"removed {len(removed)} tuning file(s) from {autotune_dir(cache_dir)}")
    if show:
        _show(cache_dir)
    tune_requested = network is not None or preset is not None
    if not tune_requested and export_table is None:
        if show or clear:
            return
        raise click.UsageError(f"pass --network PATH or --preset NAME (one of {', '.join(sorted(PRESETS))}), "
                               f"or --show / --clear")
    if tune_requested:
        _check_generator_args(network, preset, resolution)
    sizes, precisions = _parse_batch(batch), _parse_dtypes(dtype)

    import torch

    device = device or "cuda"
    on_cuda = torch.device(device).type == "cuda"
    index = torch.device(device).index
    if on_cuda and index is not None and torch.cuda.is_available():
        torch.cuda.set_device(index)  # Triton launches on the current device
    environment = current_environment() if on_cuda else None
    if environment is None:
        why = f" (device {device!r})" if not on_cuda else (" (Triton's interpreter is on)" if interpreter_active()
                                                           else "")
        if export_table is not None:
            raise click.UsageError(f"--export-table: no CUDA GPU here{why}; export on the GPU whose cache you "
                                   f"want to ship")
        _explain_no_gpu(why)
        return

    policy = install(ConfigPolicy("full", cache_root=cache_dir, environment=environment))
    if tune_requested:
        from tqdm import tqdm

        G = _open_generator(network, preset, resolution, device)
        with tqdm(total=0, desc="tuning", unit="trial") as bar:
            report = warmup(G, batch_sizes=sizes, dtypes=precisions, policy="full", retune=retune, progress=bar)
        click.echo(report.format())
        cache = policy.cache(environment)
        click.echo(f"cache: {cache.path}")
    if export_table is not None:
        cache = policy.cache(environment)
        table = table_from_cache(cache.entries(), environment)
        Path(export_table).write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
        click.echo(f"wrote {len(table['entries'])} entries for {environment.family} ({environment.gpu}) "
                   f"to {export_table}")
