"""Graph builder: nodes, w indexing, parameter counts and the plan."""

import math

import pytest

from sgtriton.config import make_config
from sgtriton.graph.builder import build_graph
from sgtriton.graph.plan import format_plan, meta_generator, plan_rows


@pytest.mark.parametrize("preset", ["stylegan1", "revised", "stylegan2-b", "stylegan2-e", "stylegan2-f"])
@pytest.mark.parametrize("resolution", [4, 8, 32, 256, 1024, 2048])
def test_num_ws_is_2_log2_r_minus_2(preset, resolution):
    graph = build_graph(make_config(preset, img_resolution=resolution))
    assert graph.num_ws == 2 * int(math.log2(resolution)) - 2
    used = {n.w_index for n in graph.synthesis_nodes if n.w_index is not None}
    assert used == set(range(graph.num_ws))


@pytest.mark.parametrize("arch", ["skip", "orig", "resnet"])
def test_torgb_shares_its_w_with_the_next_conv0(arch):
    graph = build_graph(make_config("stylegan2-f", img_resolution=64, architecture=arch))
    nodes = {n.name: n for n in graph.synthesis_nodes}
    for r in (4, 8, 16, 32):
        if f"synthesis.b{r}.torgb" in nodes:
            assert nodes[f"synthesis.b{r}.torgb"].w_index == nodes[f"synthesis.b{2 * r}.conv0"].w_index
    for k in range(3, 7):  # block 2^k: conv0 <- w[2k-5], conv1 <- w[2k-4]
        assert nodes[f"synthesis.b{2**k}.conv0"].w_index == 2 * k - 5
        assert nodes[f"synthesis.b{2**k}.conv1"].w_index == 2 * k - 4
    assert nodes["synthesis.b64.torgb"].w_index == 2 * 6 - 3
    torgbs = [n for n in nodes if n.endswith("torgb")]
    assert len(torgbs) == (5 if arch == "skip" else 1)


def test_stylegan1_layers_consume_one_w_each_and_torgb_none():
    graph = build_graph(make_config("stylegan1", img_resolution=32))
    layers = [n for n in graph.synthesis_nodes if n.kind in ("input", "conv")]
    assert [n.w_index for n in layers] == list(range(8))
    (torgb,) = [n for n in graph.synthesis_nodes if n.kind == "torgb"]
    assert torgb.w_index is None and torgb.resolution == 32


@pytest.mark.parametrize("preset,resolution,expected", [
    ("stylegan2-f", 1024, 30_370_060),
    ("stylegan2-e", 1024, 24_900_764),
    ("stylegan2-e", 256, 24_767_458),
    ("stylegan2-f", 256, 30_034_338),
    ("stylegan2-f", 512, 30_276_583),
])
def test_parameter_counts_match_the_documented_values(preset, resolution, expected):
    G = meta_generator(preset, img_resolution=resolution)
    assert sum(p.numel() for p in G.parameters()) == expected


def test_stylegan1_parameter_count_matches_official_print_layers():
    # Official Gs @1024 prints 26,219,627 including 9 ToRGB_lod layers; lod 0 alone runs, so our
    # generator holds the lod-0 ToRGB only: subtract the other eight (16..512 channels -> 3).
    G = meta_generator("stylegan1", img_resolution=1024)
    other_lods = sum(3 * c + 3 for c in (512, 512, 512, 512, 256, 128, 64, 32))
    assert sum(p.numel() for p in G.parameters()) == 26_219_627 - other_lods


def test_plan_reports_totals():
    G = meta_generator("stylegan2-f", img_resolution=1024)
    text = format_plan(G, plan_rows(G))
    assert "total parameters: 30,370,060" in text
    assert "75.385 GMAC" in text
    assert "synthesis.b1024.conv0" in text and "32x1024x1024" in text
