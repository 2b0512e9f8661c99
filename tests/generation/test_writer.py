"""Encoders are deterministic and lossless where they say so; the writer is atomic, bounded and loud."""

import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from sgtriton.generation.writer import FORMATS, ImageWriter, decode, encode, image_format

ARRAY = np.random.RandomState(0).randint(0, 256, size=(5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", list(FORMATS))
def test_encoding_is_deterministic_and_round_trips(name):
    fmt = image_format(name)
    first = encode(ARRAY, fmt)
    time.sleep(0.01 if name != "npz" else 2.1)  # zip times have 2 s resolution: cross one tick
    assert encode(ARRAY, fmt) == first
    back = decode(first, fmt)
    assert back.shape == ARRAY.shape and back.dtype == np.uint8
    if name == "jpg":
        assert np.abs(back.astype(int) - ARRAY).mean() < 40
    else:
        assert np.array_equal(back, ARRAY)


def test_png_bytes_are_what_pil_writes_to_a_path(tmp_path):
    Image.fromarray(ARRAY, "RGB").save(tmp_path / "a.png")
    assert encode(ARRAY, image_format("png")) == (tmp_path / "a.png").read_bytes()


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="format='tiff'"):
        image_format("tiff")


def test_writer_writes_parts_after_their_files_and_replaces_planted_links(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep me")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "b.png")
    done = []

    def on_done(index, written):
        assert all((out / w.file).is_file() for w in written)
        done.append((index, [w.item for w in written]))

    with ImageWriter(out, image_format("png"), workers=2, max_pending=1, on_batch_done=on_done) as writer:
        writer.submit(0, [(1, "a.png", ARRAY), (2, "b.png", ARRAY)])
        writer.submit(1, [(3, "c.png", ARRAY)])
    assert sorted(done) == [(0, [1, 2]), (1, [3])]
    assert outside.read_bytes() == b"keep me"
    assert not (out / "b.png").is_symlink()
    assert np.array_equal(np.asarray(Image.open(out / "b.png")), ARRAY)


def test_back_pressure_bounds_the_batches_in_flight(tmp_path):
    release = threading.Event()
    in_flight = []

    class SlowWriter(ImageWriter):
        def _write_one(self, item, name, array):
            in_flight.append(item)
            release.wait(5)
            return super()._write_one(item, name, array)

    writer = SlowWriter(tmp_path, image_format("png"), workers=4, max_pending=1)
    writer.submit(0, [(0, "a.png", ARRAY)])
    blocked = threading.Thread(target=writer.submit, args=(1, [(1, "b.png", ARRAY)]))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive() and in_flight == [0]  # batch 1 waits until batch 0 is written
    release.set()
    blocked.join(5)
    writer.close()
    assert sorted(in_flight) == [0, 1]


def test_a_failed_write_is_raised_in_the_caller(tmp_path):
    writer = ImageWriter(tmp_path / "missing-folder", image_format("png"))
    writer.submit(0, [(0, "a.png", ARRAY)])
    with pytest.raises(FileNotFoundError):
        writer.close()
