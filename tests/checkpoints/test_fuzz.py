"""Byte flips and truncations of valid small checkpoints of every format: each either loads or is
refused with a ``CheckpointError`` -- never another exception, never a hang."""

import io
import warnings

import pytest
import torch
from checkpoint_builders import (
    nvlabs_pickle,
    rosinality_state_dict,
    small_generator,
    tf_pickle,
    tf_stylegan1_variables,
    tf_stylegan2_variables,
    torch_save_bytes,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sgtriton.checkpoints import CheckpointError, load
from sgtriton.checkpoints.native import encode


def _valid_files() -> dict[str, bytes]:
    G = small_generator(img_resolution=8)
    G1 = small_generator("stylegan1", img_resolution=8)
    ros = {"g_ema": rosinality_state_dict(G), "latent_avg": G.mapping.w_avg.clone()}
    return {
        "nvlabs": nvlabs_pickle(G),
        "tensorflow-stylegan2": tf_pickle(tf_stylegan2_variables(G), {"fmap_base": 64, "resolution": 8}),
        "tensorflow-stylegan1": tf_pickle(tf_stylegan1_variables(G1), {"fmap_base": 32, "resolution": 8}),
        "rosinality-zip": torch_save_bytes(ros),
        "rosinality-legacy": torch_save_bytes(ros, legacy=True),
        "native": encode(G),
    }


VALID = _valid_files()


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` with a few bytes replaced (anywhere, or near the start where headers are) and
    possibly truncated."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        near_start = draw(st.booleans())
        position = draw(st.integers(0, min(len(out) - 1, 256) if near_start else len(out) - 1))
        out[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out) - 1))]
    return bytes(out)


def _examples() -> int:
    return settings.default.max_examples * 3  # ci: 24 per format, thorough: 600


@pytest.mark.parametrize("fmt", sorted(VALID))
def test_damaged_files_load_or_raise_checkpoint_error(fmt):
    torch.set_num_threads(1)
    outcomes = {"loaded": 0, "refused": 0}

    @settings(max_examples=_examples())
    @given(damaged(VALID[fmt]))
    def check(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                load(io.BytesIO(data), backend="reference")
                outcomes["loaded"] += 1
            except CheckpointError as exc:
                assert "\n" not in str(exc) and "checkpoint <file object>" in str(exc)
                outcomes["refused"] += 1

    check()
    print(f"{fmt}: {outcomes}")
    assert sum(outcomes.values()) >= _examples()


def test_the_fuzzed_files_are_valid_to_begin_with():
    for fmt, data in VALID.items():
        assert load(io.BytesIO(data)).img_resolution == 8, fmt
