"""NVlabs PyTorch snapshots (ada nested kwargs, sg3 flat kwargs) -> identical generators."""

import io

import pytest
import torch
from checkpoint_builders import images, nvlabs_pickle, nvlabs_record, small_generator

from sgtriton.checkpoints import CheckpointError, detect_format, load

CASES = {
    "ada-skip": ("ada", {}),
    "ada-orig": ("ada", {"synthesis_kwargs": {"architecture": "orig"}}),
    "ada-resnet-rgba": ("ada", {"synthesis_kwargs": {"architecture": "resnet"}, "img_channels": 4}),
    "ada-conditional": ("ada", {"c_dim": 5}),
    "ada-gray-32px-fp16": ("ada", {"img_channels": 1, "img_resolution": 32,
                                   "synthesis_kwargs": {"num_fp16_res": 2, "conv_clamp": 256}}),
    "sg3-skip-fp16-clamp": ("sg3", {"synthesis_kwargs": {"num_fp16_res": 4, "conv_clamp": 256}}),
    "sg3-resnet-conditional": ("sg3", {"c_dim": 3, "synthesis_kwargs": {"architecture": "resnet"}}),
    "sg3-two-channels-no-noise": ("sg3", {"img_channels": 2, "synthesis_kwargs": {"use_noise": False}}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_snapshot_loads_into_an_identical_generator(name):
    flavour, kwargs = CASES[name]
    G = small_generator(**kwargs)
    loaded = load(io.BytesIO(nvlabs_pickle(G, flavour)), backend="reference")
    assert loaded.config == G.config
    assert loaded.state_dict().keys() == G.state_dict().keys()
    for key, value in G.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    for psi in (1.0, 0.6):
        ws, img = images(G, psi=psi)
        ws2, img2 = images(loaded, psi=psi)
        assert torch.equal(ws, ws2) and torch.equal(img, img2)


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_every_pickle_protocol(protocol, tmp_path):
    G = small_generator(img_resolution=8)
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(nvlabs_pickle(G, protocol=protocol))
    assert detect_format(path) == "nvlabs"
    loaded = load(path, device="cpu")
    assert torch.equal(images(G)[1], images(loaded)[1])


def test_flavour_defaults_fill_absent_values():
    """Where modules store no conv_clamp and kwargs are silent, ada means None and sg3 means 256."""
    G = small_generator(img_resolution=8)
    for flavour, expected in (("ada", None), ("sg3", 256)):
        record = nvlabs_record(G, G, flavour)
        stack = [record]
        while stack:
            rec = stack.pop()
            rec.state.pop("conv_clamp", None)
            stack.extend(rec.state.get("_modules", {}).values())
        kwargs = record.state["_init_kwargs"]
        (kwargs.get("synthesis_kwargs") or kwargs).pop("conv_clamp")
        snapshot = {"G": record, "G_ema": record}
        assert load(io.BytesIO(nvlabs_pickle(G, snapshot=snapshot))).config.synthesis.conv_clamp == expected


def test_per_module_values_win_over_kwargs():
    """use_fp16 / conv_clamp stored in the modules decide, not the (possibly stale) kwargs."""
    G = small_generator(synthesis_kwargs={"num_fp16_res": 1, "conv_clamp": 128.0})
    record = nvlabs_record(G, G, "ada")
    record.state["_init_kwargs"]["synthesis_kwargs"].update(num_fp16_res=0, conv_clamp=None)
    loaded = load(io.BytesIO(nvlabs_pickle(G, snapshot={"G_ema": record})))
    assert loaded.config.synthesis.num_fp16_res == 1
    assert loaded.config.synthesis.conv_clamp == 128.0


def test_loading_leaves_the_global_rng_alone():
    data = nvlabs_pickle(small_generator(img_resolution=8))
    state = torch.get_rng_state()
    load(io.BytesIO(data))
    assert torch.equal(state, torch.get_rng_state())


def test_modules_disagreeing_on_conv_clamp_are_refused():
    G = small_generator(img_resolution=8)
    record = nvlabs_record(G, G, "ada")
    record.state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["conv1"].state["conv_clamp"] = 64
    with pytest.raises(CheckpointError, match="conv_clamp"):
        load(io.BytesIO(nvlabs_pickle(G, snapshot={"G_ema": record})))
