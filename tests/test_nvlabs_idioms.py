"""NVlabs training idioms on sgtriton generators, each against our own re-expression of what the
NVlabs code (stylegan2-ada-pytorch, stylegan3) does: rebuilding from ``init_args``/``init_kwargs``,
``w_avg`` tracking, layer and block attributes, ``misc.copy_params_and_buffers`` and a training
loop that drives the synthesis blocks itself."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from sgtriton import build_generator

TINY = {"z_dim": 16, "w_dim": 16, "img_resolution": 16, "mapping_kwargs": {"num_layers": 2},
        "synthesis_kwargs": {"channel_base": 64, "channel_max": 16}}


def tiny(architecture: str = "skip", seed: int = 0, **kwargs):
    config = copy.deepcopy(TINY)
    config["synthesis_kwargs"]["architecture"] = architecture
    config.update(kwargs)
    G = build_generator(None, seed=seed, backend="reference", **config)
    # Non-zero noise strengths and biases, so noise and bias paths show up in every comparison.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias") and "affine" not in name:
                p.copy_(torch.randn_like(p) * 0.3)
    return G


# --- NVlabs semantics, re-expressed ---------------------------------------------------------------


def nvlabs_copy_params_and_buffers(src: nn.Module, dst: nn.Module, require_all: bool = False) -> None:
    """torch_utils.misc.copy_params_and_buffers: every named parameter and buffer of ``dst`` (all of
    them, persistent or not) is looked up by name in ``src``; a missing one fails under require_all."""
    src_tensors = dict([*src.named_parameters(), *src.named_buffers()])
    for name, tensor in [*dst.named_parameters(), *dst.named_buffers()]:
        assert name in src_tensors or not require_all, f"{name} missing in the source"
        if name in src_tensors:
            tensor.copy_(src_tensors[name].detach()).requires_grad_(tensor.requires_grad)


def nvlabs_generator_tensors(res: int, channels, img_channels: int, w_dim: int, z_dim: int, num_layers: int,
                             architecture: str) -> dict[str, tuple[tuple[int, ...], bool]]:
    """The NVlabs ``Generator`` parameters and buffers (name -> (shape, is_buffer)), written out from the
    documented layout of ``training/networks.py`` (SynthesisBlock / SynthesisLayer / ToRGBLayer /
    Conv2dLayer / MappingNetwork, unconditional, use_noise)."""
    out: dict[str, tuple[tuple[int, ...], bool]] = {}

    def layer(prefix, cin, cout, r, k=3):
        out[f"{prefix}.weight"] = ((cout, cin, k, k), False)
        out[f"{prefix}.noise_strength"] = ((), False)
        out[f"{prefix}.bias"] = ((cout,), False)
        out[f"{prefix}.resample_filter"] = ((4, 4), True)
        out[f"{prefix}.noise_const"] = ((r, r), True)
        out[f"{prefix}.affine.weight"] = ((cin, w_dim), False)
        out[f"{prefix}.affine.bias"] = ((cin,), False)

    def torgb(prefix, cin):
        out[f"{prefix}.weight"] = ((img_channels, cin, 1, 1), False)
        out[f"{prefix}.bias"] = ((img_channels,), False)
        out[f"{prefix}.affine.weight"] = ((cin, w_dim), False)
        out[f"{prefix}.affine.bias"] = ((cin,), False)

    r = 4
    while r <= res:
        b = f"synthesis.b{r}"
        if r == 4:
            out[f"{b}.const"] = ((channels(4), 4, 4), False)
        out[f"{b}.resample_filter"] = ((4, 4), True)
        if r > 4:
            layer(f"{b}.conv0", channels(r // 2), channels(r), r)
        layer(f"{b}.conv1", channels(r), channels(r), r)
        if architecture == "skip" or r == res:
            torgb(f"{b}.torgb", channels(r))
        if architecture == "resnet" and r > 4:
            out[f"{b}.skip.weight"] = ((channels(r), channels(r // 2), 1, 1), False)
            out[f"{b}.skip.resample_filter"] = ((4, 4), True)
        r *= 2
    out["mapping.w_avg"] = ((w_dim,), True)
    features = [z_dim] + [w_dim] * num_layers
    for i in range(num_layers):
        out[f"mapping.fc{i}.weight"] = ((features[i + 1], features[i]), False)
        out[f"mapping.fc{i}.bias"] = ((features[i + 1],), False)
    return out


def module_tree(tensors: dict[str, tuple[tuple[int, ...], bool]], seed: int) -> nn.Module:
    """A bare module tree holding random tensors under the given names, parameters and buffers as told."""
    gen = torch.Generator().manual_seed(seed)
    root = nn.Module()
    for name, (shape, is_buffer) in tensors.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        value = torch.randn(shape, generator=gen)
        if is_buffer:
            module.register_buffer(leaf, value)
        else:
            module.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
    return root


def nvlabs_synthesis_loop(synthesis: nn.Module, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
    """SynthesisNetwork.forward of NVlabs: narrow ws per block, advance by num_conv, call each block."""
    ws = ws.to(torch.float32)
    block_ws, w_idx = [], 0
    for res in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{res}")
        block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
        w_idx += block.num_conv
    x = img = None
    for res, cur_ws in zip(synthesis.block_resolutions, block_ws, strict=True):
        block = getattr(synthesis, f"b{res}")
        x, img = block(x, img, cur_ws, **block_kwargs)
    return img


def nvlabs_w_avg_update(w_avg: torch.Tensor, w: torch.Tensor, beta: float) -> torch.Tensor:
    """``w_avg.copy_(x.detach().mean(dim=0).lerp(w_avg, beta))``."""
    return w.detach().mean(dim=0).lerp(w_avg, beta)


# --- init_args / init_kwargs ----------------------------------------------------------------------


def test_init_args_and_kwargs_rebuild_generator_mapping_and_synthesis():
    G = tiny()
    G2 = type(G)(*G.init_args, **G.init_kwargs)
    assert G2.config == G.config and G2.backend == G.backend
    G2.load_state_dict(G.state_dict(), strict=True)
    G2.eval()
    z = torch.randn(3, G.z_dim)
    torch.testing.assert_close(G2(z, None, noise_mode="const"), G(z, None, noise_mode="const"), rtol=0, atol=0)
    for name in ("mapping", "synthesis"):
        sub = getattr(G, name)
        fresh = type(sub)(*sub.init_args, **sub.init_kwargs)
        assert sorted(fresh.state_dict()) == sorted(sub.state_dict())
        fresh.load_state_dict(sub.state_dict(), strict=True)
    # As NVlabs' legacy.py does with force_fp16: edit a copy of the keywords, build, copy the weights.
    kwargs = copy.deepcopy(G.init_kwargs)
    kwargs["synthesis_kwargs"]["num_fp16_res"] = 2
    kwargs["synthesis_kwargs"]["conv_clamp"] = 256
    G3 = type(G)(**kwargs).eval().requires_grad_(False)
    nvlabs_copy_params_and_buffers(G, G3, require_all=True)
    assert G3.synthesis.b16.use_fp16 and not G3.synthesis.b4.use_fp16
    assert G3.synthesis.b16.conv1.conv_clamp == 256
    # The keywords are a fresh dict each time: editing one never alters the network.
    assert G.init_kwargs["synthesis_kwargs"]["num_fp16_res"] == 0


def test_generator_refuses_config_and_keywords_together():
    G = tiny()
    with pytest.raises(TypeError, match="config"):
        type(G)(G.config, z_dim=8)


# --- w_avg tracking -------------------------------------------------------------------------------


def test_w_avg_tracking_follows_nvlabs_rules():
    G = tiny()
    mapping = G.mapping
    beta = mapping.w_avg_beta
    z = torch.randn(5, G.z_dim)
    w = mapping(z, None)[:, 0]  # eval mode, psi 1: the un-broadcast mapping output
    w2 = mapping(z[:2], None)[:, 0]  # its own call: a matmul's rounding may depend on the batch size
    with torch.no_grad():
        mapping.w_avg.copy_(torch.randn(G.w_dim))
    start = mapping.w_avg.clone()

    # stylegan2-ada: training mode updates unless skip_w_avg_update; eval mode never.
    mapping.train()
    mapping(z, None, skip_w_avg_update=True)
    torch.testing.assert_close(mapping.w_avg, start, rtol=0, atol=0)
    mapping(z, None)
    expected = nvlabs_w_avg_update(start, w, beta)
    torch.testing.assert_close(mapping.w_avg, expected, rtol=0, atol=0)
    mapping(z[:2], None, skip_w_avg_update=False)
    expected = nvlabs_w_avg_update(expected, w2, beta)
    torch.testing.assert_close(mapping.w_avg, expected, rtol=0, atol=0)
    mapping.eval()
    mapping(z, None)
    torch.testing.assert_close(mapping.w_avg, expected, rtol=0, atol=0)

    # stylegan3: update_emas alone decides, in either mode.
    mapping(z, None, update_emas=True)
    expected = nvlabs_w_avg_update(expected, w, beta)
    torch.testing.assert_close(mapping.w_avg, expected, rtol=0, atol=0)
    mapping.train()
    mapping(z, None, update_emas=False)
    torch.testing.assert_close(mapping.w_avg, expected, rtol=0, atol=0)

    # ada's Generator.forward passes neither keyword: a training-mode G tracks w_avg.
    G.train()
    G(z, None, noise_mode="const")
    expected = nvlabs_w_avg_update(expected, w, beta)
    torch.testing.assert_close(mapping.w_avg, expected, rtol=0, atol=0)
    G.eval()
    with pytest.raises(ValueError, match="contradict"):
        mapping(z, None, update_emas=True, skip_w_avg_update=True)


def test_truncation_uses_the_tracked_w_avg():
    G = tiny()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    z = torch.randn(2, G.z_dim)
    w = G.mapping(z, None)
    wt = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(wt[:, :2], G.mapping.w_avg.lerp(w[:, :2], 0.5))
    torch.testing.assert_close(wt[:, 2:], w[:, 2:], rtol=0, atol=0)


# --- attributes -----------------------------------------------------------------------------------


def test_layers_and_blocks_expose_nvlabs_attributes():
    G = tiny("resnet")
    for r in G.synthesis.block_resolutions:
        block = getattr(G.synthesis, f"b{r}")
        assert block.channels_last is False and block.resolution == r
        for attr in ("conv0", "conv1"):
            if hasattr(block, attr):
                layer = getattr(block, attr)
                assert (layer.padding, layer.activation, layer.w_dim) == (1, "lrelu", G.w_dim)
                assert layer.act_gain == math.sqrt(2) and layer.use_noise
    skip = G.synthesis.b8.skip
    assert (skip.activation, skip.up, skip.padding, skip.conv_clamp) == ("linear", 2, 0, None)
    torgb = G.synthesis.b16.torgb
    assert (torgb.in_channels, torgb.out_channels, torgb.w_dim) == (4, 3, G.w_dim)
    assert G.mapping.fc0.activation == "lrelu" and G.synthesis.b4.conv1.affine.activation == "linear"


# --- copy_params_and_buffers ----------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["skip", "resnet", "orig"])
def test_copy_params_and_buffers_require_all_both_directions(architecture):
    G = tiny(architecture)
    names = nvlabs_generator_tensors(16, G.config.channels, 3, G.w_dim, G.z_dim, 2, architecture)
    nvlabs_G = module_tree(names, seed=1)
    ours = {n: tuple(t.shape) for n, t in [*G.named_parameters(), *G.named_buffers()]}
    assert ours == {n: shape for n, (shape, _) in names.items()}
    nvlabs_copy_params_and_buffers(nvlabs_G, G, require_all=True)
    for name, tensor in nvlabs_G.state_dict().items():
        torch.testing.assert_close(G.state_dict()[name], tensor, rtol=0, atol=0)
    back = module_tree(names, seed=2)
    nvlabs_copy_params_and_buffers(G, back, require_all=True)
    for name, tensor in G.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], tensor, rtol=0, atol=0)


def test_run_time_filters_follow_the_module_to_other_dtypes():
    G = tiny().double()
    assert G.synthesis.b8.torgb.resample_filter.dtype == torch.float64
    z = torch.randn(1, G.z_dim, dtype=torch.float64)
    assert G(z, None, noise_mode="const").dtype == torch.float64


# --- an NVlabs-style training loop driving the blocks ---------------------------------------------


@pytest.mark.parametrize("architecture", ["skip", "resnet", "orig"])
def test_nvlabs_block_loop_matches_synthesis(architecture):
    G = tiny(architecture)
    ws = torch.randn(2, G.num_ws, G.w_dim)  # a distinct w per layer shows any indexing slip
    for kwargs in ({"noise_mode": "const"}, {"noise_mode": "none", "force_fp32": True}):
        expected = G.synthesis(ws, **kwargs)
        got = nvlabs_synthesis_loop(G.synthesis, ws, **kwargs)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # Changing a w that belongs to one block changes the image through that block only.
    ws2 = ws.clone()
    ws2[:, G.num_ws - 1] += 1
    assert not torch.equal(nvlabs_synthesis_loop(G.synthesis, ws2, noise_mode="const"),
                           G.synthesis(ws, noise_mode="const"))


def test_block_loop_with_gradients_and_random_noise():
    G = tiny()
    ws = torch.randn(2, G.num_ws, G.w_dim, requires_grad=True)
    G.train().requires_grad_(True)
    torch.manual_seed(7)
    img = nvlabs_synthesis_loop(G.synthesis, ws, noise_mode="random", fused_modconv=False)
    torch.manual_seed(7)
    ref = G.synthesis(ws, noise_mode="random", fused_modconv=False)
    torch.testing.assert_close(img, ref, rtol=0, atol=0)
    (img.square().sum()).backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert G.synthesis.b16.conv0.weight.grad.abs().sum() > 0


def test_block_refuses_the_whole_ws():
    G = tiny()
    ws = torch.randn(1, G.num_ws, G.w_dim)
    with pytest.raises(ValueError, match=r"b8 expected its own slice \[N, 3, 16\]"):
        G.synthesis.b8(torch.randn(1, 16, 4, 4), None, ws)


# --- export to an NVlabs snapshot -----------------------------------------------------------------

# A stand-in for an NVlabs source tree, written from the documented interface: Generator(z_dim, c_dim,
# w_dim, img_resolution, img_channels, mapping_kwargs, synthesis_kwargs) holding NVlabs' tensor names and
# shapes (C(r) = min(channel_base // r, channel_max)), and a persistence module whose decorator keeps
# classes as they are (so the pickle refers to them by import path).
STAND_IN_NETWORKS = '''
import torch
from torch_utils import persistence

def _add(root, name, shape, buffer):
    *path, leaf = name.split(".")
    m = root
    for part in path:
        if not hasattr(m, part):
            m.add_module(part, torch.nn.Module())
        m = getattr(m, part)
    if buffer:
        m.register_buffer(leaf, torch.zeros(shape))
    else:
        m.register_parameter(leaf, torch.nn.Parameter(torch.zeros(shape)))

@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, synthesis_kwargs={}):
        super().__init__()
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, mapping_kwargs=mapping_kwargs,
                                synthesis_kwargs=synthesis_kwargs)
        s = synthesis_kwargs
        ch = lambda r: min(s["channel_base"] // r, s["channel_max"])
        arch = s["architecture"]
        r = 4
        while r <= img_resolution:
            b = f"synthesis.b{r}"
            if r == 4:
                _add(self, b + ".const", [ch(4), 4, 4], False)
            _add(self, b + ".resample_filter", [4, 4], True)
            for conv, cin in (("conv0", ch(r // 2)), ("conv1", ch(r))):
                if conv == "conv0" and r == 4:
                    continue
                p = f"{b}.{conv}"
                _add(self, p + ".weight", [ch(r), cin, 3, 3], False)
                _add(self, p + ".noise_strength", [], False)
                _add(self, p + ".bias", [ch(r)], False)
                _add(self, p + ".resample_filter", [4, 4], True)
                _add(self, p + ".noise_const", [r, r], True)
                _add(self, p + ".affine.weight", [cin, w_dim], False)
                _add(self, p + ".affine.bias", [cin], False)
            if arch == "skip" or r == img_resolution:
                _add(self, b + ".torgb.weight", [img_channels, ch(r), 1, 1], False)
                _add(self, b + ".torgb.bias", [img_channels], False)
                _add(self, b + ".torgb.affine.weight", [ch(r), w_dim], False)
                _add(self, b + ".torgb.affine.bias", [ch(r)], False)
            r *= 2
        m = mapping_kwargs
        if m["w_avg_beta"] is not None:
            _add(self, "mapping.w_avg", [w_dim], True)
        features = [z_dim] + [m["layer_features"] or w_dim] * (m["num_layers"] - 1) + [w_dim]
        for i in range(m["num_layers"]):
            _add(self, f"mapping.fc{i}.weight", [features[i + 1], features[i]], False)
            _add(self, f"mapping.fc{i}.bias", [features[i + 1]], False)

@persistence.persistent_class
class Discriminator(torch.nn.Module):
    def __init__(self, c_dim, img_resolution, img_channels, **kwargs):
        super().__init__()
        self.img_resolution = img_resolution
'''

LOAD_SNAPSHOT = '''
import pickle, sys
sys.path.insert(0, sys.argv[1])
with open(sys.argv[2], "rb") as f:
    data = pickle.load(f)
print(list(data))
print(type(data["G_ema"]).__module__, type(data["D"]).__name__, data["G_ema"].training)
torch = __import__("torch")
torch.save({k: v for k, v in data["G_ema"].state_dict().items()}, sys.argv[3])
print(sorted(data["G_ema"].init_kwargs["synthesis_kwargs"].items()))
'''


def stand_in_tree(root):
    (root / "training").mkdir(parents=True)
    (root / "torch_utils").mkdir()
    for pkg in ("training", "torch_utils"):
        (root / pkg / "__init__.py").write_text("")
    (root / "torch_utils" / "persistence.py").write_text("def persistent_class(cls):\n    return cls\n")
    (root / "training" / "networks.py").write_text(STAND_IN_NETWORKS)
    return root


def test_export_builds_the_trees_generator_and_pickles_a_snapshot(tmp_path):
    import subprocess
    import sys

    from sgtriton.checkpoints.nvlabs_export import export_nvlabs

    G = tiny("skip")
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    tree = stand_in_tree(tmp_path / "tree")
    before = set(sys.modules)
    export_nvlabs(G, tmp_path / "net.pkl", tree)
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in ("training", "torch_utils")}
    out = subprocess.run([sys.executable, "-c", LOAD_SNAPSHOT, str(tree), str(tmp_path / "net.pkl"),
                          str(tmp_path / "sd.pt")], capture_output=True, text=True, check=True).stdout.splitlines()
    # stylegan2-ada's train.py key order; modules in eval mode
    assert out[0] == "['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe']"
    assert out[1] == "training.networks Discriminator False"
    assert "('channel_base', 64)" in out[2] and "('num_fp16_res', 0)" in out[2] and "('conv_clamp', None)" in out[2]
    state = torch.load(tmp_path / "sd.pt")
    assert sorted(state) == sorted(G.state_dict())
    for name, tensor in G.state_dict().items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)


def test_export_refuses_what_nvlabs_cannot_hold(tmp_path):
    from sgtriton.checkpoints import CheckpointError
    from sgtriton.checkpoints.nvlabs_export import export_nvlabs

    with pytest.raises(CheckpointError, match="expected a stylegan2-ada-pytorch or stylegan3 source tree"):
        export_nvlabs(tiny(), tmp_path / "x.pkl", tmp_path)
    G = build_generator("stylegan1", img_resolution=8, backend="reference", seed=0)
    with pytest.raises(CheckpointError, match="block='adain'"):
        export_nvlabs(G, tmp_path / "x.pkl", stand_in_tree(tmp_path / "tree"))
    assert not (tmp_path / "x.pkl").exists()


def test_cli_convert_to_nvlabs(tmp_path):
    from click.testing import CliRunner

    import sgtriton
    from sgtriton.cli import main

    sgtriton.save(tiny(), tmp_path / "g.safetensors")
    tree = stand_in_tree(tmp_path / "tree")
    args = ["convert", str(tmp_path / "g.safetensors"), str(tmp_path / "g.pkl"), "--nvlabs-src", str(tree)]
    result = CliRunner().invoke(main, [*args, "--format", "nvlabs"])
    assert result.exit_code == 0, result.output
    assert "wrote NVlabs snapshot" in result.output and (tmp_path / "g.pkl").stat().st_size > 0
    result = CliRunner().invoke(main, [*args, "--format", "rosinality"])
    assert result.exit_code == 2 and "with --nvlabs-src the output is an NVlabs snapshot" in result.output


NVLABS_SRC = "SGTRITON_NVLABS_SRC"


@pytest.mark.skipif(not __import__("os").environ.get(NVLABS_SRC),
                    reason=f"${NVLABS_SRC} names no NVlabs stylegan2-ada-pytorch / stylegan3 checkout")
def test_export_renders_our_images_through_the_real_nvlabs_code(tmp_path):
    import os
    import subprocess
    import sys

    from sgtriton.checkpoints.nvlabs_export import export_nvlabs

    G = tiny("skip")
    export_nvlabs(G, tmp_path / "net.pkl", os.environ[NVLABS_SRC])
    script = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import legacy\n"
              "G = legacy.load_network_pkl(open(sys.argv[2], 'rb'))['G_ema']\n"
              "z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))\n"
              "torch.save(G(z, None, truncation_psi=0.5, noise_mode='const', force_fp32=True), sys.argv[3])\n")
    subprocess.run([sys.executable, "-c", script, os.environ[NVLABS_SRC], str(tmp_path / "net.pkl"),
                    str(tmp_path / "img.pt")], check=True)
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.load(tmp_path / "img.pt"), G(z, None, truncation_psi=0.5, noise_mode="const"))
