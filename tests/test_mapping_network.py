"""The mapping network on the Triton kernels against its float64 reference, conditional ones included.

A conditional StyleGAN2 mapping (NVlabs ``MappingNetwork``) embeds ``c`` with an FC layer, pixel-norms
``z`` and the embedding separately and feeds their concatenation to the chain without a further
norm; StyleGAN1's projects ``c`` without scaling and pixel-norms ``[z, projection]`` once. Draws cover
both flavours, label-only networks (``z_dim = 0``), explicit ``embed_features`` / ``layer_features``,
widths on both sides of the chain kernel's tiles and StyleGAN2's 512, and truncation.
"""

from __future__ import annotations

import copy

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sgtriton.config import make_config
from sgtriton.graph.builder import build_graph
from sgtriton.graph.mapping import MappingNetwork
from sgtriton.ops.fully_connected import MAPPING_CHAIN_KERNEL
from sgtriton.testing.harness import tile_boundaries
from sgtriton.testing.profiles import examples
from sgtriton.testing.tolerance import assert_close

TILE = MAPPING_CHAIN_KERNEL.default_config.meta
WIDTH = 512  # StyleGAN2's z_dim and w_dim


def mapping_case(flavour="stylegan2", z_dim=WIDTH, c_dim=10, w_dim=WIDTH, num_layers=2, embed_features=None,
                 layer_features=None, batch=2, one_hot=True, psi=0.7, cutoff=None, seed=0):
    """A pinned case: by default a conditional StyleGAN2 mapping at full width (two of its layers)."""
    return dict(flavour=flavour, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_layers=num_layers,
                embed_features=embed_features, layer_features=layer_features, batch=batch, one_hot=one_hot,
                psi=psi, cutoff=cutoff, seed=seed)


@st.composite
def mapping_cases(draw):
    flavour = draw(st.sampled_from(["stylegan2", "stylegan1"]))
    small = (1, 3, 8)
    return mapping_case(
        flavour=flavour,
        # A label-only network has no z; StyleGAN1 always has one.
        z_dim=draw(st.sampled_from([*([0] if flavour == "stylegan2" else []), *small, TILE["BLOCK_K"] + 1])),
        c_dim=draw(st.sampled_from([1, 3, 10])),
        w_dim=draw(st.sampled_from(sorted({*small, *tile_boundaries(TILE["BLOCK_N"])} - {2 * TILE["BLOCK_N"] + 3}))),
        num_layers=draw(st.integers(1, 3)),
        embed_features=draw(st.sampled_from([None, 1, 5])),
        layer_features=draw(st.sampled_from([None, 7])),
        batch=draw(st.sampled_from([1, 2, 3, TILE["BLOCK_M"] + 1])),
        one_hot=draw(st.booleans()),
        psi=draw(st.sampled_from([1.0, 0.7, -0.5])),
        cutoff=draw(st.sampled_from([None, 0, 1, 2])),
        seed=draw(st.integers(0, 2**16)),
    )


def build_pair(case, device):
    """``(reference float64, triton float32)`` mapping networks with the same seeded weights, biases and
    ``w_avg`` (biases and ``w_avg`` non-zero so that their terms count)."""
    mapping_kwargs = dict(num_layers=case["num_layers"], embed_features=case["embed_features"],
                          layer_features=case["layer_features"], flavour=case["flavour"])
    config = make_config(z_dim=case["z_dim"], c_dim=case["c_dim"], w_dim=case["w_dim"], img_resolution=4,
                         mapping_kwargs=mapping_kwargs, synthesis_kwargs={"channel_base": 8, "channel_max": 2})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case["seed"])
        reference = MappingNetwork(build_graph(config), backend="reference").eval()
    gen = torch.Generator().manual_seed(case["seed"] + 1)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 50)  # stored / lr (0.01): effective bias ~ 0.5
        reference.w_avg.copy_(torch.randn(reference.w_avg.shape, generator=gen))
    triton = copy.deepcopy(reference).to(device)
    return reference.double().to(device), triton


def mapping_inputs(case, device):
    gen = torch.Generator().manual_seed(case["seed"] + 2)
    z = torch.randn([case["batch"], case["z_dim"]], generator=gen) if case["z_dim"] else None
    if case["one_hot"]:
        c = torch.eye(case["c_dim"])[torch.randint(case["c_dim"], [case["batch"]], generator=gen)]
    else:
        c = torch.randn([case["batch"], case["c_dim"]], generator=gen)
    return (None if z is None else z.to(device)), c.to(device)


def reduction_length(case, mapping: MappingNetwork) -> int:
    """Terms summed on the way to ``w``: the label embedding, the norms, then every FC layer."""
    embed = mapping.embed.weight.shape[0]
    first = mapping.fc0.weight.shape[1]
    layer = mapping.fc0.weight.shape[0]
    return case["c_dim"] + embed + 2 * first + layer * (case["num_layers"] - 1)


@settings(deadline=None, max_examples=examples(8))
@given(case=mapping_cases())
@example(case=mapping_case())
@example(case=mapping_case(flavour="stylegan1", z_dim=TILE["BLOCK_K"] - 1, w_dim=TILE["BLOCK_N"] - 1, cutoff=1,
                           seed=1))  # StyleGAN1: embed_features defaults to z_dim
@example(case=mapping_case(z_dim=0, c_dim=3, num_layers=1, seed=2))  # label only
@example(case=mapping_case(z_dim=TILE["BLOCK_K"] + 1, w_dim=TILE["BLOCK_N"] + 1, batch=TILE["BLOCK_M"] + 1,
                           c_dim=3, num_layers=3, one_hot=False, seed=3))  # one past every tile, two programs
@example(case=mapping_case(z_dim=TILE["BLOCK_K"], w_dim=TILE["BLOCK_N"], embed_features=5, layer_features=7,
                           num_layers=3, seed=4))  # explicit embedding and layer widths (last layer [w_dim, 7])
def test_conditional_mapping_matches_float64_reference(case, device):
    reference, triton = build_pair(case, device)
    z, c = mapping_inputs(case, device)
    kwargs = dict(truncation_psi=case["psi"], truncation_cutoff=case["cutoff"])
    expected = reference(None if z is None else z.double(), c.double(), impl="reference", **kwargs)
    actual = triton(z, c, impl="triton", **kwargs)
    assert actual.dtype == torch.float32
    assert actual.shape == (case["batch"], triton.num_ws, case["w_dim"])
    assert_close(actual, expected, dtype=torch.float32, reduction_length=reduction_length(case, triton),
                 name=f"{case['flavour']} conditional mapping")
