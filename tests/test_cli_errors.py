"""Every user mistake gets one ``Error:`` line, the right exit status and no partial output.

Each case goes through the real command line (click's runner with ``catch_exceptions=False``, so a
traceback fails the test; a few cases in real subprocesses). Exit status 2 = the command line is
wrong, 1 = what it names (a file, a folder) is.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import sgtriton
from sgtriton.cli import LAZY_COMMANDS, main

sys.path.insert(0, str(Path(__file__).parent / "checkpoints"))  # the fixture writers beside the loader tests
from checkpoint_builders import rosinality_state_dict, small_generator, torch_save_bytes  # noqa: E402

SMALL = ["--preset", "stylegan2-f", "--resolution", "8"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo never-run",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Bad inputs a user might hand over, and one good small checkpoint."""
    root = tmp_path_factory.mktemp("inputs")
    G = small_generator(img_resolution=8)
    sgtriton.save(G, root / "good.safetensors")
    data = (root / "good.safetensors").read_bytes()
    sd = rosinality_state_dict(G)
    del sd["convs.0.conv.weight"]
    contents = {
        "empty.pkl": b"",
        "text.pkl": b"hello, this is not a checkpoint\n",
        "random.pt": torch_save_bytes({"weights": torch.zeros(3)}),
        "truncated.safetensors": data[: len(data) // 2],
        "malicious.pkl": pickle.dumps(_Evil()),
        "rosinality-missing-layer.pt": torch_save_bytes({"g_ema": sd}),
    }
    for name, blob in contents.items():
        (root / name).write_bytes(blob)
    np.savez(root / "no-w.npz", x=np.zeros(3))
    np.savez(root / "object-w.npz", w=np.array([{"a": 1}], dtype=object))
    np.savez(root / "int-w.npz", w=np.zeros([1, G.num_ws, G.w_dim], dtype=np.int64))
    np.savez(root / "wrong-shape-w.npz", w=np.zeros([1, G.num_ws + 1, G.w_dim], dtype=np.float32))
    (root / "a-file").write_text("x")
    return {p.name: p for p in root.iterdir()}


def _cases(f: dict[str, Path]) -> list[tuple[list[str], int, str]]:
    """(arguments, exit status, text the one line must contain); OUT is the output folder."""
    good = str(f["good.safetensors"])
    gen = ["generate", "--network", good, "--outdir", "OUT"]
    cases = [
        # checkpoints that cannot become a generator (exit 1: the file is wrong)
        *[(["generate", "--network", str(f[n]), "--seeds", "0", "--outdir", "OUT"], 1, needle) for n, needle in (
            ("empty.pkl", "is empty"),
            ("text.pkl", "not a recognised checkpoint"),
            ("random.pt", "unrecognised checkpoint contents"),
            ("truncated.safetensors", "truncated or corrupt"),
            ("malicious.pkl", "refusing to load"),
            ("rosinality-missing-layer.pt", "convs.0.conv.weight"),
        )],
        (["mix", "--network", str(f["malicious.pkl"]), "--rows", "0", "--cols", "1", "--outdir", "OUT"], 1,
         "refusing to load"),
        (["info", str(f["text.pkl"])], 1, "not a recognised checkpoint"),
        (["plan", "--network", str(f["empty.pkl"])], 1, "is empty"),
        (["generate", "--network", "missing.pkl", "--seeds", "0", "--outdir", "OUT"], 2,
         "'missing.pkl' does not exist"),
        # the device
        ([*gen, "--seeds", "0", "--device", "gpu0"], 2, "expected cpu, cuda or cuda:N"),
        ([*gen, "--seeds", "0", "--device", "cpu:1"], 2, "expected cpu, cuda or cuda:N"),
        # seeds
        ([*gen, "--seeds", "4294967296"], 2, "expected values in [0, 4294967296)"),
        ([*gen, "--seeds", "0-99999999999"], 2, "expected values in [0, 4294967296)"),
        ([*gen, "--seeds", "a-b"], 2, "'--seeds'"),
        ([*gen, "--seeds", "5-1"], 2, "descending"),
        ([*gen, "--seeds", ""], 2, "'--seeds'"),
        (gen, 2, "--seeds: required"),
        # truncation
        ([*gen, "--seeds", "0", "--trunc", "nan"], 2, "expected a finite number"),
        ([*gen, "--seeds", "0", "--trunc", "inf"], 2, "expected a finite number"),
        ([*gen, "--seeds", "0", "--trunc", "half"], 2, "expected a number"),
        ([*gen, "--seeds", "0", "--trunc-cutoff", "-3"], 2, "'--trunc-cutoff'"),
        ([*gen, "--seeds", "0", "--trunc-cutoff", "99"], 2, "this network has 4 ws, so expected 0..4"),
        # architecture options
        (["generate", "--preset", "stylegan2-f", "--resolution", "0", "--seeds", "0", "--outdir", "OUT"], 2,
         "'--resolution': 0: expected a power of two >= 4"),
        (["generate", "--preset", "stylegan2-f", "--resolution", "12", "--seeds", "0", "--outdir", "OUT"], 2,
         "expected a power of two >= 4"),
        (["generate", "--preset", "nope", "--seeds", "0", "--outdir", "OUT"], 2, "expected one of revised"),
        (["generate", "--seeds", "0", "--outdir", "OUT"], 2, "pass --network PATH or --preset NAME"),
        ([*gen, "--preset", "stylegan2-f", "--seeds", "0"], 2, "a checkpoint fixes the architecture"),
        (["generate", *SMALL, "--block-kwargs", '{"bogus": 1}', "--seeds", "0", "--outdir", "OUT"], 2,
         "--block-kwargs: unexpected keys ['bogus'] for block 'moddemod'; it takes no options"),
        (["generate", *SMALL, "--block-kwargs", "[1]", "--seeds", "0", "--outdir", "OUT"], 2,
         "--block-kwargs='[1]': expected a JSON object"),
        (["generate", *SMALL, "--block", "nope", "--seeds", "0", "--outdir", "OUT"], 2, "--block='nope'"),
        (["plan", "stylegan2-f", "--resolution", "12"], 2, "expected a power of two >= 4"),
        (["plan"], 2, "PRESET: expected one of"),
        # projected ws
        ([*gen, "--projected-w", str(f["no-w.npz"])], 2, "no array 'w'"),
        ([*gen, "--projected-w", str(f["object-w.npz"])], 2, "pickled objects, which are never loaded"),
        ([*gen, "--projected-w", str(f["int-w.npz"])], 2, "expected a float array"),
        ([*gen, "--projected-w", str(f["wrong-shape-w.npz"])], 2, "this network needs [N, 4, 10]"),
        ([*gen, "--projected-w", str(f["text.pkl"])], 2, "not an .npz archive"),
        # output paths
        (["generate", "--network", good, "--seeds", "0", "--outdir", str(f["a-file"])], 2, "is not a folder"),
        (["generate", "--network", good, "--seeds", "0", "--outdir", str(f["a-file"] / "sub")], 2,
         "is a file, not a folder"),
        (["convert", good, "OUT/x/out.safetensors"], 2, "does not exist; create it first"),
        (["convert", good, str(f["a-file"].parent)], 2, "is a folder; expected a file name"),
        # mix
        (["mix", "--network", good, "--rows", "0", "--cols", "1", "--styles", "0-99", "--outdir", "OUT"], 2,
         "this network has ws 0..3"),
        (["mix", "--network", good, "--rows", "x", "--cols", "1", "--outdir", "OUT"], 2, "'--rows'"),
        (["mix", *SMALL, "--rows", "0", "--cols", "1", "--trunc", "nan", "--outdir", "OUT"], 2, "finite"),
        ([*gen, "--seeds", "0", "--batch-size", "0"], 2, "'--batch-size'"),
        ([*gen, "--seeds", "0", "--noise-mode", "loud"], 2, "'--noise-mode'"),
        ([*gen, "--seeds", "0", "--class", "-1"], 2, "'--class'"),
        # the command line itself
        (["generate", "--bogus"], 2, "No such option '--bogus'"),
        (["nonsense"], 2, "No such command 'nonsense'"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*gen, "--seeds", "0", "--device", "cuda"], 2, "no CUDA device is available"))
        cases.append(([*gen, "--seeds", "0", "--device", "cuda:0"], 2, "use --device cpu"))
    if os.geteuid() == 0 and Path("/proc").is_dir():
        cases.append((["generate", "--network", good, "--seeds", "0", "--outdir", "/proc/sgtriton-out"], 2,
                      "cannot create '/proc/sgtriton-out'"))
    return cases


def test_every_mistake_gives_one_line_and_no_output(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failures = []
    for args, status, needle in _cases(files):
        out = tmp_path / "deep" / "out"
        argv = [a.replace("OUT", str(out)) for a in args]
        result = CliRunner().invoke(main, argv, catch_exceptions=False)
        lines = result.output.strip().splitlines()
        one_line = len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0]
        if result.exit_code != status or not one_line:
            failures.append(f"{args}: exit {result.exit_code}, output {result.output!r}; wanted {status}, {needle!r}")
        if (tmp_path / "deep").exists():
            failures.append(f"{args}: left {sorted(p.name for p in (tmp_path / 'deep').rglob('*'))} behind")
    assert not failures, "\n".join(failures)


def test_a_failure_after_the_output_folder_exists_removes_it_but_keeps_user_files(files, tmp_path, monkeypatch):
    import sgtriton.cli as cli

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "new" / "seed0000.png"))

    monkeypatch.setattr(cli, "random_weights_note", broken)
    result = CliRunner().invoke(main, ["generate", "--network", str(files["good.safetensors"]), "--seeds", "0",
                                       "--outdir", str(tmp_path / "new" / "deeper")], catch_exceptions=False)
    assert (result.exit_code, result.output.strip()) == (1, f"Error: '{tmp_path / 'new' / 'seed0000.png'}': "
                                                            "No space left on device")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("user data")
    result = CliRunner().invoke(main, ["generate", "--network", str(files["good.safetensors"]), "--seeds", "0",
                                       "--outdir", str(tmp_path / "kept")], catch_exceptions=False)
    assert result.exit_code == 1 and (tmp_path / "kept" / "mine.txt").read_text() == "user data"


def test_random_weights_say_so_in_one_line_and_grids_have_no_empty_cell(tmp_path):
    from PIL import Image

    result = CliRunner().invoke(main, ["generate", *SMALL, "--seeds", "0-7", "--outdir", str(tmp_path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note: random weights")]
    assert len(notes) == 1 and "--network" in notes[0] and "FFHQ" in notes[0]
    assert Image.open(tmp_path / "grid.png").size == (4 * 8, 2 * 8)
    result = CliRunner().invoke(main, ["generate", "--network", str(tmp_path / "x.safetensors")])
    assert "note: random weights" not in result.output


def test_mix_takes_a_preset(tmp_path):
    result = CliRunner().invoke(main, ["mix", *SMALL, "--rows", "0", "--cols", "1", "--styles", "0-1",
                                       "--outdir", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0-0.png", "0-1.png", "1-1.png", "grid.png"]


def test_info_describes_a_checkpoint(files):
    import hashlib
    import json

    path = files["good.safetensors"]
    result = CliRunner().invoke(main, ["info", str(path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    G = sgtriton.load(path)
    assert info["format"] == "native"
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["parameters"] == sum(p.numel() for p in G.parameters())
    assert info["architecture"]["num_ws"] == G.num_ws == 4
    assert info["architecture"]["channels"] == {"4": 16, "8": 16}
    assert info["architecture"]["preset_equivalent"] is None  # channel_base 128 is no preset's
    assert info["w_avg"] == "present"
    assert info["generate_runs"]["kernels"]
    text = CliRunner().invoke(main, ["info", str(path)], catch_exceptions=False).output
    assert f"parameters   {info['parameters']:,}" in text


def test_info_names_the_preset_of_a_preset_generator(tmp_path):
    from sgtriton.info import preset_equivalent

    for preset in sgtriton.PRESETS:
        assert preset_equivalent(sgtriton.make_config(preset, img_resolution=32)) == preset


def test_lazy_command_summaries_match_the_commands():
    ctx = main.make_context("sgtriton", ["blocks"])
    for name, (_, _, summary) in LAZY_COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command.help.strip().splitlines()[0] == summary, name


def test_cli_spellings_match_the_library():
    from sgtriton.backends import BACKENDS
    from sgtriton.blocks.base import NOISE_MODES
    from sgtriton.cli_options import BACKEND_NAMES, NOISE_MODE_NAMES

    assert (BACKEND_NAMES, NOISE_MODE_NAMES) == (BACKENDS, NOISE_MODES)


def _sgtriton(*args: str, **env: str) -> subprocess.CompletedProcess:
    code = "import sys; from sgtriton.cli import main; main(sys.argv[1:], prog_name='sgtriton')"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_help_and_version_import_neither_torch_nor_triton():
    code = ("import sys; from click.testing import CliRunner; from sgtriton.cli import main; "
            "r = [CliRunner().invoke(main, a).exit_code for a in (['--help'], ['--version'])]; "
            "print(r, sorted(m for m in ('torch', 'triton', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[0, 0] []", result.stdout + result.stderr


def test_a_real_process_prints_one_line_and_debug_shows_the_traceback(files, tmp_path):
    args = ["generate", "--network", str(files["empty.pkl"]), "--seeds", "0", "--outdir", str(tmp_path / "o")]
    result = _sgtriton(*args)
    assert (result.returncode, result.stdout, result.stderr.strip()) == (
        1, "", f"Error: checkpoint '{files['empty.pkl']}' is empty")
    assert not (tmp_path / "o").exists()
    debug = _sgtriton(*args, SGTRITON_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "CheckpointError" in debug.stderr


def test_debug_flag_lets_the_exception_through(files, tmp_path):
    from sgtriton.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="is empty"):
        CliRunner().invoke(main, ["--debug", "generate", "--network", str(files["empty.pkl"]), "--seeds", "0",
                                  "--outdir", str(tmp_path / "o")], catch_exceptions=False)
    assert not (tmp_path / "o").exists()


def test_triton_without_a_gpu_warns_once_and_progress_counts_every_layer(capsys):
    from sgtriton.cli_options import interpreter_note, layer_progress
    from sgtriton.ops._runtime import interpreter_active

    G = sgtriton.build_generator("stylegan2-f", img_resolution=8, backend="triton")
    assert interpreter_note(G) is interpreter_active()
    notes = [line for line in capsys.readouterr().err.splitlines() if "interpreter" in line]
    assert len(notes) == (1 if interpreter_active() else 0)
    assert interpreter_note(G.set_backend("reference")) is False
    bar = layer_progress(G, calls=2)
    assert bar.total == 2 * 5  # b4: conv1, torgb; b8: conv0, conv1, torgb
    with torch.no_grad():
        for _ in range(2):
            G(torch.zeros(1, G.z_dim), None, noise_mode="const")
    assert bar.n == bar.total


def test_no_command_shows_the_help():
    result = CliRunner().invoke(main, [], catch_exceptions=False)
    assert result.exit_code in (0, 2) and "Commands:" in result.output and "Error" not in result.output


def test_an_output_folder_made_meanwhile_by_another_rank_is_used(tmp_path, monkeypatch):
    # Two ranks of a torchrun both find --outdir missing; the second mkdir meets the first one's folder.
    import click

    from sgtriton.cli_options import OutputDir

    target = tmp_path / "a" / "b"
    real_mkdir = Path.mkdir

    def racing_mkdir(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)  # the other rank wins the race ...
        raise FileExistsError(17, "File exists", str(self))  # ... and this rank's mkdir fails

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    assert OutputDir().convert(str(target), None, None) == target
    assert target.is_dir()

    monkeypatch.setattr(Path, "mkdir", real_mkdir)
    blocker = tmp_path / "file"

    def file_appears(self, *args, **kwargs):
        blocker.write_text("x")  # a file, not a folder, took the name meanwhile
        raise FileExistsError(17, "File exists", str(self))

    monkeypatch.setattr(Path, "mkdir", file_appears)
    with pytest.raises(click.BadParameter, match="exists and is not a folder"):
        OutputDir().convert(str(blocker), None, None)
