"""Truncated, corrupt and contradictory files: a clear CheckpointError, never a generator."""

import io
import pickle
from collections import OrderedDict

import pytest
import torch
from checkpoint_builders import (
    PersistentModule,
    nvlabs_pickle,
    nvlabs_record,
    rosinality_state_dict,
    small_generator,
    torch_save_bytes,
)

from sgtriton.checkpoints import CheckpointError, load


@pytest.fixture(scope="module")
def generator():
    return small_generator(img_resolution=8)


def snapshot_with(G, edit):
    record = nvlabs_record(G, G)
    edit(record)
    return nvlabs_pickle(G, snapshot={"G": record, "G_ema": record})


def child(record, path):
    for name in path.split("."):
        record = record.state["_modules"][name]
    return record


@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.6, 0.999])
def test_truncated_pickle(generator, fraction):
    data = nvlabs_pickle(generator)
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        load(io.BytesIO(data[: int(len(data) * fraction)]))


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_torch_file(generator, legacy):
    data = torch_save_bytes({"g_ema": rosinality_state_dict(generator)}, legacy=legacy)
    with pytest.raises(CheckpointError, match="truncated|corrupt|zip"):
        load(io.BytesIO(data[: len(data) // 2]))


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, b"GIF89a" + b"\x01" * 50, b"\x80\x04\x95garbage"])
def test_garbage(data):
    with pytest.raises(CheckpointError):
        load(io.BytesIO(data))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot open"):
        load(tmp_path / "nope.pkl")


def test_missing_g_ema(generator):
    record = nvlabs_record(generator, generator)
    with pytest.raises(CheckpointError, match="no 'G_ema'.*'D', 'G'"):
        load(io.BytesIO(nvlabs_pickle(generator, snapshot={"G": record, "D": record})))


def test_g_ema_that_is_not_a_generator(generator):
    fake = PersistentModule("Discriminator", {"_modules": OrderedDict()}, "")
    with pytest.raises(CheckpointError, match="'Discriminator'"):
        load(io.BytesIO(nvlabs_pickle(generator, snapshot={"G_ema": fake})))


def test_shape_contradicting_the_configuration(generator):
    def edit(record):
        weight = torch.nn.Parameter(torch.zeros(16, 16, 1, 1))
        child(record, "synthesis.b8.conv1").state["_parameters"]["weight"] = weight

    with pytest.raises(CheckpointError, match=r"b8.conv1.weight \[16, 16, 1, 1\] \(expected \[16, 16, 3, 3\]\)"):
        load(io.BytesIO(snapshot_with(generator, edit)))


def test_missing_and_unexpected_tensors(generator):
    def edit(record):
        del child(record, "synthesis.b4.conv1").state["_parameters"]["bias"]
        child(record, "mapping").state["_buffers"]["extra"] = torch.zeros(2)

    with pytest.raises(CheckpointError, match="missing synthesis.b4.conv1.bias; unexpected mapping.extra"):
        load(io.BytesIO(snapshot_with(generator, edit)))


def test_stylegan3_is_refused(generator):
    def edit(record):
        synthesis = child(record, "synthesis")
        synthesis.state["_modules"] = OrderedDict(
            input=PersistentModule("SynthesisInput", {"_modules": OrderedDict()}, ""),
            L0_36_512=PersistentModule("SynthesisLayer", {"_modules": OrderedDict()}, ""))

    with pytest.raises(CheckpointError, match="StyleGAN3"):
        load(io.BytesIO(snapshot_with(generator, edit)))


class BadTensor:
    """A tensor whose size/stride reach past its storage."""

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (torch.zeros(4)._typed_storage(), 0, (100,), (1,), False,
                                                 OrderedDict())


def test_tensor_outside_its_storage(generator):
    def edit(record):
        child(record, "mapping").state["_buffers"]["w_avg"] = BadTensor()

    with pytest.raises(CheckpointError, match=r"size \[100\] has 100 elements, more than its storage holds \(4\)"):
        load(io.BytesIO(snapshot_with(generator, edit)))


def test_storage_blob_with_a_wrong_byte_count():
    data = pickle.dumps({"G_ema": torch.arange(4.0)}, protocol=4)
    count = (4).to_bytes(8, "little")
    corrupted = data.replace(count + torch.arange(4.0).numpy().tobytes(), (5).to_bytes(8, "little")
                             + torch.arange(4.0).numpy().tobytes())
    assert corrupted != data
    with pytest.raises(CheckpointError, match="holds 5 elements"):
        load(io.BytesIO(corrupted))
