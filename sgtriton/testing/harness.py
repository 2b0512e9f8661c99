"""Kernel == reference equivalence for any registered block type, built-in or third-party.

One line in a plugin's tests::

    from sgtriton.testing import block_equivalence_test
    test_my_block_matches_reference = block_equivalence_test("my-block")

Each hypothesis example builds one layer of the block (a style layer, the StyleGAN1 input layer, or
a ToRGB with or without the skip image) from a random :class:`~sgtriton.blocks.nodes.LayerNode`,
fills every parameter and buffer with random values, runs it with ``impl='triton'`` in the drawn
dtype and with ``impl='reference'`` in float64 (a deep copy), and compares the two through the
tolerance table with the block's reduction length (atol never below the precision floor: twice the
error of the reference itself run in the kernel's dtype, which only matters for ill-conditioned
cases such as normalising a tiny map). A failure prints max/mean abs error, the worst index, the
mismatch count, and the hypothesis example that produced it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import example, given
from hypothesis import strategies as st

from sgtriton.blocks.nodes import LayerNode
from sgtriton.filters import STYLEGAN_FILTER
from sgtriton.registry import create_block, get_block_class
from sgtriton.testing.devices import kernel_device
from sgtriton.testing.tolerance import assert_close, precision_floor

#: Channel counts drawn for inputs and outputs: odd and non-power-of-two sizes on purpose.
CHANNELS = (1, 2, 3, 5, 8, 12)
IMG_CHANNELS = (1, 3, 4)
W_DIMS = (1, 3, 8)
CLAMPS = (None, 0.5, 256.0)
RESAMPLE_FILTER = STYLEGAN_FILTER


#: Dtypes the harness draws: the ones every style-layer kernel declares (bf16 is declared only by
#: the elementwise kernels, and the interpreter's bf16 arithmetic is wrong).
DEFAULT_DTYPES = (torch.float32, torch.float16)


@dataclass(frozen=True)
class LayerCase:
    """One drawn test case: a node of a block plus everything its forward call needs."""

    block: str
    block_kwargs: dict[str, Any]
    node: LayerNode
    batch: int
    dtype: torch.dtype
    noise_mode: str
    fused_modconv: bool
    gain: float
    with_skip_image: bool
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)


def tile_boundaries(block: int) -> tuple[int, ...]:
    """Sizes on both sides of a tile of ``block``: ``1, block - 1, block, block + 1, 2 block + 3``."""
    return tuple(sorted({1, block - 1, block, block + 1, 2 * block + 3} - {0}))


#: Which size of a layer each tile meta-parameter of a conv kernel splits (``BLOCK_M`` counts pixels
#: of the input grid, so the drawn side is the smallest square past each boundary).
TILE_AXES = {"BLOCK_K": "in_channels", "BLOCK_N": "out_channels", "BLOCK_M": "pixels"}


def layer_kernels(block: str, kind: str, up: int, block_kwargs: dict[str, Any]) -> list[str]:
    """The declared kernels a ``kind`` layer of ``block`` launches (from the block's own list)."""
    from sgtriton.ops._runtime import KERNELS

    probe = LayerNode(f"synthesis.b8.{kind}", kind, block=block, resolution=8, in_channels=1, out_channels=1,
                      up=up, kernel_size=1 if kind == "torgb" else 3, w_index=0, w_dim=1, use_noise=True,
                      out_shape=(1, 8, 8), options={"resample_filter": RESAMPLE_FILTER, **block_kwargs})
    names = [k.split(":")[0].split("(")[0] for k in create_block(block, block_kwargs).kernels(probe, "triton")]
    return [n for n in names if n in KERNELS]


def tile_crossing_sizes(kernels: list[str]) -> dict[str, tuple[int, ...]]:
    """Per layer size (:data:`TILE_AXES`), the :func:`tile_boundaries` of every tile the kernels'
    configs declare for it (a launch may get any of them: tuned, or chosen by shape)."""
    from sgtriton.ops._runtime import KERNELS

    sizes: dict[str, set[int]] = {}
    for name in kernels:
        for config in KERNELS[name].configs:
            for meta, block in config.meta.items():
                if meta in TILE_AXES:
                    sizes.setdefault(TILE_AXES[meta], set()).update(tile_boundaries(block))
    return {axis: tuple(sorted(values)) for axis, values in sizes.items()}


@st.composite
def layer_cases(draw: st.DrawFn, block: str, dtypes: tuple[torch.dtype, ...] | None = None,
                max_resolution: int = 8) -> LayerCase:
    """Hypothesis strategy for :class:`LayerCase` s of block type ``block``.

    One size at a time (input channels, output channels or pixels) may be drawn from the tile
    boundaries of the layer's kernels, the others staying small (interpreter runs are slow).
    """
    cls = get_block_class(block)
    block_kwargs = {name: draw(st.sampled_from(list(values))) for name, values in cls.test_options.items()}
    kinds = ["conv", "torgb"] + (["input"] if cls.has_input_layer else [])
    kind = draw(st.sampled_from(kinds))
    up = draw(st.sampled_from([1, 2])) if kind == "conv" else 1
    crossing = tile_crossing_sizes(layer_kernels(block, kind, up, block_kwargs))
    axis = draw(st.sampled_from([None, *sorted(crossing)]))
    r_in = draw(st.integers(1, max(1, max_resolution // up)))
    if axis == "pixels":
        r_in = math.isqrt(draw(st.sampled_from(crossing["pixels"])) - 1) + 1
    resolution = r_in * up
    cin = draw(st.sampled_from(crossing["in_channels"] if axis == "in_channels" else CHANNELS))
    cout = draw(st.sampled_from(crossing["out_channels"] if axis == "out_channels" else
                                IMG_CHANNELS if kind == "torgb" else CHANNELS))
    if kind == "input":
        cout = cin
    w_dim = draw(st.sampled_from(W_DIMS))
    attr = {"conv": "conv0" if up > 1 else "conv1", "torgb": "torgb", "input": "input"}[kind]
    node = LayerNode(
        f"synthesis.b{resolution}.{attr}", kind, block=block, resolution=resolution, in_channels=cin,
        out_channels=cout, up=up,
        kernel_size=1 if kind == "torgb" else 3, w_index=0, w_dim=w_dim,
        conv_clamp=draw(st.sampled_from(CLAMPS)), use_noise=draw(st.booleans()),
        out_shape=(cout, resolution, resolution), options={"resample_filter": RESAMPLE_FILTER, **block_kwargs},
    )
    return LayerCase(
        block=block, block_kwargs=block_kwargs, node=node, batch=draw(st.integers(1, 4)),
        dtype=draw(st.sampled_from(list(dtypes or DEFAULT_DTYPES))),
        noise_mode=draw(st.sampled_from(["none", "const", "random"])), fused_modconv=draw(st.booleans()),
        gain=draw(st.sampled_from([1.0, math.sqrt(0.5)])),
        with_skip_image=kind == "torgb" and resolution % 2 == 0 and draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def production_layer_case(block: str, kind: str, up: int, resolution: int, batch: int, dtype: torch.dtype,
                          channels: int, block_kwargs: dict[str, Any] | None = None, seed: int = 0) -> LayerCase:
    """A fixed :class:`LayerCase` at real sizes: ``channels`` in and out (3 out for a ToRGB),
    ``w_dim = channels``, noise ``'random'`` with the layer's noise, ``conv_clamp`` 256."""
    cls = get_block_class(block)
    block_kwargs = dict(block_kwargs or {})
    for name, values in cls.test_options.items():
        block_kwargs.setdefault(name, values[0])
    cout = 3 if kind == "torgb" else channels
    attr = {"conv": "conv0" if up > 1 else "conv1", "torgb": "torgb", "input": "input"}[kind]
    node = LayerNode(
        f"synthesis.b{resolution}.{attr}", kind, block=block, resolution=resolution, in_channels=channels,
        out_channels=cout, up=up, kernel_size=1 if kind == "torgb" else 3, w_index=0, w_dim=channels,
        conv_clamp=256.0, use_noise=True, out_shape=(cout, resolution, resolution),
        options={"resample_filter": RESAMPLE_FILTER, **block_kwargs},
    )
    return LayerCase(block=block, block_kwargs=block_kwargs, node=node, batch=batch, dtype=dtype,
                     noise_mode="random", fused_modconv=True, gain=1.0,
                     with_skip_image=kind == "torgb" and resolution > 4, seed=seed)


def build_layer(case: LayerCase) -> torch.nn.Module:
    """The module of ``case`` with every parameter and buffer filled with seeded random values."""
    block = create_block(case.block, case.block_kwargs)
    module = block.make_torgb(case.node) if case.node.kind == "torgb" else block.make_layer(case.node)
    gen = torch.Generator().manual_seed(case.seed)
    with torch.no_grad():
        # Everything a checkpoint would hold (state-dict entries) except FIR taps, which are part of
        # the layer's definition; non-persistent buffers are fixed constants too.
        for name, tensor in module.state_dict(keep_vars=True).items():
            if name.endswith("_filter"):
                continue
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5 + (1.0 if name.endswith(".bias")
                                                                           and "affine" in name else 0.0))
    return module.eval()


def layer_inputs(case: LayerCase, device: torch.device) -> dict[str, torch.Tensor | None]:
    """``x``, ``w`` and (for ToRGB) the previous image, seeded by the case."""
    gen = torch.Generator().manual_seed(case.seed + 1)
    node = case.node
    r_in = node.resolution // node.up
    x = torch.randn([case.batch, node.in_channels, r_in, r_in], generator=gen)
    w = torch.randn([case.batch, node.w_dim], generator=gen)
    skip = None
    if case.with_skip_image:
        skip = torch.randn([case.batch, node.out_channels, node.resolution // 2, node.resolution // 2],
                           generator=gen)
    return {"x": x.to(device), "w": w.to(device), "skip": None if skip is None else skip.to(device)}


def run_layer(module: torch.nn.Module, case: LayerCase, inputs: dict, dtype: torch.dtype, impl: str) -> torch.Tensor:
    """Call the layer the way the synthesis network does (seeding the random noise draw)."""
    x = inputs["x"].to(dtype)
    w = inputs["w"].to(torch.float64 if dtype == torch.float64 else torch.float32)
    torch.manual_seed(case.seed)
    if case.node.kind == "torgb":
        skip = inputs["skip"]
        skip = None if skip is None else skip.to(torch.float64 if dtype == torch.float64 else torch.float32)
        uses_style = create_block(case.block, case.block_kwargs).torgb_uses_style
        return module(x, w if uses_style else None, fused_modconv=case.fused_modconv, impl=impl, skip=skip)
    return module(x, w, noise_mode=case.noise_mode, fused_modconv=case.fused_modconv, gain=case.gain, impl=impl)


def prepare_layer_case(case: LayerCase, device: torch.device | None = None):
    """``(block, module, float64 reference copy, inputs)`` for ``case`` on ``device`` (default: the
    kernel device); refuses a block without a ``'triton'`` implementation. Shared by the forward
    check here and the gradient check in :mod:`sgtriton.testing.gradients`."""
    device = device or kernel_device()
    block = create_block(case.block, case.block_kwargs)
    if "triton" not in block.implementations:
        raise AssertionError(f"block {case.block!r} declares no 'triton' implementation")
    module = build_layer(case).to(device)
    return block, module, copy.deepcopy(module).double(), layer_inputs(case, device)


def check_layer_case(case: LayerCase, device: torch.device | None = None) -> None:
    """Assert that ``case`` gives the same result from the Triton kernels and the float64 reference."""
    block, module, reference, inputs = prepare_layer_case(case, device)
    actual = run_layer(module, case, inputs, case.dtype, "triton")
    expected = run_layer(reference, case, inputs, torch.float64, "reference")
    assert_close(actual, expected, dtype=case.dtype, reduction_length=block.reduction_length(case.node),
                 floor=precision_floor(same_dtype_reference(module, case, inputs), expected),
                 name=f"{case.block} {case.node.kind} ({case.node.name}, up={case.node.up})")


def same_dtype_reference(module: torch.nn.Module, case: LayerCase, inputs: dict) -> torch.Tensor | None:
    """The reference run in the kernel's dtype (``None`` where PyTorch lacks that dtype's ops here)."""
    try:
        return run_layer(copy.deepcopy(module), case, inputs, case.dtype, "reference")
    except RuntimeError:  # e.g. a half-precision op without a CPU implementation
        return None


def assert_block_equivalent(block: str, dtypes: tuple[torch.dtype, ...] | None = None,
                            max_resolution: int = 8) -> None:
    """Property test: block ``block``'s Triton path equals its reference on drawn cases.

    Uses the active hypothesis profile (``ci`` by default; see :mod:`sgtriton.testing.profiles`).
    """

    @given(layer_cases(block, dtypes, max_resolution))
    def run(case: LayerCase) -> None:
        check_layer_case(case)

    for case in pinned_cases(block, dtypes):
        run = example(case)(run)
    run()


def pinned_cases(block: str, dtypes: tuple[torch.dtype, ...] | None = None) -> list[LayerCase]:
    """Boundary cases every run includes: for each value of each of the block's ``test_options``
    (a bank size above 4 takes the plugin's looped path), an up=2 layer with random noise and a
    style per sample at batch 3, in the first dtype with input channels one past the conv's
    ``BLOCK_K``, in the last with few channels."""
    dtypes = tuple(dtypes or DEFAULT_DTYPES)
    options = get_block_class(block).test_options
    variants = [{}] + [{name: value} for name, values in options.items() for value in values]
    cases = []
    for i, block_kwargs in enumerate(variants):
        case = production_layer_case(block, "conv", 2, 4, 3, dtypes[i % len(dtypes)], 3, block_kwargs, seed=i)
        in_channels = 3
        if i == 0:
            crossing = tile_crossing_sizes(layer_kernels(block, "conv", 2, case.block_kwargs))
            in_channels = sorted(crossing.get("in_channels", (4,)))[-2]  # BLOCK_K + 1
        node = dataclasses.replace(case.node, in_channels=in_channels, out_channels=5, w_dim=3, conv_clamp=0.5)
        cases.append(dataclasses.replace(case, node=node))
    return cases


def block_equivalence_test(block: str, dtypes: tuple[torch.dtype, ...] | None = None,
                           max_resolution: int = 8):
    """A pytest test function asserting kernel == reference for ``block`` (assign it to ``test_*``)."""

    def test() -> None:
        assert_block_equivalent(block, dtypes, max_resolution)

    test.__name__ = f"test_{block.replace('-', '_')}_kernels_match_reference"
    return test
