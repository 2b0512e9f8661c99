"""Kernel backward == float64 reference autograd, for any registered block type.

One line in a plugin's tests, beside the forward test::

    from sgtriton.testing import block_gradient_test
    test_my_block_gradients_match_reference = block_gradient_test("my-block")

Each hypothesis example is a :class:`~sgtriton.testing.harness.LayerCase` drawn by the forward
harness's own strategy (:func:`~sgtriton.testing.harness.layer_cases`: the same sizes, styles,
noise modes, up-sampling and dtypes), built and filled the same way. The layer runs with
``impl='triton'`` in the drawn dtype and, deep-copied, with ``impl='reference'`` in float64; the loss
is ``sum(out * c)`` for a seeded random cotangent ``c``, zero at the outputs of a conv layer where
the kernel's forward and the reference's lie on different sides of lrelu's or the clamp's kink
(:func:`kink_disagreement`: the derivative jumps there, by a slope rather than a rounding).
Gradients w.r.t. the input ``x``, the
latent ``w``, the previous image (ToRGB with skip), every parameter and every stored noise buffer
must match through the tolerance table. With ``double_backward`` (default) the harness also
differentiates ``sum(dL/dw * c2)`` w.r.t. the parameters and ``x`` -- the shape of StyleGAN2's
path-length regulariser, which backpropagates through the backward.

Reduction lengths of the backward: a gradient element is a sum over the output elements it
influences, each carrying the rounding of the forward's own reduction. For a style layer an
element of ``w`` reaches every output of its sample through every input channel's style, so no
gradient element sums more than ``out.numel() * in_channels`` terms; the harness uses
``K_backward = K_forward + out.numel() * in_channels`` for every gradient (and twice that for the
double backward, which walks the chain forward and back again). As in the forward harness, atol
never drops below twice the error of the reference itself run in the kernel's dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from hypothesis import given

from sgtriton.testing.harness import (
    LayerCase,
    layer_cases,
    prepare_layer_case,
    run_layer,
)
from sgtriton.testing.tolerance import assert_close, precision_floor

#: Extra seed offsets so cotangents never coincide with the case's own random draws.
COTANGENT_SEED = 7919
SECOND_COTANGENT_SEED = 104729


def seeded_like(t: torch.Tensor, seed: int) -> torch.Tensor:
    """A float64 standard-normal tensor of ``t``'s shape on ``t``'s device, from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device)


def _noise_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b for name, b in module.named_buffers() if "noise" in name and b.is_floating_point()}


def kink_disagreement(actual: torch.Tensor, expected: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """Outputs of a style layer (``y = clamp(lrelu(v) * gain, +-clamp)``) where the kernel's forward
    (``actual``) and the reference's (``expected``) lie on different sides of a kink: the sign (lrelu's
    slope changes at 0) or the clamp. There the derivative jumps, so the two backwards differ by a
    slope, not by rounding; every other output is compared as it is."""
    a, e = actual.detach().to(torch.float64), expected.detach().to(torch.float64).to(actual.device)
    differs = (a > 0) != (e > 0)
    if clamp is not None and clamp >= 0:
        # A clamped output is stored as the clamp rounded to the output's dtype (fp16(0.3536) < 0.3536).
        stored_clamp = float(torch.tensor(clamp, dtype=actual.dtype))
        differs |= (a.abs() >= min(clamp, stored_clamp)) != (e.abs() >= clamp)
    return differs


def layer_gradients(module: torch.nn.Module, case: LayerCase, inputs: dict, dtype: torch.dtype, impl: str,
                    double_backward: bool, exclude: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Gradients of ``sum(out * c)`` w.r.t. inputs, parameters and noise buffers (and second-order ones).

    Keys: ``x``, ``w``, ``skip`` (when present), ``param:<name>``, ``buffer:<name>``, and with
    ``double_backward`` ``dd:<name>`` for ``d sum(dL/dw * c2) / d<name>`` (parameters and ``x``).
    ``exclude`` (bool, the output's shape) zeroes the cotangent there (:func:`kink_disagreement`).
    """
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None}
    call_inputs = {k: leaves.get(k) for k in inputs}
    params = {f"param:{n}": p for n, p in module.named_parameters()}
    for p in params.values():
        p.requires_grad_(True)
    buffers = {f"buffer:{n}": b.requires_grad_(True) for n, b in _noise_buffers(module).items()}
    out = run_layer(module, case, call_inputs, dtype, impl)
    cotangent = seeded_like(out, case.seed + COTANGENT_SEED)
    if exclude is not None:
        cotangent = cotangent.masked_fill(exclude.to(cotangent.device), 0.0)
    loss = (out.to(torch.float64) * cotangent).sum()
    targets = {**leaves, **params, **buffers}
    grads = torch.autograd.grad(loss, list(targets.values()), allow_unused=True, create_graph=double_backward)
    result = {k: g for k, g in zip(targets, grads, strict=True) if g is not None}
    if double_backward and "w" in result and result["w"].requires_grad:
        gw = result["w"]
        second = (gw.to(torch.float64) * seeded_like(gw, case.seed + SECOND_COTANGENT_SEED)).sum()
        inner = {"x": leaves["x"], **params}
        dd = torch.autograd.grad(second, list(inner.values()), allow_unused=True)
        result.update({f"dd:{k}": g for k, g in zip(inner, dd, strict=True) if g is not None})
    for b in buffers.values():
        b.requires_grad_(False)
    return {k: g.detach() for k, g in result.items()}


def backward_reduction_length(forward_length: int, out_numel: int, in_channels: int, order: int = 1) -> int:
    """``K`` of a gradient element (module docstring): ``K_forward + order * out.numel() * in_channels``."""
    return forward_length + order * out_numel * max(in_channels, 1)


def check_layer_gradients(case: LayerCase, device: torch.device | None = None, double_backward: bool = True) -> None:
    """Assert that ``case``'s Triton backward equals float64 reference autograd for every gradient."""
    block, module, reference, inputs = prepare_layer_case(case, device)
    same_dtype = copy.deepcopy(module)
    exclude = None
    if case.node.kind == "conv":
        with torch.no_grad():
            y_kernel = run_layer(copy.deepcopy(module), case, inputs, case.dtype, "triton")
            y_reference = run_layer(copy.deepcopy(reference), case, inputs, torch.float64, "reference")
        clamp = None if case.node.conv_clamp is None else case.node.conv_clamp * case.gain
        exclude = kink_disagreement(y_kernel, y_reference, clamp)
    actual = layer_gradients(module, case, inputs, case.dtype, "triton", double_backward, exclude)
    expected = layer_gradients(reference, case, inputs, torch.float64, "reference", double_backward, exclude)
    try:
        floor_grads = layer_gradients(same_dtype, case, inputs, case.dtype, "reference", double_backward, exclude)
    except RuntimeError:  # a half-precision op without a CPU implementation
        floor_grads = {}
    node = case.node
    out_numel = case.batch * node.out_channels * node.resolution * node.resolution
    forward_length = block.reduction_length(node)
    for key, want in expected.items():
        order = 2 if key.startswith("dd:") else 1
        # No gradient at all means a zero one (e.g. a bias only reaches dL/dw through activation masks).
        assert_close(actual.get(key, torch.zeros_like(want)), want, dtype=case.dtype,
                     reduction_length=backward_reduction_length(forward_length, out_numel, node.in_channels, order),
                     floor=precision_floor(floor_grads.get(key), want),
                     name=f"{case.block} {node.kind} ({node.name}, up={node.up}) gradient {key}")


def assert_block_gradients(block: str, dtypes: tuple[torch.dtype, ...] | None = None, max_resolution: int = 8,
                           double_backward: bool = True) -> None:
    """Property test: block ``block``'s Triton backward equals float64 reference autograd on drawn cases."""

    @given(layer_cases(block, dtypes, max_resolution))
    def run(case: LayerCase) -> None:
        check_layer_gradients(case, double_backward=double_backward)

    run()


def block_gradient_test(block: str, dtypes: tuple[torch.dtype, ...] | None = None, max_resolution: int = 8,
                        double_backward: bool = True) -> Callable[[], None]:
    """A pytest test function asserting kernel backward == reference autograd for ``block``."""

    def test() -> None:
        assert_block_gradients(block, dtypes, max_resolution, double_backward)

    test.__name__ = f"test_{block.replace('-', '_')}_gradients_match_reference"
    return test


def check_op_gradients(fn: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor | None], *,
                       dtype: torch.dtype, lengths: dict[str, int], activations: tuple[str, ...] = ("x",),
                       seed: int = 0, name: str = "op") -> dict[str, float]:
    """Assert that ``fn(impl, **inputs)``'s Triton backward equals its float64 reference autograd.

    ``inputs`` are float64 tensors (or ``None``); the Triton run gets ``activations`` in ``dtype``
    and every other tensor in float32 (parameters), the reference gets float64 copies. ``lengths``
    gives each input's backward reduction length (the number of terms summed into one of its
    gradient elements). Returns the max abs error per input, for reports.
    """
    def grads(impl: str, cast: Callable[[str, torch.Tensor], torch.Tensor]):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None}
        out = fn(impl, **{k: None if v is None else cast(k, leaves[k]) for k, v in inputs.items()})
        loss = (out.to(torch.float64) * seeded_like(out, seed + COTANGENT_SEED)).sum()
        return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()), allow_unused=True), strict=True))

    actual = grads("triton", lambda k, t: t.to(dtype if k in activations else torch.float32))
    expected = grads("ref", lambda k, t: t)
    errors = {}
    for key, want in expected.items():
        if want is None:
            continue
        got = actual[key] if actual[key] is not None else torch.zeros_like(want)
        errors[key] = float((got.double() - want).abs().max())
        assert_close(got, want, dtype=dtype, reduction_length=lengths[key], name=f"{name} d{key}")
    return errors
