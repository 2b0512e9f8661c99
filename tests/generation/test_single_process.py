"""Without torchrun: the same files as ``sgtriton generate`` always wrote, plus the manifest; resume;
per-seed random noise."""

import io
import json
import time

import numpy as np
import pytest
import torch
from generation_helpers import file_digests, run_cli, small_generator
from PIL import Image

import sgtriton
from sgtriton.blocks.layers import per_sample_noise
from sgtriton.generation.seeds import noise_generators
from sgtriton.images import make_grid, seed_to_z, to_uint8


def png_bytes(array: np.ndarray) -> bytes:
    """What the generate command wrote before it had a manifest: PIL's PNG of the uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_without_torchrun_the_files_are_the_ones_generate_always_wrote(small_network, tmp_path):
    seeds, psi = [0, 1, 2, 5, 9], 0.7
    result = run_cli(["generate", "--network", small_network, "--seeds", "0-2,5,9", "--trunc", psi,
                      "--batch-size", 2, "--outdir", tmp_path])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "manifest.jsonl",
                                                          *[f"seed{s:04d}.png" for s in seeds]]
    # The loop the command ran before: batches of --batch-size in seed order, G(z), uint8, PIL PNG.
    G = sgtriton.load(small_network)
    arrays = []
    for start in range(0, len(seeds), 2):
        batch = seeds[start : start + 2]
        z = torch.cat([seed_to_z(s, G.z_dim) for s in batch])
        arrays += list(to_uint8(G(z, torch.zeros([len(batch), 0]), truncation_psi=psi, noise_mode="const")))
    for seed, array in zip(seeds, arrays, strict=True):
        assert (tmp_path / f"seed{seed:04d}.png").read_bytes() == png_bytes(array), seed
    assert (tmp_path / "grid.png").read_bytes() == png_bytes(make_grid(arrays))

    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    header, entries = lines[0], lines[1:]
    assert header["options"]["seeds"] == "0-2,5,9" and header["options"]["truncation_psi"] == psi
    assert header["network"]["sha256"] and header["network"]["config"]["z_dim"] == 32
    digests = file_digests(tmp_path)
    assert [(e["seed"], e["file"], e["sha256"], e["shape"]) for e in entries] == [
        (s, f"seed{s:04d}.png", digests[f"seed{s:04d}.png"], [32, 32, 3]) for s in seeds]


def test_projected_ws_are_rendered_one_by_one_as_before(small_network, tmp_path):
    G = sgtriton.load(small_network)
    ws = G.mapping(torch.randn(3, G.z_dim), None).numpy()
    np.savez(tmp_path / "w.npz", w=ws)
    result = run_cli(["generate", "--network", small_network, "--projected-w", tmp_path / "w.npz",
                      "--outdir", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    for i in range(3):
        expected = to_uint8(G.synthesis(torch.as_tensor(ws[i : i + 1]), noise_mode="const"))[0]
        assert (tmp_path / "out" / f"proj{i:02d}.png").read_bytes() == png_bytes(expected)


def test_resume_restores_exactly_the_missing_and_corrupt_files(small_network, tmp_path):
    args = ["generate", "--network", small_network, "--seeds", "0-9", "--batch-size", 3, "--outdir", tmp_path]
    assert run_cli(args).exit_code == 0
    before = file_digests(tmp_path)
    manifest_before = (tmp_path / "manifest.jsonl").read_bytes()
    times = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("seed*")}
    (tmp_path / "seed0001.png").unlink()
    (tmp_path / "seed0007.png").write_bytes(before and (tmp_path / "seed0007.png").read_bytes()[:50])
    (tmp_path / "seed0008.png").write_bytes(b"")
    time.sleep(0.05)
    result = run_cli([*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "wrote 3 image(s)" in result.output and "kept 7 verified" in result.output
    assert file_digests(tmp_path) == before
    assert (tmp_path / "manifest.jsonl").read_bytes() == manifest_before
    changed = {p.name for p in tmp_path.glob("seed*") if p.stat().st_mtime_ns != times[p.name]}
    assert changed == {"seed0001.png", "seed0007.png", "seed0008.png"}


@pytest.mark.parametrize("change,needle", [
    (["--trunc", "0.5"], "truncation_psi: recorded 1.0, this run 0.5"),
    (["--format", "webp"], "format: recorded 'png', this run 'webp'"),
    (["--seeds", "0-4"], "seeds: recorded '0-3', this run '0-4'"),
])
def test_resume_refuses_other_options(small_network, tmp_path, change, needle):
    args = ["generate", "--network", small_network, "--seeds", "0-3", "--outdir", tmp_path]
    assert run_cli(args).exit_code == 0
    result = run_cli([*args, *change, "--resume"]) if "--seeds" not in change else run_cli(
        ["generate", "--network", small_network, *change, "--outdir", tmp_path, "--resume"])
    assert result.exit_code != 0 and needle in result.output, result.output


def test_resume_refuses_another_network(small_network, tmp_path):
    assert run_cli(["generate", "--network", small_network, "--seeds", "0-1", "--outdir", tmp_path]).exit_code == 0
    other = tmp_path / "other.safetensors"
    sgtriton.save(small_generator(seed=4), other)
    result = run_cli(["generate", "--network", other, "--seeds", "0-1", "--outdir", tmp_path, "--resume"])
    assert result.exit_code != 0 and "network sha256: recorded" in result.output, result.output


@pytest.mark.parametrize("file_format", ["jpg", "webp", "npz"])
def test_other_formats_resume_too(small_network, tmp_path, file_format):
    args = ["generate", "--network", small_network, "--seeds", "0-2", "--format", file_format, "--outdir", tmp_path]
    assert run_cli(args).exit_code == 0
    names = sorted(p.name for p in tmp_path.glob("seed*"))
    assert names == [f"seed{s:04d}.{file_format}" for s in range(3)]
    before = file_digests(tmp_path)
    (tmp_path / names[1]).unlink()
    result = run_cli([*args, "--resume"])
    assert result.exit_code == 0 and "wrote 1 image(s)" in result.output, result.output
    assert file_digests(tmp_path) == before


def test_random_noise_is_a_function_of_the_seed_alone(small_network):
    """Per-seed noise: the same seed gets the same noise in any batch; other seeds get other noise."""
    G = sgtriton.load(small_network)
    seeds = [4, 11, 12]
    z = torch.cat([seed_to_z(s, G.z_dim) for s in seeds])
    with per_sample_noise(noise_generators(seeds)):
        together = G(z, None, noise_mode="random")
    with per_sample_noise(noise_generators([11])):
        alone = G(z[1:2], None, noise_mode="random")
    with per_sample_noise(noise_generators([99])):
        other = G(z[1:2], None, noise_mode="random")
    # The batch changes the float rounding of the convolutions (not the noise): agreement to 1e-5.
    torch.testing.assert_close(together[1:2], alone, rtol=0, atol=1e-5)
    assert (other - alone).abs().max() > 1e-2
    with pytest.raises(ValueError, match="2 generator"):
        with per_sample_noise(noise_generators([1, 2])):
            G(z, None, noise_mode="random")
