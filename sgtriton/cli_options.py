"""What a user may type on the command line: parameter types, the shared network options, and
opening the generator they name.

Every value is checked while click parses the command line, before any work starts, and a
rejected value is reported by click as one line naming the option, the value and the form
expected. The types are declarative (``type=SEEDS``) so ``generate``, ``mix`` and ``plan`` check
the same way. Nothing here imports torch at import time: ``sgtriton --help`` and ``--version``
stay fast, and the types import what they need only when a value is given.

An output folder is created while the command line is parsed, so a path that cannot be a folder
is reported before any work; :class:`OutputDir` records the folders it created (``ctx.meta``) and
the command group removes them again, if still empty, when the command fails.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

#: ``ctx.meta`` key: folders an :class:`OutputDir` value created (outermost first).
CREATED_DIRS_KEY = "sgtriton.created_output_dirs"

SEED_LIMIT = 2**32  # numpy RandomState accepts seeds in [0, 2**32)


class IntListType(click.ParamType):
    """``'0-7'``, ``'0,1,4-6'`` or ``'0, 1'`` -> a list of non-negative ints (below ``limit`` if given)."""

    name = "list"

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "LIST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        from sgtriton.images import parse_range

        name = param.opts[0] if param is not None and param.opts else "value"
        try:
            seeds = parse_range(value, name, limit=self.limit)
        except ValueError as exc:
            self.fail(str(exc).removeprefix(f"{name}="), param, ctx)
        return seeds


class FiniteFloat(click.ParamType):
    """A float that is neither NaN nor infinite (``--trunc nan`` would render black images)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r}: expected a number, e.g. 0.7", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r}: expected a finite number, e.g. 0.7", param, ctx)
        return number


class ResolutionType(click.ParamType):
    """A power of two >= 4: the resolutions a StyleGAN synthesis network is built for."""

    name = "resolution"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "R"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r}: expected a power of two >= 4, e.g. 256", param, ctx)
        if number < 4 or number & (number - 1):
            self.fail(f"{number}: expected a power of two >= 4 (4, 8, ..., 1024)", param, ctx)
        return number


class DeviceType(click.ParamType):
    """``cpu``, ``cuda`` or ``cuda:N``; CUDA only where this torch build sees a CUDA device."""

    name = "device"

    def __init__(self, require_available: bool = True) -> None:
        self.require_available = require_available

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "cpu|cuda|cuda:N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        kind, _, index = text.partition(":")
        if kind not in ("cpu", "cuda") or (kind == "cpu" and index) or (index and not index.isdigit()):
            self.fail(f"{value!r}: expected cpu, cuda or cuda:N", param, ctx)
        if kind == "cuda" and self.require_available:
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", built without CUDA")
                self.fail(f"{value!r}: no CUDA device is available ({build}); use --device cpu", param, ctx)
            if index and int(index) >= count:
                self.fail(f"{value!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}", param, ctx)
        return text


class ProjectedW(click.ParamType):
    """A projector ``.npz`` holding a float array ``'w'`` of shape ``[N, num_ws, w_dim]`` (never pickles)."""

    name = "npz"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "FILE.npz"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import numpy as np

        if not isinstance(value, (str, os.PathLike)):
            return value
        shown = os.fspath(value)
        try:
            with open(value, "rb") as f:
                is_zip = f.read(4) == b"PK\x03\x04"
        except OSError as exc:
            self.fail(f"{shown!r}: {exc.strerror or exc}", param, ctx)
        if not is_zip:
            self.fail(f"{shown!r}: not an .npz archive; expected the projector's .npz with a float array 'w'",
                      param, ctx)
        try:
            with np.load(value, allow_pickle=False) as archive:
                if "w" not in archive.files:
                    self.fail(f"{shown!r}: no array 'w' (it holds {sorted(archive.files)}); expected the "
                              "projector's .npz with w of shape [N, num_ws, w_dim]", param, ctx)
                w = archive["w"]
        except click.BadParameter:
            raise
        except (OSError, ValueError, EOFError) as exc:
            reason = "'w' holds pickled objects, which are never loaded" if "pickle" in str(exc) else str(exc)
            self.fail(f"{shown!r}: {reason}; expected an .npz with a float array 'w'", param, ctx)
        if w.dtype.kind != "f" or w.ndim != 3:
            self.fail(f"{shown!r}: 'w' is {w.dtype} of shape {list(w.shape)}; expected a float array "
                      "[N, num_ws, w_dim]", param, ctx)
        return w


def _missing_folders(path: Path) -> list[Path]:
    """The folders from the nearest existing ancestor down to ``path`` that do not exist yet."""
    missing = []
    while not path.exists() and not path.is_symlink():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    return missing[::-1]


def _check_writable_parent(path: Path, param: click.Parameter | None, ctx: click.Context | None,
                           fail: Callable[..., Any]) -> list[Path]:
    missing = _missing_folders(path)
    existing = (missing[0].parent if missing else path).resolve()
    if existing.exists() and not existing.is_dir():
        fail(f"{os.fspath(path)!r}: {os.fspath(existing)!r} is a file, not a folder", param, ctx)
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{os.fspath(path)!r}: the folder {os.fspath(existing)!r} is not writable", param, ctx)
    return missing


class OutputDir(click.ParamType):
    """A folder to write into: existing, or created now with its missing parents."""

    name = "folder"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DIR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        if path.exists() and not path.is_dir():
            self.fail(f"{os.fspath(path)!r} exists and is not a folder", param, ctx)
        missing = _check_writable_parent(path, param, ctx, self.fail)
        for folder in missing:
            try:
                folder.mkdir()
            except FileExistsError:
                if folder.is_dir():  # made meanwhile by another process (the other ranks of a torchrun)
                    continue
                _remove_empty(ctx.meta.pop(CREATED_DIRS_KEY, []) if ctx is not None else [])
                self.fail(f"{os.fspath(path)!r}: {os.fspath(folder)!r} exists and is not a folder", param, ctx)
            except OSError as exc:
                _remove_empty(ctx.meta.pop(CREATED_DIRS_KEY, []) if ctx is not None else [])
                self.fail(f"{os.fspath(path)!r}: cannot create {os.fspath(folder)!r} ({exc.strerror or exc})",
                          param, ctx)
            if ctx is not None:
                ctx.meta.setdefault(CREATED_DIRS_KEY, []).append(folder)
        return path


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (outermost first) that are still empty, innermost first."""
    for folder in reversed(folders):
        try:
            folder.rmdir()  # refuses a folder that holds anything
        except OSError:
            pass


def remove_unused_output_dirs(ctx: click.Context) -> None:
    """Remove the output folders this command line created, if nothing was written into them."""
    _remove_empty(ctx.meta.pop(CREATED_DIRS_KEY, []))


class OutputFile(click.ParamType):
    """A file to write: its folder must exist (nothing is created for a single output file)."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        path = Path(value)
        if path.is_dir():
            example = os.fspath(path / "G.safetensors")
            self.fail(f"{os.fspath(path)!r} is a folder; expected a file name, e.g. {example!r}", param, ctx)
        parent = path.parent
        if not parent.is_dir():
            self.fail(f"{os.fspath(path)!r}: the folder {os.fspath(parent)!r} does not exist; create it first",
                      param, ctx)
        if not os.access(parent, os.W_OK | os.X_OK):
            self.fail(f"{os.fspath(path)!r}: the folder {os.fspath(parent)!r} is not writable", param, ctx)
        return os.fspath(path)


class PresetChoice(click.ParamType):
    """A preset name from :data:`sgtriton.config.PRESETS` (read when needed, so --help stays light)."""

    name = "preset"

    @staticmethod
    def names() -> list[str]:
        from sgtriton.config import PRESETS

        return sorted(PRESETS)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value not in self.names():
            self.fail(f"{value!r}: expected one of {', '.join(self.names())}", param, ctx)
        return value


SEEDS = IntListType(SEED_LIMIT)
INT_LIST = IntListType()
FINITE_FLOAT = FiniteFloat()
RESOLUTION = ResolutionType()
DEVICE = DeviceType()
PLAN_DEVICE = DeviceType(require_available=False)
PROJECTED_W = ProjectedW()
OUTPUT_DIR = OutputDir()
OUTPUT_FILE = OutputFile()
PRESET = PresetChoice()
#: The CLI spelling of :data:`sgtriton.backends.BACKENDS` (a test keeps the two equal).
BACKEND_NAMES = ("reference", "triton", "auto")
NOISE_MODE_NAMES = ("random", "const", "none")


def network_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--network`` or ``--preset [--resolution --block --block-kwargs --init-seed]``, ``--backend``, ``--device``."""
    options = [
        click.option("--network", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Checkpoint: NVlabs .pkl, rosinality .pt, TensorFlow .pkl or sgtriton .safetensors."),
        click.option("--preset", type=PRESET, default=None,
                     help="Build a randomly initialised generator from a preset instead (an unknown name lists them)."),
        click.option("--resolution", type=RESOLUTION, default=None,
                     help="Output resolution for --preset, a power of two >= 4 [default: 1024]."),
        click.option("--block", default=None, help="Registered block type for every style layer (`sgtriton blocks`)."),
        click.option("--block-kwargs", default=None, help="Block options as a JSON object."),
        click.option("--init-seed", type=click.IntRange(min=0, max=SEED_LIMIT - 1), default=0, show_default=True,
                     help="Seed of the random initial weights when no --network is given."),
        click.option("--backend", type=click.Choice(BACKEND_NAMES), default=None,
                     help="reference, triton or auto [default: $SGTRITON_BACKEND or auto]."),
        click.option("--device", type=DEVICE, default=None, help="[default: cuda if available, else cpu]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def parse_block_kwargs(text: str | None) -> dict:
    """``--block-kwargs`` JSON text -> a dict (an empty dict when not given)."""
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"--block-kwargs={text!r}: expected a JSON object, e.g. "
                               f"'{{\"bank_size\": 4}}' ({exc})") from exc
    if not isinstance(value, dict):
        raise click.UsageError(f"--block-kwargs={text!r}: expected a JSON object, e.g. '{{\"bank_size\": 4}}'")
    return value


def open_generator(network: str | None, preset: str | None, resolution: int | None, block: str | None,
                   block_kwargs: str | None, init_seed: int, backend: str | None, device: str | None):
    """The generator the options name: a checkpoint (``--network``) or a random preset generator."""
    from sgtriton.backends import default_device

    device = device or default_device()
    if network is not None:
        if preset is not None or block is not None or resolution is not None or block_kwargs is not None:
            raise click.UsageError("--network: a checkpoint fixes the architecture; drop "
                                   "--preset/--block/--block-kwargs/--resolution")
        from sgtriton.checkpoints import load

        return load(network, backend=backend or "auto", device=device)
    if preset is None:
        raise click.UsageError(f"pass --network PATH or --preset NAME (one of {', '.join(PRESET.names())})")
    from sgtriton.generator import build_generator

    kwargs: dict[str, Any] = {"img_resolution": resolution or 1024}
    if block is not None:
        kwargs["block"] = block
    if block_kwargs:
        kwargs["block_kwargs"] = parse_block_kwargs(block_kwargs)
    try:
        return build_generator(preset, backend=backend, seed=init_seed, device=device, **kwargs)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(cli_spelling(str(exc))) from exc


#: API keyword -> the option a user typed, for messages raised below the command line.
_OPTION_OF_KEYWORD = {
    "img_resolution": "--resolution",
    "block_kwargs": "--block-kwargs",
    "block": "--block",
    "truncation_psi": "--trunc",
    "truncation_cutoff": "--trunc-cutoff",
}


def cli_spelling(message: str) -> str:
    """Rewrite API keywords (``img_resolution=``) in ``message`` as the options typed (``--resolution=``)."""
    import re

    for keyword, option in _OPTION_OF_KEYWORD.items():
        message = re.sub(rf"(?<![\w-]){keyword}(?=[=:])", option, message)
    return message


def random_weights_note(G: Any, network: str | None) -> None:
    """One line on stderr when ``G`` has random weights: what the images are and how to load real ones."""
    if network is not None:
        return
    click.echo("note: random weights (the images are coloured blobs); load a real checkpoint with --network FILE: "
               "NVlabs/rosinality/TF pickles (FFHQ, AFHQ, MetFaces ... from the NVlabs StyleGAN model pages)",
               err=True)


def interpreter_note(G: Any) -> bool:
    """Warn once when ``G`` will run Triton kernels under the interpreter; return whether it will."""
    from sgtriton.ops._runtime import interpreter_active

    if G.backend != "triton" or not interpreter_active():
        return False
    click.echo(f"note: no GPU, so --backend triton runs the kernels under Triton's interpreter, a correctness "
               f"tool: about {INTERPRETER_TIME_PER_IMAGE} on 2 CPU cores (--backend reference: well under a "
               f"second); progress is shown per layer", err=True)
    return True


#: Measured on a 2-core machine without a GPU (README, quick start).
INTERPRETER_TIME_PER_IMAGE = "2 minutes per image at 8x8, 15 at 32x32"


def layer_progress(G: Any, calls: int, desc: str = "layers") -> Any:
    """A progress bar advanced by every synthesis layer of ``G`` over ``calls`` synthesis calls (long runs).

    Forward hooks on the layers (conv0, conv1, torgb) of every synthesis block; the bar closes
    itself after the last layer of the last call.
    """
    from tqdm import tqdm

    layers = [layer for block in G.synthesis.children() for layer in block.children()]
    bar = tqdm(total=len(layers) * calls, desc=desc, unit="layer")

    def advance(module: Any, inputs: Any, output: Any) -> None:
        bar.update(1)
        if bar.n >= bar.total:
            bar.close()

    for module in layers:
        module.register_forward_hook(advance)
    return bar
