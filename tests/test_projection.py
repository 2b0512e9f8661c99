"""``sgtriton.projection`` and ``sgtriton project`` against our own re-expression of NVlabs'
``projector.project()`` loop, on a tiny generator with a fixed local feature network."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import sgtriton
from sgtriton.cli import main
from sgtriton.projection import PixelFeatures, ProjectionSchedule, project

TINY = {"z_dim": 16, "w_dim": 16, "img_resolution": 16, "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": {"channel_base": 64, "channel_max": 16}}
STEPS = 6
SAMPLES = 64


def tiny(backend: str = "reference"):
    G = sgtriton.build_generator(None, seed=0, backend=backend, **copy.deepcopy(TINY))
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.2)
    return G


class FixedFeatures(nn.Module):
    """A fixed local stand-in for VGG16-LPIPS: one seeded 3x3 conv + ReLU, unit-normalised per sample."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        self.register_buffer("weight", torch.randn([6, 3, 3, 3], generator=gen) / 27)

    def forward(self, images: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        y = F.relu(F.conv2d(images / 255, self.weight)).flatten(1)
        return y / y.square().sum(dim=1, keepdim=True).sqrt()


def target_image(G, seed: int = 9) -> torch.Tensor:
    with torch.no_grad():
        img = G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed)), None, noise_mode="const")
    return ((img[0] + 1) * 127.5).clamp(0, 255)


def nvlabs_project(G, target, features, *, num_steps, w_avg_samples, initial_learning_rate=0.1,
                   initial_noise_factor=0.05, lr_rampdown_length=0.25, lr_rampup_length=0.05,
                   noise_ramp_length=0.75, regularize_noise_weight=1e5):
    """NVlabs projector.project(), re-expressed: the same statistics, schedule, loss and updates."""
    G = copy.deepcopy(G).eval().requires_grad_(False)
    z = np.random.RandomState(123).randn(w_avg_samples, G.z_dim)
    w_samples = G.mapping(torch.from_numpy(z), None)[:, :1, :].numpy().astype(np.float32)
    w_avg = np.mean(w_samples, axis=0, keepdims=True)
    w_std = (np.sum((w_samples - w_avg) ** 2) / w_avg_samples) ** 0.5
    bufs = {n: b for n, b in G.synthesis.named_buffers() if "noise_const" in n}
    target_features = features(target.unsqueeze(0).to(torch.float32), resize_images=False, return_lpips=True)
    w_opt = torch.tensor(w_avg, dtype=torch.float32, requires_grad=True)
    w_out = torch.zeros([num_steps, *w_opt.shape[1:]])
    opt = torch.optim.Adam([w_opt, *bufs.values()], betas=(0.9, 0.999), lr=initial_learning_rate)
    for b in bufs.values():
        b[:] = torch.randn_like(b)
        b.requires_grad = True
    for step in range(num_steps):
        t = step / num_steps
        w_noise_scale = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2
        ramp = min(1.0, (1.0 - t) / lr_rampdown_length)
        ramp = (0.5 - 0.5 * np.cos(ramp * np.pi)) * min(1.0, t / lr_rampup_length)
        for g in opt.param_groups:
            g["lr"] = initial_learning_rate * ramp
        ws = (w_opt + torch.randn_like(w_opt) * w_noise_scale).repeat([1, G.mapping.num_ws, 1])
        synth = (G.synthesis(ws, noise_mode="const") + 1) * (255 / 2)
        dist = (target_features - features(synth, resize_images=False, return_lpips=True)).square().sum()
        reg = 0.0
        for v in bufs.values():
            noise = v[None, None, :, :]
            while True:
                reg += (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
                reg += (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
                if noise.shape[2] <= 8:
                    break
                noise = F.avg_pool2d(noise, kernel_size=2)
        loss = dist + reg * regularize_noise_weight
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        w_out[step] = w_opt.detach()[0]
        with torch.no_grad():
            for b in bufs.values():
                b -= b.mean()
                b *= b.square().mean().rsqrt()
    return w_out.repeat([1, G.mapping.num_ws, 1])


def test_schedule_matches_nvlabs_ramps():
    s = ProjectionSchedule(num_steps=1000)
    assert s.learning_rate(0) == 0
    assert s.learning_rate(50) == pytest.approx(0.1)  # end of the 5% ramp-up
    assert s.learning_rate(500) == pytest.approx(0.1)
    assert s.learning_rate(875) == pytest.approx(0.05)  # half-way down the cosine
    assert s.learning_rate(999) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(0.004 * math.pi)))
    assert s.w_noise_scale(0, 2.0) == pytest.approx(0.1)
    assert s.w_noise_scale(375, 2.0) == pytest.approx(0.1 * 0.25)
    assert s.w_noise_scale(750, 2.0) == 0
    with pytest.raises(ValueError, match="num_steps=0"):
        ProjectionSchedule(num_steps=0)


def test_projection_follows_the_nvlabs_trajectory():
    G = tiny()
    target = target_image(G)
    features = FixedFeatures()
    before = {n: b.clone() for n, b in G.named_buffers()}
    torch.manual_seed(3)
    expected = nvlabs_project(G, target, features, num_steps=STEPS, w_avg_samples=SAMPLES)
    torch.manual_seed(3)
    got = project(G, target, features=lambda x: features(x, resize_images=False, return_lpips=True),
                  schedule=ProjectionSchedule(num_steps=STEPS, w_avg_samples=SAMPLES))
    assert got.shape == (STEPS, G.num_ws, G.w_dim)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.equal(got[0], got[-1])  # the ws moved
    for n, b in G.named_buffers():  # the caller's network is untouched
        assert torch.equal(b, before[n])


def test_pixel_features_distance_is_the_multiscale_mse():
    a, b = torch.rand(2, 3, 16, 16) * 255, torch.rand(2, 3, 16, 16) * 255
    dist = (PixelFeatures()(a) - PixelFeatures()(b)).square().sum(dim=1)
    x, y = a / 127.5 - 1, b / 127.5 - 1
    expected = ((x - y) ** 2).mean(dim=[1, 2, 3]) + ((F.avg_pool2d(x, 2) - F.avg_pool2d(y, 2)) ** 2).mean(dim=[1, 2, 3])
    torch.testing.assert_close(dist, expected)


def test_offline_projection_reduces_the_distance():
    G = tiny()
    target = target_image(G)
    torch.manual_seed(0)
    dists = []
    project(G, target, schedule=ProjectionSchedule(num_steps=12, w_avg_samples=SAMPLES),
            progress=lambda step, dist, loss: dists.append(dist))
    assert len(dists) == 12 and dists[-1] < dists[0]


def test_project_refuses_a_wrong_target():
    G = tiny()
    with pytest.raises(ValueError, match=r"target: expected a tensor of shape \[3, 16, 16\]"):
        project(G, torch.zeros(3, 8, 8))


def _triton_ops_without_backward() -> list[str]:
    """The sgtriton custom ops a synthesis backward runs through that torch.library knows no autograd for."""
    import sgtriton.ops.fully_connected  # noqa: F401  (registers the ops)
    import sgtriton.ops.modconv  # noqa: F401
    import sgtriton.ops.torgb  # noqa: F401

    try:
        from torch._library.custom_ops import OPDEFS
    except ImportError:  # no introspection: run the test and let it speak
        return []
    names = ("sgtriton::modulated_conv2d", "sgtriton::torgb", "sgtriton::fully_connected")
    return [n for n in names if n in OPDEFS and getattr(OPDEFS[n], "_backward_fn", True) is None]


def test_projection_on_triton_backend_follows_reference():
    missing = _triton_ops_without_backward()
    if missing:
        pytest.skip(f"torch.library has no autograd registered for {missing}: the Triton backend cannot backward yet")
    G = tiny("reference")
    target = target_image(G)
    features = FixedFeatures()
    schedule = ProjectionSchedule(num_steps=3, w_avg_samples=SAMPLES)
    runs = []
    for backend in ("reference", "triton"):
        torch.manual_seed(4)
        runs.append(project(copy.deepcopy(G).set_backend(backend), target,
                            features=lambda x: features(x, resize_images=False, return_lpips=True),
                            schedule=schedule))
    # Adam divides by the gradient's running RMS, so kernel rounding in the gradients (fp32, ~1e-6 relative)
    # reaches the ws scaled by the learning rate (0.1): well inside 1e-3, while one wrong gradient moves a w by ~0.1.
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-3, atol=1e-3)
    assert not torch.equal(runs[0][0], runs[0][-1])


# --- the command line -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    folder = tmp_path_factory.mktemp("net")
    G = tiny()
    sgtriton.save(G, folder / "tiny.safetensors")
    for i, seed in enumerate((9, 10)):
        array = target_image(G, seed).permute(1, 2, 0).to(torch.uint8).numpy()
        PIL.Image.fromarray(array).resize((24, 20)).save(folder / f"t{i}.png")  # non-square: gets cropped
    return folder


def _project(args):
    result = CliRunner().invoke(main, ["project", "--w-avg-samples", str(SAMPLES), "--num-steps", "4",
                                       "--device", "cpu", *map(str, args)])
    return result


def test_cli_project_writes_outputs_generate_can_render(network, tmp_path):
    result = _project(["--network", network / "tiny.safetensors", "--target", network / "t0.png",
                       "--outdir", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["proj.png", "projected_w.npz", "target.png"]
    ws = np.load(out / "projected_w.npz")["w"]
    assert ws.shape == (1, 6, 16) and np.isfinite(ws).all()
    assert "4/4" in result.output  # the progress bar ran to the end
    result = CliRunner().invoke(main, ["generate", "--network", str(network / "tiny.safetensors"), "--device", "cpu",
                                       "--projected-w", str(out / "projected_w.npz"), "--outdir", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.array(PIL.Image.open(tmp_path / "g" / "proj00.png")),
                          np.array(PIL.Image.open(out / "proj.png")))


def test_cli_project_batch_matches_single_runs(network, tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    for name in ("t0.png", "t1.png"):
        (targets / name).write_bytes((network / name).read_bytes())
    (targets / "notes.txt").write_text("not an image")
    result = _project(["--network", network / "tiny.safetensors", "--target-dir", targets, "--outdir", tmp_path / "b"])
    assert result.exit_code == 0, result.output
    both = np.load(tmp_path / "b" / "projected_w.npz")
    assert both["w"].shape == (2, 6, 16) and list(both["names"]) == ["t0", "t1"]
    result = _project(["--network", network / "tiny.safetensors", "--target", network / "t1.png",
                       "--outdir", tmp_path / "one"])
    assert result.exit_code == 0, result.output
    alone = np.load(tmp_path / "one" / "projected_w.npz")["w"]
    np.testing.assert_array_equal(both["w"][1:], alone)
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "t1" / "projected_w.npz")["w"], alone)


def test_cli_project_under_torchrun_writes_the_single_process_files(network, tmp_path):
    """Two gloo ranks share three targets (2 + 1): every file, the combined npz included, byte-identical."""
    targets = tmp_path / "targets"
    targets.mkdir()
    for name in ("t0.png", "t1.png"):
        (targets / name).write_bytes((network / name).read_bytes())
    array = target_image(tiny(), 11).permute(1, 2, 0).to(torch.uint8).numpy()
    PIL.Image.fromarray(array).save(targets / "t2.png")
    args = ["--network", network / "tiny.safetensors", "--target-dir", targets]
    result = _project([*args, "--outdir", tmp_path / "single"])
    assert result.exit_code == 0, result.output
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "sgtriton", "project", "--w-avg-samples", str(SAMPLES), "--num-steps", "4", "--device", "cpu",
               *map(str, args), "--outdir", str(tmp_path / "sharded")]
    run = subprocess.run(command, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, f"torchrun failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    assert "projected 3 image(s)" in run.stdout and "on 2 ranks" in run.stdout

    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    single, sharded = files(tmp_path / "single"), files(tmp_path / "sharded")
    assert len(single) == 3 * 3 + 1 and "t2/proj.png" in single
    assert sharded.keys() == single.keys()
    assert [name for name in single if sharded[name] != single[name]] == []


def test_cli_project_with_a_torchscript_feature_network(network, tmp_path):
    path = tmp_path / "vgg16.pt"
    with warnings.catch_warnings():  # NVlabs' vgg16.pt is TorchScript, deprecated or not
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(FixedFeatures()).save(str(path))
    result = _project(["--network", network / "tiny.safetensors", "--target", network / "t0.png", "--vgg", path,
                       "--outdir", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "out" / "projected_w.npz")["w"].shape == (1, 6, 16)
    (tmp_path / "bad.pt").write_bytes(b"not torchscript")
    result = _project(["--network", network / "tiny.safetensors", "--target", network / "t0.png",
                       "--vgg", tmp_path / "bad.pt", "--outdir", tmp_path / "x"])
    assert result.exit_code == 2 and "not a loadable TorchScript file" in result.output


def test_cli_project_errors_are_clear(network, tmp_path):
    result = _project(["--network", network / "tiny.safetensors", "--outdir", tmp_path])
    assert result.exit_code == 2 and "exactly one of --target FILE and --target-dir DIR" in result.output
    (tmp_path / "broken.png").write_bytes(b"no image")
    result = _project(["--network", network / "tiny.safetensors", "--target", tmp_path / "broken.png",
                       "--outdir", tmp_path / "o"])
    assert result.exit_code == 2 and "not a readable image" in result.output
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        result = _project(["--network", network / "tiny.safetensors", "--target", network / "t0.png",
                           "--save-video", "--outdir", tmp_path / "v"])
        assert result.exit_code == 2 and "--save-video: needs imageio and an ffmpeg encoder" in result.output
        assert not (tmp_path / "v").exists()
