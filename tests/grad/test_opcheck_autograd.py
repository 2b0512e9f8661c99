"""``torch.library.opcheck`` on every custom op with inputs that require grad: schema, fake kernel,
autograd registration and AOT dispatch (forward and backward traced as ``torch.compile`` does)."""

import pytest
import torch

import sgtriton.ops.fully_connected  # noqa: F401  (registers the mapping ops)
import sgtriton.ops.modconv  # noqa: F401
import sgtriton.ops.normalization  # noqa: F401
import sgtriton.ops.torgb  # noqa: F401
from sgtriton.ops.upfirdn2d import setup_filter


def leaf(*shape, seed, device):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device).requires_grad_()


def op_cases(device):
    x = leaf(2, 3, 4, 4, seed=1, device=device)
    s = leaf(2, 3, seed=2, device=device)
    strength = leaf(1, seed=3, device=device)
    yield "modulated_conv2d", (x, leaf(4, 3, 3, 3, seed=4, device=device), s, leaf(4, seed=5, device=device),
                               leaf(2, 1, 4, 4, seed=6, device=device), strength, None, 1, True, "lrelu", 0.2,
                               1.4, 0.5, True)
    yield "modulated_conv2d", (x, leaf(2, 3, 3, 3, seed=4, device=device), s, None, None, None,
                               setup_filter([1, 3, 3, 1]).to(device), 2, True, "linear", 0.0, 1.0, None, False)
    yield "torgb", (x, leaf(3, 3, 1, 1, seed=7, device=device), s, leaf(3, seed=8, device=device),
                    leaf(2, 3, 2, 2, seed=9, device=device), 0.5)
    yield "bias_act", (x, leaf(3, seed=10, device=device), 1, "lrelu", 0.2, 1.4, 0.7)
    yield "upfirdn2d", (x, setup_filter([1, 3, 3, 1]).to(device), [2, 2], [1, 1], [2, 1, 2, 1], False, 4.0)
    z = leaf(3, 5, seed=11, device=device)
    yield "pixel_norm", (z, 1e-8)
    yield "fully_connected", (z, leaf(4, 5, seed=12, device=device), leaf(4, seed=13, device=device), 0.4, 1.0,
                              "lrelu", 0.2, 1.4)
    yield "mapping_chain", (z, [leaf(4, 5, seed=14, device=device), leaf(4, 4, seed=15, device=device)],
                            [leaf(4, seed=16, device=device), leaf(4, seed=17, device=device)], [0.4, 0.5], 1.0,
                            "lrelu", 0.2, 1.4, True, 1e-8)
    yield "truncate", (z, leaf(5, seed=18, device=device), 3, 0.7, 2)
    yield "adain_epilogue", (x, leaf(2, 1, 4, 4, seed=19, device=device), leaf(3, seed=20, device=device),
                             leaf(3, seed=21, device=device), leaf(2, 6, seed=22, device=device), 0.2, 1e-8)
    yield "rms_normalize", (x, leaf(4, 4, seed=23, device=device), strength, leaf(3, seed=24, device=device),
                            "lrelu", 0.2, 1.4, 0.8, 1e-8)


OP_NAMES = ["modulated_conv2d", "modulated_conv2d_up2", "torgb", "bias_act", "upfirdn2d", "pixel_norm",
            "fully_connected", "mapping_chain", "truncate", "adain_epilogue", "rms_normalize"]


#: The checks that cost seconds; ``test_aot_dispatch_dynamic`` traces forward and backward (minutes
#: under the interpreter for the conv ops), so it runs for every op on the gpu tier and for the cheap
#: ops everywhere.
QUICK_CHECKS = ("test_schema", "test_autograd_registration", "test_faketensor")


@pytest.mark.parametrize("index", range(len(OP_NAMES)), ids=OP_NAMES)
def test_opcheck_autograd_registration(device, index):
    name, args = list(op_cases(device))[index]
    torch.library.opcheck(getattr(torch.ops.sgtriton, name).default, args, test_utils=QUICK_CHECKS)


CHEAP_OPS = ["bias_act", "pixel_norm", "fully_connected", "mapping_chain", "truncate", "rms_normalize"]


@pytest.mark.parametrize("index", [OP_NAMES.index(n) for n in CHEAP_OPS], ids=CHEAP_OPS)
def test_opcheck_aot_dispatch_cheap_ops(device, index):
    name, args = list(op_cases(device))[index]
    torch.library.opcheck(getattr(torch.ops.sgtriton, name).default, args)


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(len(OP_NAMES)), ids=OP_NAMES)
def test_opcheck_aot_dispatch_with_gradients(device, index):
    name, args = list(op_cases(device))[index]
    torch.library.opcheck(getattr(torch.ops.sgtriton, name).default, args)
