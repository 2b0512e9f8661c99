"""NVlabs TensorFlow pickles (StyleGAN1, StyleGAN2 configs A-F, ADA-TF) read without TensorFlow."""

import io
import pickle

import numpy as np
import pytest
import torch
from checkpoint_builders import (
    images,
    small_generator,
    tf_pickle,
    tf_stylegan1_variables,
    tf_stylegan2_variables,
)

from sgtriton.checkpoints import CheckpointError, load

KWARGS = {"resolution": 16, "num_channels": 3, "fmap_base": 64, "fmap_max": 16, "mapping_layers": 2,
          "latent_size": 12, "dlatent_size": 10, "truncation_psi": 0.5}


def assert_same(G, loaded, psi=1.0, cutoff=None):
    ws, img = images(G, psi=psi, cutoff=cutoff)
    ws2, img2 = images(loaded, psi=psi, cutoff=cutoff)
    torch.testing.assert_close(ws2, ws, rtol=0, atol=1e-6)
    torch.testing.assert_close(img2, img, rtol=0, atol=1e-5)


@pytest.mark.parametrize("architecture", ["skip", "orig", "resnet"])
def test_stylegan2_configs_e_f(architecture):
    G = small_generator(synthesis_kwargs={"architecture": architecture})
    data = tf_pickle(tf_stylegan2_variables(G), {**KWARGS, "architecture": architecture})
    loaded = load(io.BytesIO(data))
    assert loaded.config == G.config
    assert_same(G, loaded, psi=0.7)


def test_stylegan2_progressive_configs_b_to_d():
    """ToRGB_lod* naming (G_synthesis_stylegan_revised), which NVlabs legacy.py cannot convert."""
    G = small_generator(synthesis_kwargs={"architecture": "orig"})
    kwargs = {**KWARGS, "synthesis_func": "G_synthesis_stylegan_revised", "structure": "auto"}
    loaded = load(io.BytesIO(tf_pickle(tf_stylegan2_variables(G, progressive=True), kwargs)))
    assert loaded.config == G.config
    assert_same(G, loaded)


def test_stylegan2_ada_tf_conditional_with_fp16_kwargs():
    G = small_generator(c_dim=4, synthesis_kwargs={"num_fp16_res": 2, "conv_clamp": 256})
    kwargs = {**KWARGS, "label_size": 4, "num_fp16_res": 2, "conv_clamp": 256}
    loaded = load(io.BytesIO(tf_pickle(tf_stylegan2_variables(G), kwargs, protocol=2)))
    assert loaded.config == G.config
    assert_same(G, loaded)


@pytest.mark.parametrize("c_dim", [0, 3])
def test_stylegan1(c_dim):
    G = small_generator("stylegan1", c_dim=c_dim)
    loaded = load(io.BytesIO(tf_pickle(tf_stylegan1_variables(G), {"resolution": 16, "label_size": c_dim},
                                       version=3)))
    assert loaded.config == G.config
    assert loaded.config.block == "adain"
    assert (loaded.config.truncation_psi, loaded.config.truncation_cutoff) == (0.7, 8)
    assert_same(G, loaded, psi=0.7, cutoff=8)


def test_stylegan1_stored_truncation_kwargs_become_the_defaults():
    G = small_generator("stylegan1")
    kwargs = {"truncation_psi": 0.5, "truncation_cutoff": 4}
    config = load(io.BytesIO(tf_pickle(tf_stylegan1_variables(G), kwargs, version=3))).config
    assert (config.truncation_psi, config.truncation_cutoff) == (0.5, 4)
    kwargs = {"truncation_cutoff": None}  # TF G_style: no truncation at all without a cutoff
    config = load(io.BytesIO(tf_pickle(tf_stylegan1_variables(G), kwargs, version=3))).config
    assert (config.truncation_psi, config.truncation_cutoff) == (1.0, None)


def test_stylegan2_conditional_label_concat_is_refused():
    G = small_generator()
    gs, mapping, syn = tf_stylegan2_variables(G)
    mapping["LabelConcat/weight"] = np.zeros([3, 12], np.float32)
    with pytest.raises(CheckpointError, match="LabelConcat"):
        load(io.BytesIO(tf_pickle((gs, mapping, syn), KWARGS)))


def test_mid_transition_progressive_snapshot_is_refused():
    G = small_generator("stylegan1")
    gs, mapping, syn = tf_stylegan1_variables(G)
    gs["lod"] = np.float32(0.5)
    with pytest.raises(CheckpointError, match="lod"):
        load(io.BytesIO(tf_pickle((gs, mapping, syn), {}, version=3)))


def test_unknown_kwargs_and_unplaced_variables_are_refused():
    G = small_generator()
    variables = tf_stylegan2_variables(G)
    with pytest.raises(CheckpointError, match="unknown TensorFlow network kwarg"):
        load(io.BytesIO(tf_pickle(variables, {**KWARGS, "use_magic": True})))
    with pytest.raises(CheckpointError, match="nonlinearity"):
        load(io.BytesIO(tf_pickle(variables, {**KWARGS, "nonlinearity": "relu"})))
    variables[2]["8x8/Extra/weight"] = np.zeros([3], np.float32)
    with pytest.raises(CheckpointError, match="Extra"):
        load(io.BytesIO(tf_pickle(variables, KWARGS)))


def test_tuple_without_networks_is_not_tensorflow():
    with pytest.raises(CheckpointError, match="unrecognised"):
        load(io.BytesIO(pickle.dumps((1, 2, 3))))
