"""Seeds, latents and image files, with NVlabs ``generate.py`` conventions.

* seed -> z: ``numpy.random.RandomState(seed).randn(1, z_dim)`` (float64, cast to float32 by mapping).
* image -> uint8: ``clamp(img * 127.5 + 128, 0, 255)`` truncated toward zero, NCHW -> NHWC.
* 1-channel images are written as grayscale, 3 as RGB, 4 as RGBA (2 as grayscale + alpha).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sgtriton.files import atomic_write

_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def parse_range(text: str, name: str = "seeds", limit: int | None = None) -> list[int]:
    """``'0-3,7'`` (spaces allowed: ``'0, 1'``) -> ``[0, 1, 2, 3, 7]``; errors name the option.

    With ``limit``, every value must be below it (checked before a range is expanded).
    """
    values: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        bounds = (int(m.group(1)), int(m.group(2))) if m else (int(part),) * 2 if re.fullmatch(r"\d+", part) else None
        if bounds is None:
            raise ValueError(f"{name}={text!r}: expected comma-separated non-negative ints or ranges like '0-7'")
        lo, hi = bounds
        if hi < lo:
            raise ValueError(f"{name}={text!r}: range {part!r} is descending; expected 'a-b' with a <= b")
        if limit is not None and hi >= limit:
            raise ValueError(f"{name}={text!r}: {hi} is too large; expected values in [0, {limit})")
        values.extend(range(lo, hi + 1))
    return values


def seed_to_z(seed: int, z_dim: int) -> torch.Tensor:
    """NVlabs' latent for ``seed``: ``RandomState(seed).randn(1, z_dim)`` as float64 ``[1, z_dim]``."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed}: expected an int in [0, 2**32)")
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim))


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``[N, C, H, W]`` float in ~[-1, 1] -> ``[N, H, W, C]`` uint8."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def image_mode(channels: int) -> str:
    """PIL mode for ``channels`` image channels: ``L``, ``LA``, ``RGB`` or ``RGBA``."""
    if channels not in _MODES:
        raise ValueError(f"image: expected 1-4 channels, got {channels}")
    return _MODES[channels]


def to_pil(array: np.ndarray) -> Image.Image:
    """``[H, W, C]`` uint8 -> a PIL image (grayscale for C = 1)."""
    mode = image_mode(array.shape[-1])
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array, mode)


def save_image(image: np.ndarray | Image.Image, path: str | Path) -> Path:
    """Write ``image`` (``[H, W, C]`` uint8 or a PIL image) to ``path`` atomically.

    The file format follows the suffix (``.png``, ``.jpg`` ...). The image goes to a temporary file
    in the same folder, is fsynced, then renamed over ``path`` (:func:`sgtriton.files.atomic_write`):
    an interrupted run leaves the old file or the new one, and a symlink planted at ``path`` is
    replaced, never written through.
    """
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    suffix = Path(path).suffix.lower()
    image_format = Image.registered_extensions().get(suffix)
    if image_format is None:
        raise ValueError(f"path={str(path)!r}: unknown image suffix {suffix!r}; expected e.g. .png or .jpg")
    return atomic_write(path, lambda handle: pil.save(handle, format=image_format))


def grid_columns(count: int) -> int:
    """Columns of a grid for ``count`` images: the fewest empty cells, at most 3 columns per row, then squarest.

    8 -> 4 x 2 (no empty cell, where ``ceil(sqrt(8)) = 3`` would leave one of 3 x 3 black), 9 -> 3 x 3, 7 -> 4 x 2.
    """
    if count < 1:
        raise ValueError(f"count={count}: expected at least one image")

    def cost(columns: int) -> tuple[int, int]:
        rows = math.ceil(count / columns)
        return columns * rows - count, columns - rows

    candidates = [c for c in range(1, count + 1) if c >= math.ceil(count / c) and c <= 3 * math.ceil(count / c)]
    return min(candidates, key=cost)


def make_grid(images: list[np.ndarray], columns: int | None = None) -> np.ndarray:
    """Tile equally sized ``[H, W, C]`` images row-major into one ``[rows*H, cols*W, C]`` array
    (``columns`` defaults to :func:`grid_columns`)."""
    if not images:
        raise ValueError("images: expected at least one image")
    columns = columns or grid_columns(len(images))
    rows = math.ceil(len(images) / columns)
    h, w, c = images[0].shape
    grid = np.zeros([rows * h, columns * w, c], dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = image
    return grid
