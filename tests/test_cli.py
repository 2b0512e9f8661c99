"""The command line: generate (NVlabs generate.py conventions), plan, blocks."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sgtriton import build_generator
from sgtriton.cli import main
from sgtriton.images import parse_range, seed_to_z, to_uint8

SMALL_PRESET_ARGS = ["--preset", "stylegan2-f", "--resolution", "8"]


def run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result


def test_generate_writes_seed_files_and_grid_equal_to_the_python_api(tmp_path):
    result = run(["generate", *SMALL_PRESET_ARGS, "--seeds", "0-2,5", "--trunc", "0.7",
                  "--outdir", str(tmp_path), "--init-seed", "3", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["grid.png", "manifest.jsonl", "seed0000.png", "seed0001.png", "seed0002.png", "seed0005.png"]
    G = build_generator("stylegan2-f", img_resolution=8, seed=3)
    img = G(seed_to_z(5, 512), None, truncation_psi=0.7, noise_mode="const")
    expected = to_uint8(img)[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "seed0005.png")), expected)
    assert Image.open(tmp_path / "grid.png").size == (16, 16)


def test_seed_to_z_and_uint8_follow_nvlabs():
    z = seed_to_z(7, 4)
    assert z.dtype == torch.float64
    assert np.array_equal(z.numpy(), np.random.RandomState(7).randn(1, 4))
    img = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0]).reshape(1, 1, 1, 5)
    assert to_uint8(img).ravel().tolist() == [0, 0, 128, 255, 255]
    assert to_uint8(torch.tensor([[[[-0.5]]]])).item() == int(-0.5 * 127.5 + 128)


def test_one_channel_images_are_grayscale(tmp_path):
    from sgtriton.cli import generate  # noqa: F401  (command exists)

    G = build_generator("stylegan2-f", img_resolution=4, img_channels=1, seed=0)
    from sgtriton.images import save_image

    save_image(to_uint8(G(seed_to_z(0, 512), None, noise_mode="const"))[0], tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "L"


def test_stylegan1_uses_its_truncation_defaults(tmp_path, monkeypatch):
    seen = {}
    from sgtriton import generator as generator_module

    original = generator_module.Generator.forward

    def spy(self, z, c=None, truncation_psi=1, truncation_cutoff=None, **kwargs):
        seen["trunc"] = (truncation_psi, truncation_cutoff)
        return original(self, z, c, truncation_psi, truncation_cutoff, **kwargs)

    monkeypatch.setattr(generator_module.Generator, "forward", spy)
    result = run(["generate", "--preset", "stylegan1", "--resolution", "8", "--seeds", "1",
                  "--outdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen["trunc"] == (0.7, 8)
    run(["generate", "--preset", "stylegan1", "--resolution", "8", "--seeds", "1", "--trunc", "1",
         "--outdir", str(tmp_path)])
    assert seen["trunc"] == (1.0, 8)  # the network's cutoff unless --trunc-cutoff says otherwise


@pytest.mark.parametrize("args,needle", [
    (["generate", "--seeds", "0", "--outdir", "x"], "--network PATH or --preset"),
    (["generate", *SMALL_PRESET_ARGS, "--seeds", "a-b", "--outdir", "x"], "'--seeds': 'a-b'"),
    (["generate", *SMALL_PRESET_ARGS, "--outdir", "x"], "--seeds: required"),
    (["generate", "--preset", "stylegan2-f", "--resolution", "12", "--seeds", "0", "--outdir", "x"],
     "'--resolution': 12"),
    (["generate", *SMALL_PRESET_ARGS, "--block", "moddemod", "--block-kwargs", "[1]", "--seeds", "0",
      "--outdir", "x"], "--block-kwargs"),
    (["generate", *SMALL_PRESET_ARGS, "--block", "nope", "--seeds", "0", "--outdir", "x"], "block='nope'"),
])
def test_bad_cli_input_is_reported(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert needle in result.output


def test_conditional_network_requires_class(tmp_path, monkeypatch):
    import sgtriton.cli as cli

    G = build_generator("stylegan2-f", img_resolution=4, c_dim=3, seed=0)
    monkeypatch.setattr(cli, "open_generator", lambda *a, **k: G)
    result = CliRunner().invoke(main, ["generate", "--preset", "stylegan2-f", "--seeds", "0",
                                       "--outdir", str(tmp_path)])
    assert result.exit_code == 2 and "'--class': missing: a conditional network needs a class in 0..2" in result.output
    result = CliRunner().invoke(main, ["generate", "--preset", "stylegan2-f", "--seeds", "0", "--class", "2",
                                       "--outdir", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_projected_w_renders_proj_files(tmp_path):
    G = build_generator("stylegan2-f", img_resolution=8, seed=0)
    ws = G.mapping(torch.randn(2, 512), None).numpy()
    np.savez(tmp_path / "w.npz", w=ws)
    result = run(["generate", *SMALL_PRESET_ARGS, "--projected-w", str(tmp_path / "w.npz"),
                  "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.jsonl", "proj00.png", "proj01.png"]


def test_parse_range():
    assert parse_range("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError, match="descending"):
        parse_range("5-1")


def test_plan_and_blocks_commands():
    result = run(["plan", "stylegan2-f", "--resolution", "1024"])
    assert result.exit_code == 0
    assert "total parameters: 30,370,060" in result.output
    launches = int(result.output.split("kernel launches (ops) per forward: ")[1].split()[0])
    result = run(["plan", "stylegan2-f", "--resolution", "1024", "--backend", "triton", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["totals"]["parameters"] == 30_370_060 and plan["generator"]["backend"] == "triton"
    assert plan["totals"]["launches_per_forward"] == sum(len(n["kernels"]) for n in plan["nodes"])
    assert {"name", "kind", "out_shape", "flops", "kernels"} <= set(plan["nodes"][0])
    assert launches > 0
    result = run(["blocks"])
    for name in ("adain", "moddemod", "revised"):
        assert name in result.output
    assert "sgtriton" in result.output


@pytest.mark.parametrize("command", [[], ["generate"], ["plan"], ["blocks"]])
def test_help_everywhere(command):
    result = run([*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_generate_from_a_checkpoint_matches_the_python_api(tmp_path):
    import sgtriton

    G = build_generator("stylegan2-f", img_resolution=8, c_dim=2, seed=4)
    G.mapping.w_avg.normal_()
    sgtriton.save(G, tmp_path / "g.safetensors")
    result = run(["generate", "--network", str(tmp_path / "g.safetensors"), "--seeds", "3,4", "--trunc", "0.5",
                  "--class", "1", "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    label = torch.tensor([[0.0, 1.0]])
    expected = to_uint8(G(seed_to_z(4, 512), label, truncation_psi=0.5, noise_mode="const"))[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "seed0004.png")), expected)
    result = CliRunner().invoke(main, ["generate", "--network", str(tmp_path / "g.safetensors"), "--preset",
                                       "stylegan2-f", "--seeds", "0", "--outdir", str(tmp_path / "o2")])
    assert result.exit_code != 0 and "--network: a checkpoint fixes the architecture" in result.output
