"""The ``sgtriton`` command line: ``generate``, ``plan``, ``blocks``, ``info`` (and the commands of
the checkpoint, kernel and tuning modules). ``generate`` mirrors NVlabs ``generate.py``:
``--network --seeds --trunc --class --noise-mode --outdir --projected-w``.

User mistakes are answered in one place, :class:`CommandGroup`: one ``Error: ...`` line naming the
option or file and what was expected, exit status 2 for a malformed command line and 1 when the
command ran into a problem with what it was given (an unreadable checkpoint, a path it cannot
write). ``--debug`` or ``SGTRITON_DEBUG=1`` shows the traceback instead. Commands are imported
when invoked, so ``sgtriton --help`` and ``--version`` never import torch or Triton.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from sgtriton.cli_options import (
    BACKEND_NAMES,
    FINITE_FLOAT,
    NOISE_MODE_NAMES,
    OUTPUT_DIR,
    PLAN_DEVICE,
    PRESET,
    PROJECTED_W,
    RESOLUTION,
    SEEDS,
    cli_spelling,
    interpreter_note,
    layer_progress,
    network_options,
    open_generator,
    parse_block_kwargs,
    random_weights_note,
    remove_unused_output_dirs,
)
from sgtriton.generation.writer import FORMATS as IMAGE_FORMATS

DEBUG_ENV = "SGTRITON_DEBUG"

#: Commands defined beside their subsystems: name -> (module, attribute, first line of its docstring).
#: ``sgtriton --help`` lists them from here without importing the module (a test keeps the
#: summaries equal to the commands' own docstrings).
LAZY_COMMANDS = {
    "info": ("sgtriton.info", "info_command",
             "Describe the checkpoint NETWORK: format, architecture, parameters, sha256, what generate runs."),
    "convert": ("sgtriton.checkpoints.commands", "convert_command",
                "Convert IN (NVlabs/TensorFlow .pkl, rosinality .pt, sgtriton .safetensors) to native OUT."),
    "mix": ("sgtriton.checkpoints.commands", "mix_command", "Render a style-mixing grid (NVlabs style_mixing.py)."),
    "autotune": ("sgtriton.autotune.commands", "autotune_command",
                 "Tune every kernel a generator launches, per batch size and precision, and cache the result."),
    "project": ("sgtriton.projection", "project_command",
                "Project images into the W space of a network (NVlabs projector.py)."),
    "kernels": ("sgtriton.inspection.compile_gate", "kernels_command",
                "List the declared Triton kernels; with --report, compile them for sm_80/sm_90 without a GPU."),
}


#: Raised by click >= 8.2 for a group called without a command (older click exits with the help).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class CommandGroup(click.Group):
    """The ``sgtriton`` group: lazily imported commands and every error answered in one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*self.commands, *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands or name not in LAZY_COMMANDS:
            return self.commands.get(name)
        module_name, attribute, _ = LAZY_COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None  # an optional subsystem that is not installed
        command = getattr(module, attribute)
        self.add_command(command, name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                summary = click.Command(name, help=LAZY_COMMANDS[name][2])  # stands in until invoked
                rows.append((name, summary.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BaseException as exc:
            remove_unused_output_dirs(ctx)
            if isinstance(exc, (click.ClickException, click.exceptions.Exit, click.Abort)) or _debug(ctx):
                raise
            translated = user_error(exc)
            if translated is None:
                raise
            raise translated from exc

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # `sgtriton` alone: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.find_root().params.get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def user_error(exc: BaseException) -> click.ClickException | None:
    """The one-line error for an exception caused by what the user gave, else None (a bug: traceback).

    * :class:`~sgtriton.checkpoints.CheckpointError` (a file that is not a usable checkpoint) -> exit 1;
    * ``OSError`` with a file name (a path that cannot be read or written) -> exit 1;
    * ``ValueError`` / ``TypeError`` raised by the API's argument checks -> exit 2, option names as typed.
    """
    errors = sys.modules.get("sgtriton.checkpoints.errors")
    if errors is not None and isinstance(exc, errors.CheckpointError):
        return click.ClickException(str(exc))
    if isinstance(exc, OSError) and exc.filename is not None:
        return click.ClickException(f"{os.fspath(exc.filename)!r}: {exc.strerror or exc}")
    if isinstance(exc, (ValueError, TypeError)) and str(exc):
        return click.UsageError(f"{cli_spelling(str(exc))} (run with --debug for the traceback)")
    return None


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sgtriton")
@click.option("--debug", is_flag=True, help=f"Show tracebacks instead of one-line errors (or {DEBUG_ENV}=1).")
def main(debug: bool) -> None:
    """sgtriton: StyleGAN generators on Triton kernels, proven against PyTorch references."""


def _fail(message: str) -> None:
    raise click.UsageError(message)


def _check_class(G: Any, class_idx: int | None) -> None:
    """A conditional network needs ``0 <= --class < c_dim``."""
    if G.c_dim and (class_idx is None or class_idx >= G.c_dim):
        given = "missing" if class_idx is None else str(class_idx)
        raise click.BadParameter(f"{given}: a conditional network needs a class in 0..{G.c_dim - 1}",
                                 param_hint="'--class'")


def _check_projected_w(G: Any, w: Any) -> None:
    """``--projected-w`` arrays must be ``[N, num_ws, w_dim]`` for this network."""
    if w is not None and tuple(w.shape[1:]) != (G.num_ws, G.w_dim):
        raise click.BadParameter(f"'w' has shape {list(w.shape)}; this network needs [N, {G.num_ws}, {G.w_dim}]",
                                 param_hint="'--projected-w'")


def _check_cutoff(G: Any, cutoff: int | None) -> None:
    """``--trunc-cutoff`` must name ws the network has: ``0 <= cutoff <= num_ws`` (refused, not clamped)."""
    if cutoff is not None and cutoff > G.num_ws:
        raise click.BadParameter(f"{cutoff}: this network has {G.num_ws} ws, so expected 0..{G.num_ws}",
                                 param_hint="'--trunc-cutoff'")


@main.command()
@network_options
@click.option("--seeds", type=SEEDS, default=None,
              help="Seeds in [0, 2**32), e.g. '0-7' or '0,1,4-6' (spaces allowed).")
@click.option("--trunc", "truncation_psi", type=FINITE_FLOAT, default=None,
              help="Truncation psi [default: the generator's own: 1, or 0.7 for StyleGAN1].")
@click.option("--trunc-cutoff", "truncation_cutoff", type=click.IntRange(min=0), default=None,
              help="Truncate only the first N ws, 0 <= N <= num_ws (larger is refused) "
                   "[default: the network's own: all, or 8 for StyleGAN1].")
@click.option("--class", "class_idx", type=click.IntRange(min=0), default=None,
              help="Class label (conditional networks).")
@click.option("--noise-mode", type=click.Choice(NOISE_MODE_NAMES), default="const", show_default=True)
@click.option("--projected-w", type=PROJECTED_W, default=None,
              help="Render the ws of a projector .npz (float array 'w', no pickles) instead of seeds.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--format", "file_format", type=click.Choice(tuple(IMAGE_FORMATS)), default="png",
              show_default=True, help="Image file format (webp is lossless, jpg quality 95, npz uint8 arrays).")
@click.option("--resume", is_flag=True, default=False,
              help="Keep files that match outdir's manifest; regenerate missing or corrupt ones.")
@click.option("--grid/--no-grid", default=True, show_default=True,
              help="Also write grid.png (single-process runs only).")
@click.option("--cuda-graph", is_flag=True, default=False,
              help="Replay the synthesis network from a CUDA graph per batch shape (CUDA only; same images, "
                   "less launch overhead).")
@click.option("--outdir", type=OUTPUT_DIR, required=True, help="Where to write the images (created if missing).")
def generate(network, preset, resolution, block, block_kwargs, init_seed, backend, device, seeds,
             truncation_psi, truncation_cutoff, class_idx, noise_mode, projected_w, batch_size, file_format,
             resume, grid, cuda_graph, outdir):
    """Generate images (seedNNNN.png, grid.png and manifest.jsonl) with NVlabs generate.py conventions.

    Under torchrun the seeds are shared out over the ranks; every file is byte-identical to a
    single-process run's."""
    from sgtriton.generation import distributed
    from sgtriton.generation.manifest import ManifestError
    from sgtriton.generation.run import GenerationError, run_generation

    if projected_w is None and seeds is None:
        _fail("--seeds: required unless --projected-w is given")
    try:
        with distributed.session(device) as topology:
            if cuda_graph and topology.device.type != "cuda":
                _fail(f"--cuda-graph needs a CUDA device (got --device {topology.device}); drop --cuda-graph "
                      f"to run eagerly")
            G = open_generator(network, preset, resolution, block, block_kwargs, init_seed, backend,
                               str(topology.device))
            _check_cutoff(G, truncation_cutoff)
            _check_class(G, class_idx)
            _check_projected_w(G, projected_w)
            if topology.is_main:
                random_weights_note(G, network)
                if interpreter_note(G):
                    items = len(projected_w) if projected_w is not None else len(seeds)
                    layer_progress(G, -(-items // (batch_size * topology.world_size)))
                if projected_w is not None and seeds is not None:
                    click.echo("warning: --seeds is ignored when using --projected-w", err=True)
            run_generation(G, outdir, seeds=None if projected_w is not None else seeds, projected_ws=projected_w,
                           class_idx=class_idx, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                           noise_mode=noise_mode, batch_size=batch_size, file_format=file_format, resume=resume,
                           grid=grid, cuda_graph=cuda_graph, topology=topology, echo=click.echo,
                           warn=lambda message: click.echo(message, err=True))
    except (GenerationError, ManifestError, distributed.LaunchError) as exc:
        _fail(str(exc))


@main.command()
@click.argument("preset", type=PRESET, required=False)
@click.option("--network", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Plan a checkpoint's generator instead of a preset.")
@click.option("--resolution", type=RESOLUTION, default=None,
              help="Output resolution, a power of two >= 4 [default: 1024].")
@click.option("--block", default=None, help="Registered block type for every style layer.")
@click.option("--block-kwargs", default=None, help="Block options as a JSON object.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default=None, help="Backend whose kernels to show.")
@click.option("--device", type=PLAN_DEVICE, default=None,
              help="cpu|cuda|cuda:N, the device the plan is for (needs none) [default: cuda if available, else cpu].")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print the plan as JSON: generator, nodes, totals (parameters, FLOPs, launches per forward).")
def plan(preset, network, resolution, block, block_kwargs, backend, device, as_json):
    """Print the generator graph: nodes, shapes, parameters, FLOPs, kernels and launches per forward."""
    from sgtriton.backends import default_device
    from sgtriton.graph.plan import format_plan, meta_generator, plan_json, plan_rows

    device = device or default_device()
    if network is not None:
        if preset is not None or block is not None or resolution is not None or block_kwargs is not None:
            _fail("--network: a checkpoint fixes the architecture; drop PRESET/--block/--block-kwargs/--resolution")
        G = open_generator(network, None, None, None, None, 0, backend, "cpu")
    else:
        if preset is None:
            _fail(f"PRESET: expected one of {', '.join(PRESET.names())} (or --network PATH)")
        kwargs = {"img_resolution": resolution or 1024, "block_kwargs": parse_block_kwargs(block_kwargs)}
        if block is not None:
            kwargs["block"] = block
        try:
            G = meta_generator(preset, backend=backend, **kwargs)
        except (ValueError, TypeError) as exc:
            _fail(cli_spelling(str(exc)))
    rows = plan_rows(G, device)
    if as_json:
        import json

        click.echo(json.dumps(plan_json(G, rows), indent=2))
    else:
        click.echo(format_plan(G, rows))


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


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(__file__))
