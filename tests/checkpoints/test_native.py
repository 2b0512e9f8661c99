"""sgtriton's native format: safetensors + configuration metadata, exact round trips, no pickle."""

import io
import json
import struct

import pytest
import safetensors.torch
import torch
from checkpoint_builders import images, nvlabs_pickle, small_generator

from sgtriton.checkpoints import CheckpointError, convert, detect_format, load, save


@pytest.mark.parametrize("preset", ["stylegan1", "revised", "stylegan2-f"])
def test_round_trip_is_exact(preset, tmp_path):
    G = small_generator(preset, c_dim=2, synthesis_kwargs={"num_fp16_res": 1})
    path = tmp_path / "g.safetensors"
    save(G, path)
    assert detect_format(path) == "native"
    loaded = load(path, backend="reference")
    assert loaded.config == G.config
    for key, value in G.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(images(G, psi=0.7)[1], images(loaded, psi=0.7)[1])


def test_metadata_holds_the_full_configuration():
    G = small_generator("stylegan1")
    buf = io.BytesIO()
    save(G, buf)
    data = buf.getvalue()
    (size,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + size])["__metadata__"]
    assert metadata["format"] == "sgtriton.generator"
    assert json.loads(metadata["config"]) == json.loads(json.dumps(G.config.to_dict()))


def test_convert_from_an_nvlabs_pickle(tmp_path):
    G = small_generator(c_dim=3)
    src, dst = tmp_path / "snapshot.pkl", tmp_path / "g.safetensors"
    src.write_bytes(nvlabs_pickle(G))
    converted = convert(src, dst)
    loaded = load(dst)
    assert loaded.config == converted.config == G.config
    assert torch.equal(images(G)[1], images(loaded)[1])


def test_foreign_and_broken_safetensors_are_refused():
    foreign = safetensors.torch.save({"w": torch.zeros(2)}, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="without sgtriton metadata"):
        load(io.BytesIO(foreign))
    buf = io.BytesIO()
    save(small_generator(img_resolution=8), buf)
    with pytest.raises(CheckpointError, match="corrupt|truncated"):
        load(io.BytesIO(buf.getvalue()[:-100]))
