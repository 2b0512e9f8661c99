"""rosinality/stylegan2-pytorch .pt files: converted (g_ema + latent_avg) and training checkpoints."""

import argparse
import io
import warnings

import pytest
import torch
from checkpoint_builders import images, rosinality_state_dict, small_generator, torch_save_bytes

from sgtriton.checkpoints import CheckpointError, detect_format, load

SQUARE = {"z_dim": 10, "w_dim": 10}  # rosinality has z_dim == w_dim == style_dim


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-stream"])
def test_converted_checkpoint(legacy, tmp_path):
    G = small_generator(img_channels=1, **SQUARE)
    path = tmp_path / "550000.pt"
    path.write_bytes(torch_save_bytes({"g_ema": rosinality_state_dict(G), "latent_avg": G.mapping.w_avg}, legacy))
    assert detect_format(path) == "rosinality"
    loaded = load(path)
    assert loaded.config == G.config
    for psi in (1.0, 0.5):
        ws, img = images(G, psi=psi)
        ws2, img2 = images(loaded, psi=psi)
        assert torch.equal(ws, ws2) and torch.equal(img, img2)


def test_training_checkpoint_with_args_and_no_latent_avg():
    G = small_generator(img_resolution=32, **SQUARE)
    sd = rosinality_state_dict(G)
    ckpt = {"g": sd, "d": {"convs.0.0.weight": torch.zeros(1)}, "g_ema": sd,
            "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0, 0.99), "params": [0, 1]}]},
            "args": argparse.Namespace(size=32, n_mlp=2, latent=10, channel_multiplier=2, path="lmdb"),
            "ada_aug_p": 0.0}
    with pytest.warns(UserWarning, match="latent_avg"):
        loaded = load(io.BytesIO(torch_save_bytes(ckpt)))
    assert torch.equal(images(G)[1], images(loaded)[1])
    z = torch.randn([4096, 10], generator=torch.Generator().manual_seed(0))
    expected = G.mapping(z, None)[:, 0].mean(0)
    torch.testing.assert_close(loaded.mapping.w_avg, expected)


def test_args_that_contradict_the_weights_are_refused():
    G = small_generator(**SQUARE)
    ckpt = {"g_ema": rosinality_state_dict(G), "args": argparse.Namespace(size=256, n_mlp=2, latent=10)}
    with warnings.catch_warnings(), pytest.raises(CheckpointError, match="args.size=256"):
        warnings.simplefilter("ignore")
        load(io.BytesIO(torch_save_bytes(ckpt)))


def test_foreign_blur_kernel_and_extra_keys_are_refused():
    G = small_generator(**SQUARE)
    sd = rosinality_state_dict(G)
    sd["convs.0.conv.blur.kernel"] = torch.ones(4, 4) / 16
    with pytest.raises(CheckpointError, match="blur.kernel"):
        load(io.BytesIO(torch_save_bytes({"g_ema": sd, "latent_avg": G.mapping.w_avg})))
    sd = rosinality_state_dict(G)
    sd["to_rgbs.0.iwt.weight"] = torch.ones(1)  # e.g. SWAGAN
    with pytest.raises(CheckpointError, match="iwt"):
        load(io.BytesIO(torch_save_bytes({"g_ema": sd, "latent_avg": G.mapping.w_avg})))


def test_missing_g_ema():
    with pytest.raises(CheckpointError, match="unrecognised"):
        load(io.BytesIO(torch_save_bytes({"g": {"style.0.weight": torch.zeros(1)}})))
