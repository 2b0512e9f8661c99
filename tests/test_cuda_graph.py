"""A synthesis forward can be captured in a CUDA graph: after one warm-up it does device work only.

On this machine there is no GPU to capture with, so the property a capture needs is checked
directly: the second forward, on the Triton backend (under the interpreter) and on the reference
backend, runs inside :func:`sgtriton.testing.host_sync.no_host_syncs`, which refuses every call
that would make the host wait for the device or feed it host memory. The detector itself is
tested on each kind of call it refuses. Capture and replay on a GPU: ``tests/gpu/test_cuda_graph_replay.py``.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from sgtriton import CudaGraphSynthesis, build_generator
from sgtriton.blocks.layers import per_sample_noise
from sgtriton.cli import main
from sgtriton.testing.host_sync import HostSyncError, no_host_syncs

TINY = {"img_resolution": 8, "z_dim": 8, "w_dim": 8, "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": {"channel_base": 64, "channel_max": 8}}
PRESETS = {"moddemod": "stylegan2-f", "adain": "stylegan1", "revised": "stylegan2-f"}


def tiny_generator(block: str, backend: str):
    kwargs = {**TINY, "block": block} if block == "revised" else TINY
    return build_generator(PRESETS[block], seed=0, backend=backend, **kwargs)


CASES = [("moddemod", "const"), ("moddemod", "random"), ("moddemod", "none"), ("adain", "random"),
         ("revised", "random")]


# 'none' draws no noise and skips a subset of what 'const' does: not worth its interpreter time.
@pytest.mark.parametrize(("block", "noise_mode", "backend"),
                         [(*case, "reference") for case in CASES]
                         + [(*case, "triton") for case in CASES if case[1] != "none"])
def test_synthesis_does_no_host_work_after_warmup(block, noise_mode, backend):
    G = tiny_generator(block, backend)
    ws = torch.randn(2, G.num_ws, G.w_dim)
    warm = G.synthesis(ws, noise_mode=noise_mode)  # compiles, fills the weight-derived caches
    with no_host_syncs():
        img = G.synthesis(ws, noise_mode=noise_mode)
    assert img.shape == warm.shape == (2, 3, 8, 8)
    if noise_mode != "random":
        assert torch.equal(img, warm)


def test_per_sample_noise_is_host_work():
    """CPU generators draw on the host: why the graph path pre-draws that noise into static buffers."""
    G = tiny_generator("moddemod", "reference")
    ws = torch.randn(1, G.num_ws, G.w_dim)
    with per_sample_noise([torch.Generator().manual_seed(0)]):
        G.synthesis(ws, noise_mode="random")
        with no_host_syncs(), pytest.raises(HostSyncError, match=r"torch\.randn makes a tensor on the host"):
            G.synthesis(ws, noise_mode="random")


def _refused(fn) -> str:
    with no_host_syncs(), pytest.raises(HostSyncError) as info:
        fn()
    return str(info.value)


def test_detector_refuses_each_kind_of_host_work():
    x, repeats = torch.arange(6.0).reshape(2, 3), torch.tensor([1, 2])
    assert "reads a tensor value" in _refused(lambda: x[0, 0].item())
    assert "reads a tensor value" in _refused(lambda: bool(x[0, 0]))
    assert "reads a tensor value" in _refused(lambda: range(x[0, 1].long()))
    assert "reads a tensor value" in _refused(lambda: x.tolist())
    assert "reads a tensor value" in _refused(lambda: x.cpu())
    assert "depends on the data" in _refused(lambda: x.nonzero())
    assert "depends on the data" in _refused(lambda: torch.where(x > 2))
    assert "boolean mask" in _refused(lambda: x[x > 2])
    assert "depends on the data" in _refused(lambda: x.repeat_interleave(repeats, dim=0))
    assert "from host data" in _refused(lambda: torch.tensor([1.0, 2.0]))
    assert "no device=" in _refused(lambda: torch.arange(3))
    assert "no device=" in _refused(lambda: torch.ones([2]))


@torch.library.custom_op("sgtriton_tests::offset_by_host_arange", mutates_args=())
def _offset_by_host_arange(x: torch.Tensor) -> torch.Tensor:
    return x + torch.arange(x.shape[-1]).to(x.device)  # a host-made tensor, hidden inside an op


def test_detector_sees_inside_custom_ops():
    """The kernels run inside ``torch.library`` custom ops: the check must see what their Python does."""
    x = torch.zeros(2, 3)
    assert "no device=" in _refused(lambda: torch.ops.sgtriton_tests.offset_by_host_arange(x))


def test_detector_allows_device_work():
    x = torch.arange(6.0).reshape(2, 3)
    with no_host_syncs():
        y = torch.ones([2, 3], device=x.device) + x.new_zeros([2, 3]) + torch.empty_like(x).fill_(1)
        z = torch.where(x > 2, x, y).repeat_interleave(2, dim=0) + torch.randn([4, 3], device=x.device)
        w = torch.as_tensor(x) * 2  # already a tensor: no host data
        x.to(torch.float64)
    assert z.shape == (4, 3) and w.shape == x.shape


def test_detector_exempts_the_interpreter_and_restores_it():
    """Triton's interpreter copies a kernel's arguments to the host: that is the simulated GPU."""
    from triton.runtime.interpreter import GridExecutor

    original = GridExecutor.__call__
    G = tiny_generator("moddemod", "triton")
    ws = torch.randn(1, G.num_ws, G.w_dim)
    G.synthesis(ws, noise_mode="const")
    with no_host_syncs():
        assert GridExecutor.__call__ is not original
        G.synthesis(ws, noise_mode="const")
        with pytest.raises(HostSyncError):
            ws.sum().item()
    assert GridExecutor.__call__ is original


def test_cuda_graph_synthesis_refuses_a_cpu_tensor():
    G = tiny_generator("moddemod", "reference")
    with pytest.raises(ValueError, match=r"ws: CUDA graphs need a CUDA device, got ws on cpu"):
        CudaGraphSynthesis(G.synthesis)(torch.zeros(1, G.num_ws, G.w_dim))
    with pytest.raises(ValueError, match=r"warmup_calls=0"):
        CudaGraphSynthesis(G.synthesis, warmup_calls=0)


def test_generate_cuda_graph_on_cpu_names_the_option(tmp_path):
    result = CliRunner().invoke(main, ["generate", "--preset", "stylegan2-f", "--resolution", "8", "--seeds", "0",
                                       "--device", "cpu", "--cuda-graph", "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "--cuda-graph needs a CUDA device (got --device cpu)" in result.output
    assert not (tmp_path / "out").exists()


@pytest.fixture
def eager_recorder(monkeypatch):
    """:class:`CudaGraphSynthesis` on a CPU: "capture" runs the forward, "replay" runs it again into
    the same output tensor. Everything but the CUDA graph itself is the real code: signatures, the
    warm-up, the static ws and noise buffers, re-recording after a weight change."""
    from sgtriton import cuda_graph

    recorded = []

    def record(forward, device):
        output = forward()
        recorded.append(output)
        return (lambda: output.copy_(forward())), output

    monkeypatch.setattr(cuda_graph, "DEVICE_TYPE", "cpu")
    monkeypatch.setattr(cuda_graph, "warm_up_on_side_stream", lambda warm_up, device: warm_up())
    monkeypatch.setattr(cuda_graph, "record_graph", record)
    return recorded


def test_replays_read_the_new_ws_and_one_recording_per_signature(eager_recorder):
    G = tiny_generator("moddemod", "reference")
    graphed = CudaGraphSynthesis(G.synthesis)
    for seed in range(3):
        ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(graphed(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"))
    assert graphed.captures == 1 and len(eager_recorder) == 1
    graphed(ws[:1], noise_mode="const")  # a ragged last batch is another signature
    graphed(ws, noise_mode="none")
    assert graphed.captures == 3


def test_per_sample_noise_is_drawn_as_an_eager_forward_draws_it(eager_recorder):
    G = tiny_generator("moddemod", "reference")
    with torch.no_grad():
        for name, p in G.synthesis.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)  # noise visible in the image
    graphed = CudaGraphSynthesis(G.synthesis)
    ws = torch.randn(2, G.num_ws, G.w_dim)
    images = []
    for seeds in ((1, 2), (3, 4), (1, 2)):
        with per_sample_noise([torch.Generator().manual_seed(s) for s in seeds]):
            eager = G.synthesis(ws, noise_mode="random")
        with per_sample_noise([torch.Generator().manual_seed(s) for s in seeds]):
            images.append(graphed(ws, noise_mode="random"))
        assert torch.equal(images[-1], eager), seeds
    assert not torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])
    assert graphed.captures == 1


def test_an_in_place_weight_update_is_recorded_again(eager_recorder):
    G = tiny_generator("moddemod", "reference")
    graphed = CudaGraphSynthesis(G.synthesis, clone_output=False)
    ws = torch.randn(1, G.num_ws, G.w_dim)
    first = graphed(ws, noise_mode="const").clone()
    with torch.no_grad():
        G.synthesis.b8.conv0.weight[:, :1].mul_(3)  # not a uniform scale, which demodulation cancels
    assert torch.equal(graphed(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"))
    assert not torch.equal(graphed(ws, noise_mode="const"), first)
    assert len(eager_recorder) == 2 and graphed.captures == 1


@pytest.mark.parametrize("noise_mode", ["const", "random"])
def test_generate_with_cuda_graph_writes_the_eager_files(eager_recorder, tmp_path, noise_mode):
    from sgtriton.generation.run import run_generation

    G = tiny_generator("moddemod", "reference")
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    quiet = {"echo": lambda m: None, "warn": lambda m: None, "show_progress": False, "grid": False}
    for graphed in (False, True):  # seeds 0-2 in batches of 2: a ragged last batch, two signatures
        run_generation(G, tmp_path / str(graphed), seeds=[0, 1, 2], batch_size=2, noise_mode=noise_mode,
                       file_format="npz", cuda_graph=graphed, **quiet)
    for seed in (0, 1, 2):
        name = f"seed{seed:04d}.npz"
        assert (tmp_path / "True" / name).read_bytes() == (tmp_path / "False" / name).read_bytes(), name
    assert len(eager_recorder) == 2
