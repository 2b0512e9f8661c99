"""Kernel == reference equivalence for any registered block type, built-in or third-party.

One line in a plugin's tests::

    from sgtriton.testing import block_equivalence_test
    test_my_block_matches_reference = block_equivalence_test("my-block")

Each hypothesis example builds one layer of the block (a style layer, the StyleGAN1 input layer, or
a ToRGB with or without the skip image) from a random :class:`~sgtriton.graph.nodes.LayerNode`,
fills every parameter and buffer with random values, runs it with ``impl='triton'`` in the drawn
dtype and with ``impl='reference'`` in float64 (a deep copy), and compares the two through the
tolerance table with the block's reduction length (atol never below the precision floor: twice the
error of the reference itself run in the kernel's dtype, which only matters for ill-conditioned
cases such as normalising a tiny map). A failure prints max/mean abs error, the worst index, the
mismatch count, and the hypothesis example that produced it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import given
from hypothesis import strategies as st

from sgtriton.graph.nodes import LayerNode
from sgtriton.ops.upfirdn2d import STYLEGAN_FILTER
from sgtriton.registry import create_block, get_block_class
from sgtriton.testing.tolerance import assert_close, precision_floor

#: Channel counts drawn for inputs and outputs: odd and non-power-of-two sizes on purpose.
CHANNELS = (1, 2, 3, 5, 8, 12)
IMG_CHANNELS = (1, 3, 4)
W_DIMS = (1, 3, 8)
CLAMPS = (None, 0.5, 256.0)
RESAMPLE_FILTER = STYLEGAN_FILTER


def default_device() -> torch.device:
    """CUDA when present, else the CPU (kernels then run under Triton's interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


@st.composite
def layer_cases(draw: st.DrawFn, block: str, dtypes: tuple[torch.dtype, ...] | None = None,
                max_resolution: int = 8) -> LayerCase:
    """Hypothesis strategy for :class:`LayerCase` s of block type ``block``."""
    cls = get_block_class(block)
    block_kwargs = {name: draw(st.sampled_from(list(values))) for name, values in cls.test_options.items()}
    kinds = ["conv", "torgb"] + (["input"] if cls.has_input_layer else [])
    kind = draw(st.sampled_from(kinds))
    up = draw(st.sampled_from([1, 2])) if kind == "conv" else 1
    r_in = draw(st.integers(1, max(1, max_resolution // up)))
    resolution = r_in * up
    cin = draw(st.sampled_from(CHANNELS))
    cout = draw(st.sampled_from(IMG_CHANNELS if kind == "torgb" else CHANNELS))
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


def check_layer_case(case: LayerCase, device: torch.device | None = None) -> None:
    """Assert that ``case`` gives the same result from the Triton kernels and the float64 reference."""
    device = device or default_device()
    block = create_block(case.block, case.block_kwargs)
    if "triton" not in block.implementations:
        raise AssertionError(f"block {case.block!r} declares no 'triton' implementation")
    module = build_layer(case).to(device)
    reference = copy.deepcopy(module).double()
    inputs = layer_inputs(case, device)
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

    run()


def block_equivalence_test(block: str, dtypes: tuple[torch.dtype, ...] | None = None,
                           max_resolution: int = 8):
    """A pytest test function asserting kernel == reference for ``block`` (assign it to ``test_*``)."""

    def test() -> None:
        assert_block_equivalent(block, dtypes, max_resolution)

    test.__name__ = f"test_{block.replace('-', '_')}_kernels_match_reference"
    return test
