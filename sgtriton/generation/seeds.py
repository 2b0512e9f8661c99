"""What each sample of a job is: its latent (or w) and, for ``noise_mode='random'``, its own noise.

* seed -> z: NVlabs' ``RandomState(seed).randn(1, z_dim)`` (:func:`sgtriton.images.seed_to_z`).
* seed -> noise: a CPU ``torch.Generator`` seeded with :func:`noise_seed` (``seed`` hashed, so the
  noise stream is not the z stream: numpy's and torch's CPU generators are both MT19937 and would
  otherwise start from the same state); the synthesis network draws that sample's noise maps from
  it in forward order (:func:`sgtriton.blocks.layers.per_sample_noise`). A sample's noise is thus a
  function of its seed alone -- not of the rank, the batch it shares or the device. Projected ws use
  their row index in the ``.npz`` as the seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

NOISE_SEED_DOMAIN = b"sgtriton.noise:"


def noise_seed(seed: int) -> int:
    """The 63-bit seed of sample ``seed``'s noise generator: the first 8 bytes of
    ``sha256(b'sgtriton.noise:' + decimal(seed))`` as a big-endian int, top bit cleared."""
    digest = hashlib.sha256(NOISE_SEED_DOMAIN + str(int(seed)).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def noise_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One freshly seeded CPU generator per sample (see :func:`noise_seed`)."""
    return [torch.Generator(device="cpu").manual_seed(noise_seed(s)) for s in seeds]


def unique_in_order(seeds: Sequence[int]) -> tuple[list[int], list[int]]:
    """``seeds`` without repeats (first occurrence kept) and the repeated values: a repeated seed would
    write the same file twice."""
    seen: set[int] = set()
    kept, repeated = [], []
    for s in seeds:
        (repeated if s in seen else kept).append(s)
        seen.add(s)
    return kept, repeated
