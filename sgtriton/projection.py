"""Projecting an image into W: NVlabs ``projector.py`` semantics on any sgtriton generator.

One ``w`` (broadcast to every layer) and every ``noise_const`` buffer are optimised with Adam
(betas 0.9, 0.999) for ``num_steps`` steps, starting from the mean of 10,000 mapped seeds
(``RandomState(123)``) and fresh N(0, 1) noise. At step ``t = step / num_steps``::

    lr(t)      = lr0 * (1/2 - cos(pi * min(1, (1 - t) / rampdown)) / 2) * min(1, t / rampup)
    sigma_w(t) = w_std * noise_factor * max(0, 1 - t / noise_ramp)^2          (w noise, per step)
    loss       = ||F(target) - F(G.synthesis(w + sigma_w * n))||^2 + 1e5 * R(noise)
    R(noise)   = sum over buffers and pyramid levels (avg-pooled 2x while > 8 px) of
                 mean(a * roll(a, 1, W))^2 + mean(a * roll(a, 1, H))^2

after each step every noise buffer is re-normalised to zero mean and unit variance. Images enter
``F`` in ``[0, 255]``, area-downsampled to 256 px when larger. ``w_std`` is the root mean squared
distance of the sampled ws from their mean (summed over channels). ``F`` is NVlabs' TorchScript
VGG16-LPIPS (``vgg16.pt``, from a file) or, offline, :class:`PixelFeatures`.

As in NVlabs, the generator is deep-copied first, so the caller's network (and its noise buffers)
never change; the result is the ``w`` of every step, ``[num_steps, num_ws, w_dim]``.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sgtriton.backends import BACKENDS
from sgtriton.files import atomic_write
from sgtriton.images import image_mode, to_pil, to_uint8

#: NVlabs' seed for the w statistics.
W_STATS_SEED = 123
#: Feature networks see images of at most this size (VGG16 was trained at 224).
FEATURE_RESOLUTION = 256


@dataclass(frozen=True)
class ProjectionSchedule:
    """NVlabs ``project()`` keywords and defaults; ``w_avg_samples`` may be lowered for quick runs."""

    num_steps: int = 1000
    w_avg_samples: int = 10000
    initial_learning_rate: float = 0.1
    initial_noise_factor: float = 0.05
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5

    def __post_init__(self) -> None:
        for name in ("num_steps", "w_avg_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected an int >= 1")
        for name in ("lr_rampdown_length", "lr_rampup_length", "noise_ramp_length"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected a number > 0")

    def learning_rate(self, step: int) -> float:
        """Linear ramp-up over the first ``lr_rampup_length``, cosine ramp-down over the last ``lr_rampdown_length``."""
        t = step / self.num_steps
        ramp = min(1.0, (1.0 - t) / self.lr_rampdown_length)
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        return self.initial_learning_rate * ramp * min(1.0, t / self.lr_rampup_length)

    def w_noise_scale(self, step: int, w_std: float) -> float:
        t = step / self.num_steps
        return w_std * self.initial_noise_factor * max(0.0, 1.0 - t / self.noise_ramp_length) ** 2


class PixelFeatures(nn.Module):
    """The offline feature "network": the image and its 2x average-pooled pyramid down to 8 px, each
    level scaled by ``1/sqrt(its size)``, so ``||F(a) - F(b)||^2 = sum_levels mean((a_l - b_l)^2)`` for
    images mapped from ``[0, 255]`` to ``[-1, 1]``. ``[N, C, H, W]`` -> ``[N, D]``."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images / 127.5 - 1
        levels = []
        while True:
            levels.append(x.flatten(1) / math.sqrt(x[0].numel()))
            if x.shape[2] <= 8 or x.shape[2] % 2:
                break
            x = F.avg_pool2d(x, 2)
        return torch.cat(levels, dim=1)


def load_vgg16(path: str, device: torch.device | str) -> Callable[[torch.Tensor], torch.Tensor]:
    """NVlabs' TorchScript VGG16-LPIPS (``vgg16.pt``) as a feature function on ``[0, 255]`` images.

    A TorchScript file runs its own (TorchScript) code: load only files you trust."""
    try:
        vgg16 = torch.jit.load(path, map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as exc:
        raise ValueError(f"{path!r}: not a loadable TorchScript file (NVlabs' vgg16.pt): {exc}") from exc

    def features(images: torch.Tensor) -> torch.Tensor:
        return vgg16(images, resize_images=False, return_lpips=True)

    return features


def w_statistics(G: nn.Module, samples: int, device: torch.device | str) -> tuple[torch.Tensor, float]:
    """``(w_avg [1, 1, w_dim], w_std)`` over ``samples`` mapped ``RandomState(123)`` latents (no label)."""
    z = torch.from_numpy(np.random.RandomState(W_STATS_SEED).randn(samples, G.z_dim)).to(device)
    with torch.no_grad():
        w = G.mapping(z, None)[:, :1, :].cpu().numpy().astype(np.float32)  # [N, 1, C]
    w_avg = np.mean(w, axis=0, keepdims=True)
    w_std = float((np.sum((w - w_avg) ** 2) / samples) ** 0.5)
    return torch.from_numpy(w_avg), w_std


def noise_regularization(buffers: list[torch.Tensor]) -> torch.Tensor:
    """``R(noise)`` of the module docstring: squared one-pixel autocorrelations over each pyramid."""
    total = torch.zeros([], device=buffers[0].device) if buffers else torch.zeros([])
    for buf in buffers:
        noise = buf[None, None, :, :]
        while True:
            total = total + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            total = total + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


def feature_images(images: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` generator output -> ``[0, 255]``, area-downsampled to 256 px when larger."""
    images = (images + 1) * (255 / 2)
    if images.shape[2] > FEATURE_RESOLUTION:
        images = F.interpolate(images, size=(FEATURE_RESOLUTION, FEATURE_RESOLUTION), mode="area")
    return images


def project(
    G: nn.Module,
    target: torch.Tensor,
    *,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    schedule: ProjectionSchedule | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[int, float, float], None] | None = None,
) -> torch.Tensor:
    """Project ``target [img_channels, R, R]`` (values in ``[0, 255]``) into ``G``'s W space.

    ``features`` maps ``[N, C, h, w]`` images in ``[0, 255]`` to ``[N, D]`` (default
    :class:`PixelFeatures`); ``progress(step, dist, loss)`` is called after every step. Returns the
    optimised ws of every step, ``[num_steps, num_ws, w_dim]``. The torch RNG drives the noise
    initialisation and the w noise, so ``torch.manual_seed`` makes a run reproducible.
    """
    schedule = schedule or ProjectionSchedule()
    expected = (G.img_channels, G.img_resolution, G.img_resolution)
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != expected:
        got = list(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"target: expected a tensor of shape {list(expected)} with values in [0, 255], got {got}")
    if G.c_dim:
        raise ValueError(f"G: projection needs an unconditional generator, this one has c_dim={G.c_dim}")
    features = features or PixelFeatures().to(device)
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)

    w_avg, w_std = w_statistics(G, schedule.w_avg_samples, device)
    noise_bufs = [buf for name, buf in G.synthesis.named_buffers() if "noise_const" in name]

    target_images = target.unsqueeze(0).to(device).to(torch.float32)
    if target_images.shape[2] > FEATURE_RESOLUTION:
        target_images = F.interpolate(target_images, size=(FEATURE_RESOLUTION, FEATURE_RESOLUTION), mode="area")
    target_features = features(target_images)

    w_opt = w_avg.clone().to(device).requires_grad_(True)
    w_out = torch.zeros([schedule.num_steps, *w_opt.shape[1:]], dtype=torch.float32, device=device)
    optimizer = torch.optim.Adam([w_opt, *noise_bufs], betas=(0.9, 0.999), lr=schedule.initial_learning_rate)
    for buf in noise_bufs:
        buf[:] = torch.randn_like(buf)
        buf.requires_grad = True

    for step in range(schedule.num_steps):
        for group in optimizer.param_groups:
            group["lr"] = schedule.learning_rate(step)
        w_noise = torch.randn_like(w_opt) * schedule.w_noise_scale(step, w_std)
        ws = (w_opt + w_noise).repeat([1, G.num_ws, 1])
        synth_features = features(feature_images(G.synthesis(ws, noise_mode="const")))
        dist = (target_features - synth_features).square().sum()
        loss = dist + noise_regularization(noise_bufs) * schedule.regularize_noise_weight

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        w_out[step] = w_opt.detach()[0]
        with torch.no_grad():
            for buf in noise_bufs:
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        if progress is not None:
            progress(step, float(dist.detach()), float(loss.detach()))
    return w_out.repeat([1, G.num_ws, 1])


# ----------------------------------------------------------------------------------------------
# Command line: ``sgtriton project`` (NVlabs projector.py flags, plus --target-dir and --vgg)
# ----------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def load_target(path: Path, resolution: int, channels: int) -> np.ndarray:
    """NVlabs' target preparation: centre square crop, Lanczos resize to ``resolution``; ``[R, R, C]`` uint8."""
    try:
        image = PIL.Image.open(path)
        image = image.convert(image_mode(channels))
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{str(path)!r}: not a readable image ({exc})", param_hint="--target") from exc
    w, h = image.size
    s = min(w, h)
    image = image.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
    image = image.resize((resolution, resolution), PIL.Image.LANCZOS)
    array = np.array(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _write_png(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda f: to_pil(array).save(f, format="PNG"))


def _write_ws(path: Path, ws: np.ndarray, **extra: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, w=ws, **extra))


def _video_writer_module():
    """imageio with an ffmpeg encoder, or a clear error: the video is optional."""
    try:
        import imageio
        import imageio_ffmpeg  # noqa: F401  (the encoder imageio's ffmpeg plugin runs)
    except ImportError as exc:
        raise click.UsageError("--save-video: needs imageio and an ffmpeg encoder (pip install imageio "
                               f"imageio-ffmpeg); missing: {exc.name}. Run without --save-video otherwise.") from exc
    return imageio


def _write_video(imageio, frames: list[np.ndarray], path: Path) -> None:
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp_path = Path(tmp) / path.name
        writer = imageio.get_writer(tmp_path, mode="I", fps=10, codec="libx264", bitrate="16M")
        for frame in frames:
            writer.append_data(frame)
        writer.close()
        atomic_write(path, tmp_path.read_bytes())


def _render(G: nn.Module, ws: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(G.synthesis(ws.unsqueeze(0), noise_mode="const"))[0]


@click.command("project")
@click.option("--network", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Checkpoint (any format sgtriton loads) of an unconditional generator.")
@click.option("--target", "target", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Image to project (centre-cropped, resized to the network's resolution).")
@click.option("--target-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Project every image in this folder; each gets OUTDIR/<name>/, all ws go to OUTDIR/projected_w.npz.")
@click.option("--num-steps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Optimisation steps.")
@click.option("--seed", type=int, default=303, show_default=True, help="Seed of the noise initialisation and w noise.")
@click.option("--vgg", type=click.Path(exists=True, dir_okay=False), default=None,
              help="NVlabs' TorchScript vgg16.pt for the LPIPS distance [default: offline pixel + multi-scale L2].")
@click.option("--save-video/--no-save-video", default=False, show_default=True,
              help="Also write proj.mp4 (target | projection per step); needs imageio with ffmpeg.")
@click.option("--w-avg-samples", type=click.IntRange(min=1), default=ProjectionSchedule.w_avg_samples, hidden=True)
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="reference, triton or auto [default: $SGTRITON_BACKEND or auto].")
@click.option("--device", default=None, help="torch device [default: cuda if available, else cpu].")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Where to write the results.")
def project_command(network, target, target_dir, num_steps, seed, vgg, save_video, w_avg_samples, backend, device,
                    outdir):
    """Project images into the W space of a network (NVlabs projector.py).

    Writes target.png, proj.png and projected_w.npz (key 'w', [1, num_ws, w_dim], for
    `sgtriton generate --projected-w`) into OUTDIR, or OUTDIR/<name>/ for each image of --target-dir.
    Under torchrun the targets are shared out over the ranks; every file is byte-identical to a
    single-process run's."""
    from sgtriton.checkpoints import CheckpointError, load
    from sgtriton.generation import distributed, sharding

    if (target is None) == (target_dir is None):
        raise click.UsageError("pass exactly one of --target FILE and --target-dir DIR")
    imageio = _video_writer_module() if save_video else None
    if target is not None:
        jobs = [(Path(target), Path(outdir))]
    else:
        files = sorted(p for p in Path(target_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise click.BadParameter(f"{target_dir!r}: no images ({', '.join(IMAGE_SUFFIXES)})",
                                     param_hint="--target-dir")
        jobs = [(p, Path(outdir) / p.stem) for p in files]
    schedule = ProjectionSchedule(num_steps=num_steps, w_avg_samples=w_avg_samples)
    try:
        with distributed.session(device) as topology:
            device = str(topology.device)
            try:
                G = load(network, backend=backend or "auto", device=device)
            except CheckpointError as exc:
                raise click.ClickException(str(exc)) from exc
            if G.c_dim:
                raise click.UsageError(
                    f"--network: projection needs an unconditional generator; this one has c_dim={G.c_dim}")
            try:
                features = load_vgg16(vgg, device) if vgg is not None else None
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--vgg") from exc

            # Target k goes to rank k mod WORLD_SIZE; each is re-seeded, so no result depends on the split.
            mine = sharding.shard(range(len(jobs)), topology.rank, topology.world_size)
            finals = {k: _project_target(G, *jobs[k], features, schedule, seed, device, imageio,
                                         show_progress=topology.is_main) for k in mine}
            # The final ws travel through the process group, so rank 0 needs no shared file system to read them.
            finals = {k: w for share in distributed.all_gather(topology, finals) for k, w in share.items()}
            if target_dir is not None and topology.is_main:
                Path(outdir).mkdir(parents=True, exist_ok=True)
                _write_ws(Path(outdir) / "projected_w.npz", np.stack([finals[k] for k in range(len(jobs))]),
                          names=np.array([p.stem for p, _ in jobs]))
            distributed.barrier(topology)
    except distributed.LaunchError as exc:
        raise click.UsageError(str(exc)) from exc
    ranks = f" on {topology.world_size} ranks" if topology.distributed else ""
    if topology.is_main:
        click.echo(f"projected {len(jobs)} image(s) into {os.fspath(outdir)}{ranks}")


def _project_target(G: nn.Module, path: Path, folder: Path, features, schedule: ProjectionSchedule, seed: int,
                    device: str, imageio, show_progress: bool = True) -> np.ndarray:
    """Project one target file into ``folder`` (target.png, proj.png, projected_w.npz, maybe proj.mp4);
    returns its final ws ``[num_ws, w_dim]``."""
    target_uint8 = load_target(path, G.img_resolution, G.img_channels)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # every target projects as it would alone
    with tqdm(total=schedule.num_steps, desc=f"projecting {path.name}", unit="step",
              disable=not show_progress) as bar:
        def report(step: int, dist: float, loss: float) -> None:
            bar.set_postfix(dist=f"{dist:.4g}", loss=f"{loss:.4g}", refresh=False)
            bar.update(1)

        steps = project(G, torch.from_numpy(target_uint8.transpose(2, 0, 1).copy()), features=features,
                        schedule=schedule, device=device, progress=report)
    if imageio is not None:
        frames = [np.concatenate([target_uint8, _render(G, w)], axis=1)
                  for w in tqdm(steps, desc="video", disable=not show_progress)]
        _write_video(imageio, frames, folder / "proj.mp4")
    _write_png(target_uint8, folder / "target.png")
    _write_png(_render(G, steps[-1]), folder / "proj.png")
    _write_ws(folder / "projected_w.npz", steps[-1].unsqueeze(0).cpu().numpy())
    return steps[-1].cpu().numpy()
