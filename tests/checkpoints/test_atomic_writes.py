"""Outputs appear complete or not at all: ``save``, ``convert`` (also under ``kill -9``) and images."""

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
import torch
from checkpoint_builders import nvlabs_pickle, small_generator

import sgtriton
from sgtriton.checkpoints import convert, load, save
from sgtriton.checkpoints.native import encode
from sgtriton.images import save_image


@pytest.fixture(scope="module")
def generator():
    return small_generator(img_resolution=8)


@pytest.mark.parametrize("name", ["x.pkl", "x.pt", "x.PTH", "x.ckpt"])
def test_save_refuses_a_suffix_naming_another_format(tmp_path, generator, name):
    with pytest.raises(ValueError, match="names another format"):
        sgtriton.save(generator, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_converting_onto_the_source_is_refused(tmp_path, generator):
    src = tmp_path / "g.safetensors"
    save(generator, src)
    before = src.read_bytes()
    alias = tmp_path / "alias.safetensors"
    alias.symlink_to(src)
    for destination in (src, alias, tmp_path / "." / "g.safetensors"):
        with pytest.raises(ValueError, match="is the source file"):
            convert(src, destination)
    assert src.read_bytes() == before


def test_save_replaces_a_planted_symlink_instead_of_following_it(tmp_path, generator):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "g.safetensors"
    link.symlink_to(victim)
    save(generator, link)
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and load(link).config == generator.config


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, generator, monkeypatch):
    dest = tmp_path / "g.safetensors"
    dest.write_bytes(b"old contents")

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        save(generator, dest)
    assert dest.read_bytes() == b"old contents" and sorted(p.name for p in tmp_path.iterdir()) == [dest.name]


def test_save_image_is_atomic_and_never_writes_through_a_link(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = tmp_path / "seed0000.png"
    planted.symlink_to(victim)
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    save_image(image, planted)
    assert victim.read_text() == "precious" and not planted.is_symlink()
    assert np.array_equal(np.asarray(PIL.Image.open(planted)), image)

    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        save_image(image[::-1].copy(), planted)
    assert np.array_equal(np.asarray(PIL.Image.open(planted)), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0000.png", "victim.txt"]
    with pytest.raises(ValueError, match="unknown image suffix"):
        save_image(image, tmp_path / "x.nope")


def _convert_process(src, dest):
    code = "import sys; from sgtriton.cli import main; sys.argv[0] = 'sgtriton'; main()"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code, "convert", str(src), str(dest)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_during_convert_leaves_the_destination_old_or_complete(tmp_path):
    """``kill -9`` at points spread over a ``convert BIG DEST`` run (most near its end, where the
    write happens): DEST is byte-for-byte the old file or the complete new one."""
    big_generator = small_generator(img_resolution=32, z_dim=256, w_dim=256,
                                    mapping_kwargs={"num_layers": 4},
                                    synthesis_kwargs={"channel_base": 4096, "channel_max": 192})
    src, dest = tmp_path / "big.pkl", tmp_path / "out.safetensors"
    src.write_bytes(nvlabs_pickle(big_generator))
    old = encode(small_generator(img_resolution=8))
    new = encode(big_generator)
    assert len(new) > 5 * 2**20

    def complete(data: bytes) -> bool:  # safetensors orders metadata keys per process: compare contents
        if len(data) != len(new):
            return False
        loaded = load(io.BytesIO(data))
        return loaded.config == big_generator.config and all(
            torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), big_generator.state_dict().values(),
                                              strict=True))

    start = time.perf_counter()
    proc = _convert_process(src, dest)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-2000:]
    full = time.perf_counter() - start
    assert complete(dest.read_bytes())

    outcomes = []
    for fraction in (0.85, 0.97):
        sgtriton.files.atomic_write(dest, old)
        proc = _convert_process(src, dest)
        time.sleep(full * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        data = dest.read_bytes()
        assert data == old or complete(data), f"kill at {fraction:.2f} of {full:.1f} s left a partial DEST"
        outcomes.append("old" if data == old else "new")
    print(f"convert took {full:.2f} s; DEST after kill -9 at 85/97%: {outcomes}")
