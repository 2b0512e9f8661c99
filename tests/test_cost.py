"""Cost model: FLOPs from the graph, minimum bytes per node, launches, device peaks and the roofline."""

import math

import pytest
import torch

from sgtriton.blocks.nodes import LayerNode
from sgtriton.graph.cost import (
    Cost,
    bias_act_cost,
    device_peak,
    generator_cost,
    node_cost,
    roofline_fraction,
    roofline_seconds,
    upfirdn2d_cost,
)
from sgtriton.graph.plan import meta_generator, plan_rows


def test_config_f_at_1024_is_75_4_gmac_per_image():
    G = meta_generator("stylegan2-f", img_resolution=1024, backend="reference")
    cost = generator_cost(G, batch=1)
    assert cost.flops == pytest.approx(2 * 75.385e9, rel=1e-5)
    # One source of truth: the plan's FLOPs.
    assert cost.flops == sum(row.flops for row in plan_rows(G))


def test_flops_scale_with_batch_and_parameter_bytes_do_not():
    G = meta_generator("stylegan2-e", img_resolution=64, backend="reference")
    one, eight = generator_cost(G, batch=1), generator_cost(G, batch=8)
    assert eight.flops == 8 * one.flops
    assert one.bytes < eight.bytes < 8 * one.bytes  # weights are read once per batch


def test_launches_per_image_come_from_the_plan():
    G = meta_generator("stylegan2-f", img_resolution=256, backend="reference")
    rows = plan_rows(G, "cpu")
    assert generator_cost(G, batch=4).launches == sum(len(r.kernels) for r in rows)


def test_bias_act_bytes_are_one_read_and_one_write():
    shape = (2, 8, 16, 16)
    numel = math.prod(shape)
    for dtype, size in ((torch.float32, 4), (torch.float16, 2)):
        cost = bias_act_cost(shape, dtype)
        assert cost.bytes == numel * size + 8 * 4 + numel * size  # read x, read b (fp32), write y
    assert bias_act_cost(shape, has_bias=False).bytes == 2 * numel * 4


def test_upfirdn2d_counts_only_useful_taps():
    # 2x upsample with a 4x4 filter: each output sees 4 of the 16 taps (the rest hit inserted zeros).
    cost = upfirdn2d_cost((1, 3, 8, 8), (1, 3, 16, 16), filter_taps=16, up=2)
    assert cost.flops == 2 * 3 * 16 * 16 * 4
    assert cost.bytes == (3 * 64 + 3 * 256) * 4 + 16 * 4


def test_conv_node_bytes_follow_the_activation_dtype():
    node = LayerNode("synthesis.b16.conv0", "conv", block="moddemod", resolution=16, in_channels=32,
                     out_channels=64, up=2, w_index=3, w_dim=8, out_shape=(64, 16, 16))
    stored = 1000
    fp32 = node_cost(node, macs_per_sample=10, batch=2, dtype=torch.float32, stored_values=stored)
    fp16 = node_cost(node, macs_per_sample=10, batch=2, dtype=torch.float16, stored_values=stored)
    activations32 = 2 * (32 * 8 * 8 + 64 * 16 * 16) * 4
    assert fp32.bytes == activations32 + stored * 4 + 2 * 8 * 4
    assert fp32.bytes - fp16.bytes == activations32 // 2
    assert fp32.flops == fp16.flops == 2 * 2 * 10


def test_fp16_blocks_count_as_fp16_only_on_cuda():
    G = meta_generator("stylegan2-f", img_resolution=64, num_fp16_res=2, conv_clamp=256, backend="reference")
    on_cpu, on_cuda = generator_cost(G, 4, "cpu"), generator_cost(G, 4, "cuda")
    assert on_cuda.bytes < on_cpu.bytes
    dtypes = {n.node.name: n.cost.dtype for n in on_cuda.nodes}
    assert dtypes["synthesis.b64.conv1"] == torch.float16
    assert dtypes["synthesis.b8.conv1"] == torch.float32
    assert dtypes["synthesis.b64.upsample_image"] == torch.float32
    assert all(n.cost.dtype == torch.float32 for n in on_cpu.nodes)
    assert generator_cost(G, 4, "cuda", force_fp32=True).bytes == on_cpu.bytes


@pytest.mark.parametrize("name,expected", [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("Intel(R) Xeon(R) Processor", None),
    (None, None),
])
def test_device_peak_lookup(name, expected):
    peak = device_peak(name)
    assert (peak.name if peak else None) == expected


def test_roofline_is_the_slower_of_compute_and_memory():
    h100 = device_peak("H100")
    compute_bound = Cost(flops=int(h100.peak_flops(torch.float16) * 1e-3), bytes=1000, dtype=torch.float16)
    memory_bound = Cost(flops=10, bytes=int(h100.bandwidth * 1e-3), dtype=torch.float16)  # 1 ms of traffic
    assert h100.peak_flops(torch.float16) == pytest.approx(989.4e12, rel=1e-3)  # datasheet, dense
    assert roofline_seconds(compute_bound, h100) == pytest.approx(1e-3)
    assert roofline_seconds(memory_bound, h100) == pytest.approx(1e-3)
    assert roofline_fraction(compute_bound, 4e-3, h100) == pytest.approx(0.25)
    assert roofline_fraction(compute_bound, 4e-3, None) is None


def test_generator_roofline_sums_nodes():
    G = meta_generator("stylegan2-f", img_resolution=1024, backend="reference")
    cost = generator_cost(G, batch=1, device="cuda")
    h100 = device_peak("H100")
    floor = cost.roofline_seconds(h100)
    # At least the compute floor of the whole network at the fp32 (TF32) peak.
    assert floor >= cost.flops / h100.peak_flops(torch.float32)
    assert roofline_fraction(cost, 2 * floor, h100) == pytest.approx(0.5)


def test_generator_cost_rejects_a_bad_batch():
    G = meta_generator("stylegan2-f", img_resolution=32, backend="reference")
    with pytest.raises(ValueError, match="batch"):
        generator_cost(G, batch=0)
