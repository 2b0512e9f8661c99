"""Each custom op's backward against float64 reference autograd, with reduction lengths derived per gradient.

For a modulated conv with ``x [N, I, H, W]``, ``weight [O, I, k, k]``, ``up`` and output
``[N, O, H up, W up]`` (forward ``K = I k k``; the cotangent reaches the backward through ``d``,
which carries that reduction too):

* ``dx[n, i, p]``: the output channels and taps (and phases) that read ``x[n, i, p]`` -> ``O k^2 up^2 + K``;
* ``dweight[o, i, k]``: every output pixel of channel ``o`` over the batch -> ``N H W up^2 + K``;
* ``dstyles[n, i]``: every pixel of ``x[n, i]`` times the channels and taps reading it -> ``H W O k^2 up^2 + K``;
* ``dbias[o]`` and ``dnoise_strength``: sums of ``N H W up^2`` and ``N O H W up^2`` output gradients;
* ``dnoise[n, 0, p]``: the ``O`` channels it is added to.
"""

import pytest
import torch

from sgtriton.ops.bias_act import bias_act
from sgtriton.ops.fully_connected import fully_connected, mapping_chain, normalize_2nd_moment, truncate
from sgtriton.ops.modconv import modulated_conv2d_layer
from sgtriton.ops.normalization import adain_epilogue, rms_normalize_epilogue
from sgtriton.ops.torgb import torgb_layer
from sgtriton.ops.upfirdn2d import setup_filter, upfirdn2d
from sgtriton.testing.gradients import check_op_gradients

F64 = torch.float64
DTYPES = [torch.float32, torch.float16]


def randn(*shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def to(device, **tensors):
    return {k: None if v is None else v.to(device) for k, v in tensors.items()}


# (batch, in, out, size, kernel, up, demodulate, clamp): a 9x9 map crosses the 64-pixel default tile.
MODCONV_CASES = [
    (2, 5, 3, 9, 3, 1, True, 0.5),
    (1, 3, 4, 4, 3, 2, True, None),
    (2, 4, 3, 3, 3, 2, False, 1.0),
    (2, 6, 2, 5, 1, 1, True, None),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,cin,cout,size,k,up,demodulate,clamp", MODCONV_CASES)
def test_modulated_conv_gradients(device, dtype, batch, cin, cout, size, k, up, demodulate, clamp):
    out_px = size * size * up * up
    fwd = cin * k * k
    inputs = to(device, x=randn(batch, cin, size, size, seed=1), weight=randn(cout, cin, k, k, seed=2),
                styles=randn(batch, cin, seed=3) + 1, bias=randn(cout, seed=4),
                noise=randn(batch, 1, size * up, size * up, seed=5), noise_strength=randn(1, seed=6))
    lengths = {"x": cout * k * k * up * up + fwd, "weight": batch * out_px + fwd,
               "styles": size * size * cout * k * k * up * up + fwd, "bias": batch * out_px,
               "noise": cout, "noise_strength": batch * cout * out_px}

    def layer(impl, x, weight, styles, bias, noise, noise_strength):
        return modulated_conv2d_layer(x, weight, styles, bias=bias, noise=noise, noise_strength=noise_strength,
                                      up=up, demodulate=demodulate, clamp=clamp, impl=impl)

    check_op_gradients(layer, inputs, dtype=dtype, lengths=lengths, name=f"modconv up={up} k={k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_skip,clamp", [(True, 0.4), (False, None)])
def test_torgb_gradients(device, dtype, with_skip, clamp):
    n, cin, cout, size = 2, 5, 3, 6
    inputs = to(device, x=randn(n, cin, size, size, seed=1), weight=randn(cout, cin, 1, 1, seed=2),
                styles=randn(n, cin, seed=3), bias=randn(cout, seed=4),
                img=randn(n, cout, size // 2, size // 2, seed=5) if with_skip else None)
    # dimg: the 2x2 taps of the [1,3,3,1] upsample per axis reach 4 x 4 output pixels.
    lengths = {"x": cout, "weight": n * size * size, "styles": size * size * cout, "bias": n * size * size,
               "img": 16}

    def layer(impl, x, weight, styles, bias, img):
        return torgb_layer(x, weight, styles, bias, img=img, clamp=clamp, impl=impl)

    check_op_gradients(layer, inputs, dtype=dtype, lengths=lengths, name="torgb")


@pytest.mark.parametrize("act,clamp", [("lrelu", 0.6), ("relu", None), ("linear", 0.3)])
def test_bias_act_gradients(device, act, clamp):
    inputs = to(device, x=randn(3, 4, 5, seed=1), b=randn(4, seed=2))
    check_op_gradients(lambda impl, x, b: bias_act(x, b, 1, act, clamp=clamp, impl=impl), inputs,
                       dtype=torch.float32, lengths={"x": 1, "b": 15}, name=f"bias_act {act}")


#: Asymmetric filters (a symmetric one such as [1, 3, 3, 1] would hide a missing flip in the adjoint):
#: a 2x3 non-separable one and an 8-tap separable one.
ASYMMETRIC_2D = [[1.0, 2.0, 0.5], [3.0, 1.0, 4.0]]
ASYMMETRIC_1D = [1.0, 2.0, 3.0, 5.0, 4.0, 0.5, 2.0, 1.5]


@pytest.mark.parametrize("taps,up,down,padding,flip", [
    ([1, 3, 3, 1], 2, 1, [2, 1, 2, 1], False), (ASYMMETRIC_2D, 1, 2, [1, 1, 1, 1], False),
    (ASYMMETRIC_2D, 3, 2, [0, 2, 1, -1], True), (ASYMMETRIC_1D, 2, 1, [4, 3, 4, 3], False)])
def test_upfirdn2d_gradients(device, taps, up, down, padding, flip):
    f = setup_filter(taps).to(device)
    inputs = to(device, x=randn(2, 3, 5, 6, seed=1))
    fw, fh = f.shape[-1], f.shape[0]
    check_op_gradients(lambda impl, x: upfirdn2d(x, f.to(x.dtype), up, down, padding, flip, 2.0, impl=impl),
                       inputs, dtype=torch.float32, lengths={"x": fw * fh}, name=f"upfirdn2d up={up} down={down}")


def test_mapping_ops_gradients(device):
    x, w0, w1, w2 = randn(3, 7, seed=1), randn(5, 7, seed=2), randn(5, 5, seed=3), randn(5, 5, seed=4)
    b0, b1, b2 = randn(5, seed=5), randn(5, seed=6), randn(5, seed=7)
    check_op_gradients(lambda impl, x: normalize_2nd_moment(x, impl=impl), to(device, x=x),
                       dtype=torch.float32, lengths={"x": 14}, name="pixel norm")
    check_op_gradients(lambda impl, x, weight, bias: fully_connected(x, weight, bias, 0.4, 0.5, "lrelu", impl=impl),
                       to(device, x=x, weight=w0, bias=b0), dtype=torch.float32,
                       lengths={"x": 5, "weight": 3, "bias": 3}, name="fully connected")

    def chain(impl, x, w0, w1, w2, b0, b1, b2):
        return mapping_chain(x, [w0, w1, w2], [b0, b1, b2], [0.4, 0.3, 0.3], 0.5, impl=impl)

    # Three layers of 5 (and the input's 7) in the chain, over a batch of 3.
    check_op_gradients(chain, to(device, x=x, w0=w0, w1=w1, w2=w2, b0=b0, b1=b1, b2=b2), dtype=torch.float32,
                       lengths=dict.fromkeys(("x", "w0", "w1", "w2", "b0", "b1", "b2"), 3 * (5 * 3 + 7)),
                       name="mapping chain")
    check_op_gradients(lambda impl, w, w_avg: truncate(w, w_avg, 4, 0.7, 2, impl=impl),
                       to(device, w=x, w_avg=randn(7, seed=8)), dtype=torch.float32,
                       lengths={"w": 4, "w_avg": 6}, name="truncate")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shared_noise", [True, False])
def test_epilogue_gradients(device, dtype, shared_noise):
    n, c, size = 2, 3, 5
    noise = randn(size, size, seed=2) if shared_noise else randn(n, 1, size, size, seed=2)
    hw = size * size
    # Statistics couple every pixel of a plane: each gradient element sums over the plane (twice).
    adain_inputs = to(device, x=randn(n, c, size, size, seed=1), noise=noise, noise_weight=randn(c, seed=3),
                      bias=randn(c, seed=4), style=randn(n, 2 * c, seed=5))
    adain_lengths = {"x": 2 * hw, "noise": 2 * hw * c * n, "noise_weight": 2 * hw * n, "bias": 2 * hw * n,
                     "style": hw}
    check_op_gradients(lambda impl, **t: adain_epilogue(**t, impl=impl), adain_inputs, dtype=dtype,
                       lengths=adain_lengths, activations=("x", "noise"), name="adain epilogue")

    def rms(impl, x, noise, noise_strength, bias):
        return rms_normalize_epilogue(x, noise, noise_strength, bias, act="lrelu", clamp=0.9, impl=impl)

    rms_inputs = to(device, x=randn(n, c, size, size, seed=1), noise=noise, noise_strength=randn(1, seed=6),
                    bias=randn(c, seed=4))
    check_op_gradients(rms, rms_inputs, dtype=dtype, activations=("x", "noise"), name="rms epilogue",
                       lengths={"x": 2 * hw, "noise": c * n, "noise_strength": n * c * hw, "bias": n * hw})
