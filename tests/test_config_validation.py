"""Configuration values are checked (types, ranges, finiteness, limits) before anything is built."""

import math

import pytest

from sgtriton.config import GeneratorConfig, make_config


@pytest.mark.parametrize("kwargs,match", [
    ({"truncation_psi": math.nan}, "truncation_psi=nan: expected a finite number"),
    ({"truncation_psi": math.inf}, "truncation_psi=inf: expected a finite number"),
    ({"truncation_psi": "0.7"}, "truncation_psi='0.7': expected a number"),
    ({"truncation_cutoff": -1}, "truncation_cutoff=-1"),
    ({"img_resolution": 65536}, "img_resolution=65536: expected a power of two from 4 to 16384"),
    ({"img_resolution": 10**20000}, "img_resolution=<an integer of about 20000 digits>"),
    ({"img_resolution": 1024, "synthesis_kwargs": {"channel_base": 512}}, "no feature maps at 1024x1024"),
    ({"synthesis_kwargs": {"conv_clamp": "abc"}}, "conv_clamp='abc': expected a number"),
    ({"synthesis_kwargs": {"conv_clamp": math.nan}}, "conv_clamp=nan"),
    ({"synthesis_kwargs": {"resample_filter": 5}}, "resample_filter=5: expected a list"),
    ({"synthesis_kwargs": {"resample_filter": [1, "x"]}}, "resample_filter='x'"),
    ({"synthesis_kwargs": {"use_noise": "yes"}}, "use_noise='yes'"),
    ({"synthesis_kwargs": {"channel_max": 2**20}}, "channel_max=1048576: expected an int >= 1 and <= 65536"),
    ({"mapping_kwargs": {"lr_multiplier": "abc"}}, "lr_multiplier='abc'"),
    ({"mapping_kwargs": {"w_avg_beta": 2.0}}, r"w_avg_beta=2.0: expected a number in \[0, 1\]"),
    ({"mapping_kwargs": {"num_layers": 10**6}}, "num_layers=1000000"),
    ({"w_dim": 10**9}, "w_dim=1000000000"),
    ({"block_kwargs": [1]}, "block_kwargs=\\[1\\]: expected a dict"),
])
def test_bad_values_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_config("stylegan2-f", **kwargs)


def test_a_label_only_stylegan1_mapping_needs_an_embedding_width():
    # StyleGAN1 projects the label to z_dim features: with z_dim=0 its first layer would have no input.
    with pytest.raises(ValueError, match="z_dim=0 with mapping_kwargs.flavour='stylegan1'.*embed_features > 0"):
        make_config("stylegan1", z_dim=0, c_dim=4)
    config = make_config("stylegan1", z_dim=0, c_dim=4, mapping_kwargs={"embed_features": 16})
    assert config.mapping.embed_features == 16
    make_config("stylegan2-f", z_dim=0, c_dim=4)  # StyleGAN2 embeds the label to w_dim features


def test_the_preset_argument_is_a_name():
    config = make_config("stylegan2-f", img_resolution=8)
    with pytest.raises(TypeError, match="preset: got a GeneratorConfig; pass it as config="):
        make_config(config)
    with pytest.raises(ValueError, match="preset=3: expected None or one of"):
        make_config(3)


def test_from_dict_refuses_unknown_and_mistyped_parts():
    good = make_config("stylegan1", img_resolution=16).to_dict()
    assert GeneratorConfig.from_dict(good) == make_config("stylegan1", img_resolution=16)
    with pytest.raises(ValueError, match="unexpected keys \\['evil'\\]"):
        GeneratorConfig.from_dict({**good, "evil": 1})
    with pytest.raises(ValueError, match="config.synthesis: expected a dict"):
        GeneratorConfig.from_dict({**good, "synthesis": [1]})
    with pytest.raises(ValueError, match="config: expected a dict"):
        GeneratorConfig.from_dict([1])


def test_numbers_are_stored_as_floats_so_saved_configs_are_plain_json():
    cfg = make_config("stylegan2-f", synthesis_kwargs={"conv_clamp": 256}, truncation_psi=1)
    assert isinstance(cfg.synthesis.conv_clamp, float) and isinstance(cfg.truncation_psi, float)
