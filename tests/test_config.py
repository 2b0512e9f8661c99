"""Configurations, presets and argument validation."""

import pytest

from sgtriton.config import PRESETS, GeneratorConfig, make_config


def test_presets_resolve_to_the_documented_block_and_architecture():
    expected = {
        "stylegan1": ("adain", "orig", 16384),
        "revised": ("revised", "orig", 16384),
        "stylegan2-b": ("moddemod", "orig", 16384),
        "stylegan2-e": ("moddemod", "skip", 16384),
        "stylegan2-f": ("moddemod", "skip", 32768),
    }
    assert set(PRESETS) == set(expected)
    for preset, (block, arch, base) in expected.items():
        cfg = make_config(preset)
        assert (cfg.block, cfg.synthesis.architecture, cfg.synthesis.channel_base) == (block, arch, base)


def test_stylegan1_defaults_truncation_and_mapping_flavour():
    cfg = make_config("stylegan1")
    assert (cfg.truncation_psi, cfg.truncation_cutoff) == (0.7, 8)
    assert cfg.mapping.flavour == "stylegan1"


@pytest.mark.parametrize("base,expected", [
    (32768, {4: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}),
    (16384, {4: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}),
])
def test_channel_table(base, expected):
    cfg = make_config(synthesis_kwargs={"channel_base": base})
    assert {r: cfg.channels(r) for r in expected} == expected


def test_fp16_resolution_marks_the_highest_blocks():
    cfg = make_config(img_resolution=1024, synthesis_kwargs={"num_fp16_res": 4})
    assert cfg.fp16_resolution == 128
    assert make_config(img_resolution=8, num_fp16_res=4).fp16_resolution == 8


def test_nvlabs_and_flat_keywords_agree():
    a = make_config(None, img_resolution=64, synthesis_kwargs={"channel_base": 1024, "conv_clamp": 256})
    b = make_config(None, img_resolution=64, channel_base=1024, conv_clamp=256)
    assert a == b


def test_round_trip_through_dict():
    cfg = make_config("stylegan2-e", img_resolution=32, c_dim=3, block_kwargs={})
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs,needle", [
    ({"img_resolution": 48}, "img_resolution=48"),
    ({"img_resolution": 2}, "img_resolution=2"),
    ({"z_dim": -1}, "z_dim=-1"),
    ({"w_dim": 0}, "w_dim=0"),
    ({"synthesis_kwargs": {"architecture": "unet"}}, "architecture='unet'"),
    ({"synthesis_kwargs": {"channel_bass": 1}}, "channel_bass"),
    ({"mapping_kwargs": {"num_layers": 0}}, "num_layers=0"),
    ({"nonsense": 1}, "nonsense"),
    ({"synthesis_kwargs": {"conv_clamp": -5}}, "conv_clamp=-5"),
])
def test_bad_configuration_names_the_argument(kwargs, needle):
    with pytest.raises((ValueError, TypeError), match=needle.replace("(", r"\(").replace("[", r"\[")):
        make_config("stylegan2-f", **kwargs)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="preset='stylegan3'.*stylegan2-f"):
        make_config("stylegan3")


def test_resolution_2048_builds():
    cfg = make_config("stylegan2-f", img_resolution=2048)
    assert cfg.block_resolutions[-1] == 2048 and cfg.channels(2048) == 16
