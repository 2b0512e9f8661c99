"""The click commands the CLI attaches: ``convert IN OUT`` and ``mix``."""

import numpy as np
import PIL.Image
import torch
from checkpoint_builders import nvlabs_pickle, small_generator
from click.testing import CliRunner

from sgtriton.checkpoints import load
from sgtriton.checkpoints.commands import convert_command, mix_command
from sgtriton.images import parse_range, to_uint8


def test_parse_range():
    assert parse_range("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_range("85,100") == [85, 100]


def test_convert_command(tmp_path):
    G = small_generator(img_resolution=8)
    src, dst = tmp_path / "snap.pkl", tmp_path / "g.safetensors"
    src.write_bytes(nvlabs_pickle(G))
    result = CliRunner().invoke(convert_command, [str(src), str(dst)])
    assert result.exit_code == 0, result.output
    assert load(dst).config == G.config
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04junk")
    result = CliRunner().invoke(convert_command, [str(bad), str(dst)])
    assert result.exit_code != 0 and "Error" in result.output


def test_mix_command_follows_style_mixing_py(tmp_path):
    G = small_generator(img_resolution=8)
    src = tmp_path / "snap.pkl"
    src.write_bytes(nvlabs_pickle(G))
    out = tmp_path / "out"
    args = ["--network", str(src), "--rows", "1,2", "--cols", "3", "--styles", "0-1", "--outdir", str(out)]
    result = CliRunner().invoke(mix_command, args)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["1-1.png", "1-3.png", "2-2.png", "2-3.png", "3-3.png", "grid.png"]
    assert PIL.Image.open(out / "grid.png").size == (16, 24)

    ws = G.mapping(torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in (1, 3)])), None)
    mixed = ws[0].clone()
    mixed[[0, 1]] = ws[1][[0, 1]]
    expected = to_uint8(G.synthesis(mixed[None], noise_mode="const"))[0]
    got = np.asarray(PIL.Image.open(out / "1-3.png"))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1

    result = CliRunner().invoke(mix_command, [*args[:6], "--styles", "0-99", "--outdir", str(out)])
    assert result.exit_code != 0 and "ws 0..3" in result.output
