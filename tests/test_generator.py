"""The Generator: NVlabs interface, state-dict names, batch independence, input validation."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sgtriton
from sgtriton import build_generator, make_config

PRESETS = ["stylegan1", "revised", "stylegan2-b", "stylegan2-e", "stylegan2-f"]
SMALL = {"img_resolution": 16, "synthesis_kwargs": {"channel_base": 256, "channel_max": 32},
         "z_dim": 24, "w_dim": 20, "mapping_kwargs": {"num_layers": 2}}


def small(preset, **overrides):
    kwargs = {**SMALL, **overrides}
    kwargs["synthesis_kwargs"] = {**SMALL["synthesis_kwargs"], **overrides.get("synthesis_kwargs", {})}
    return build_generator(preset, seed=0, **kwargs)


@pytest.mark.parametrize("preset", PRESETS)
def test_g_ema_interface(preset):
    G = small(preset)
    for attr, value in dict(z_dim=24, c_dim=0, w_dim=20, img_resolution=16, img_channels=3, num_ws=6).items():
        assert getattr(G, attr) == value
    z = torch.randn(2, 24)
    ws = G.mapping(z, None, truncation_psi=1, truncation_cutoff=None)
    assert ws.shape == (2, 6, 20) and ws.dtype == torch.float32
    img = G.synthesis(ws, noise_mode="const")
    assert img.shape == (2, 3, 16, 16) and img.dtype == torch.float32
    torch.testing.assert_close(G(z, None, noise_mode="const"), img, rtol=0, atol=0)
    assert torch.isfinite(img).all()


def test_moddemod_state_dict_uses_nvlabs_names():
    G = small("stylegan2-f", img_resolution=8, synthesis_kwargs={"architecture": "resnet"}, c_dim=3)
    sd = G.state_dict()
    expected = {
        "synthesis.b4.const": [32, 4, 4], "synthesis.b4.resample_filter": [4, 4],
        "synthesis.b4.conv1.weight": [32, 32, 3, 3], "synthesis.b4.conv1.noise_strength": [],
        "synthesis.b4.conv1.bias": [32], "synthesis.b4.conv1.resample_filter": [4, 4],
        "synthesis.b4.conv1.noise_const": [4, 4], "synthesis.b4.conv1.affine.weight": [32, 20],
        "synthesis.b4.conv1.affine.bias": [32], "synthesis.b8.conv0.weight": [32, 32, 3, 3],
        "synthesis.b8.conv0.noise_const": [8, 8], "synthesis.b8.skip.weight": [32, 32, 1, 1],
        "synthesis.b8.skip.resample_filter": [4, 4], "synthesis.b8.torgb.weight": [3, 32, 1, 1],
        "synthesis.b8.torgb.affine.weight": [32, 20], "mapping.w_avg": [20],
        "mapping.embed.weight": [20, 3], "mapping.embed.bias": [20],
        "mapping.fc0.weight": [20, 44], "mapping.fc1.bias": [20],
    }
    for name, shape in expected.items():
        assert list(sd[name].shape) == shape, name
    assert "synthesis.b4.torgb.weight" not in sd  # resnet: last block only
    assert list(sd)[0].startswith("synthesis.") and list(sd)[-1].startswith("mapping.")


def test_state_dict_round_trip_is_strict_and_exact():
    a, b = small("stylegan2-f"), build_generator("stylegan2-f", seed=1, **SMALL)
    b.load_state_dict(a.state_dict(), strict=True)
    z = torch.randn(3, 24)
    torch.testing.assert_close(a(z, None, noise_mode="const"), b(z, None, noise_mode="const"), rtol=0, atol=0)


@pytest.mark.parametrize("preset", PRESETS)
@given(batch=st.integers(2, 3), pick=st.integers(0, 2), noise_mode=st.sampled_from(["const", "none"]))
def test_each_sample_is_independent_of_the_rest_of_the_batch(preset, batch, pick, noise_mode):
    G = small(preset, img_resolution=8)
    pick = min(pick, batch - 1)
    z = torch.randn(batch, 24, generator=torch.Generator().manual_seed(batch * 7 + pick))
    together = G(z, None, noise_mode=noise_mode)[pick]
    alone = G(z[pick : pick + 1], None, noise_mode=noise_mode)[0]
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_random_noise_draws_one_normal_per_layer_in_network_order():
    # noise_mode='random' must equal 'const' with each layer's constant replaced by the draw it makes,
    # one [N, 1, r, r] normal per style layer in network order, from the global generator.
    from sgtriton.graph.plan import module_at

    G = small("stylegan2-f", img_resolution=8)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.7)  # a zero strength would hide the noise
    ws = G.mapping(torch.randn(1, 24), None)
    torch.manual_seed(5)
    random = G.synthesis(ws, noise_mode="random")
    torch.manual_seed(5)
    layers = [n for n in G.graph.synthesis_nodes if n.kind == "conv"]
    assert [n.resolution for n in layers] == [4, 8, 8]
    with torch.no_grad():
        for node in layers:
            module_at(G, node.name).noise_const.copy_(torch.randn([1, 1, node.resolution, node.resolution])[0, 0])
    torch.testing.assert_close(random, G.synthesis(ws, noise_mode="const"), rtol=1e-6, atol=1e-6)
    torch.manual_seed(6)
    assert (G.synthesis(ws, noise_mode="random") - random).abs().max() > 1e-3  # another seed, other noise


def test_truncation_pulls_towards_w_avg_with_cutoff():
    G = small("stylegan2-f")
    G.mapping.w_avg.copy_(torch.linspace(-1, 1, 20))
    z = torch.randn(2, 24)
    w = G.mapping(z, None)
    t = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(t[:, :2], G.mapping.w_avg + 0.5 * (w[:, :2] - G.mapping.w_avg))
    torch.testing.assert_close(t[:, 2:], w[:, 2:])
    full = G.mapping(z, None, truncation_psi=0.0)
    torch.testing.assert_close(full, G.mapping.w_avg.expand_as(full))


def test_fp16_blocks_run_in_half_precision_only_on_cuda(device):
    # On CUDA the fp16 blocks compute in half precision (close to, but not equal to, force_fp32);
    # on the CPU they compute in float32, bit for bit the same as force_fp32.
    G = small("stylegan2-f", synthesis_kwargs={"num_fp16_res": 2, "conv_clamp": 256}).to(device)
    assert G.synthesis.b16.use_fp16 and G.synthesis.b8.use_fp16 and not G.synthesis.b4.use_fp16
    ws = G.mapping(torch.randn(1, 24, device=device), None)
    seen = []
    hook = G.synthesis.b16.conv1.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    mixed = G.synthesis(ws, noise_mode="const")
    full = G.synthesis(ws, noise_mode="const", force_fp32=True)
    hook.remove()
    assert mixed.dtype == full.dtype == torch.float32
    if device.type == "cuda":
        assert seen == [torch.float16, torch.float32]
        assert not torch.equal(mixed, full)
        torch.testing.assert_close(mixed, full, rtol=0, atol=0.05 * full.abs().max().item())
    else:
        assert seen == [torch.float32, torch.float32]
        torch.testing.assert_close(mixed, full, rtol=0, atol=0)


def test_conditional_mapping_embeds_and_normalises_separately():
    G = small("stylegan2-f", c_dim=4)
    z, c = torch.randn(2, 24), torch.eye(4)[:2]
    ws = G.mapping(z, c)
    assert ws.shape == (2, 6, 20)
    with pytest.raises(ValueError, match=r"c: expected a tensor of shape \[N, 4\]"):
        G.mapping(z, None)


@pytest.mark.parametrize("call,needle", [
    (lambda G: G.mapping(torch.randn(2, 23), None), r"z: expected a tensor of shape \[N, 24\]"),
    (lambda G: G.mapping(torch.randn(24), None), r"z: expected"),
    (lambda G: G.mapping(torch.randint(0, 3, (2, 24)), None), "z: expected a floating-point"),
    (lambda G: G.mapping(torch.full((1, 24), float("nan")), None), "z: contains NaN"),
    (lambda G: G.mapping(torch.randn(2, 24), torch.ones(2, 3)), "c: this generator is unconditional"),
    (lambda G: G.synthesis(torch.randn(2, 5, 20)), r"ws: expected a tensor of shape \[N, 6, 20\]"),
    (lambda G: G.synthesis(torch.randn(2, 6, 20), noise_mode="loud"), "noise_mode='loud'"),
    (lambda G: G.mapping(torch.randn(2, 24), None, truncation_psi=0.5, truncation_cutoff=-1),
     "truncation_cutoff=-1"),
    (lambda G: G.mapping(torch.randn(2, 24), None, truncation_psi=float("nan")),
     "truncation_psi=nan: expected a finite number"),
    (lambda G: G(torch.randn(2, 24), None, truncation_psi=float("inf")), "truncation_psi=inf: expected a finite"),
    (lambda G: G.mapping(torch.randn(2, 24), None, truncation_psi="0.7"), "truncation_psi='0.7': expected a number"),
    (lambda G: G.mapping(torch.randn(2, 24), None, truncation_psi=None), "truncation_psi=None: expected a number"),
    (lambda G: G.mapping(torch.randn(2, 24), None, truncation_psi=torch.ones(2)),
     r"truncation_psi: expected a number or a one-element real tensor, got a tensor of shape \[2\]"),
    (lambda G: G.synthesis.b8.conv0(torch.randn(1, 32, 5, 5), torch.randn(1, 20)), r"synthesis.b8.conv0"),
])
def test_bad_input_raises_naming_the_argument(call, needle):
    G = small("stylegan2-f")
    with pytest.raises((ValueError, TypeError), match=needle):
        call(G)


def test_build_generator_rejects_bad_resolution_and_backend():
    with pytest.raises(ValueError, match="img_resolution=100"):
        build_generator("stylegan2-f", img_resolution=100)
    with pytest.raises(ValueError, match="backend='gpu'"):
        build_generator("stylegan2-f", backend="gpu", **SMALL)


def test_build_generator_takes_a_config_in_the_preset_place():
    config = make_config("stylegan2-f", **SMALL)
    a = build_generator(config, seed=1)
    b = build_generator(config=config, seed=1)
    assert a.config == b.config == config
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    with pytest.raises(TypeError, match="either config= or a preset"):
        build_generator("stylegan2-f", config=config)


def test_seeded_build_is_reproducible_and_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    before = torch.randn(3)
    torch.manual_seed(123)
    a = build_generator("stylegan2-f", seed=3, **SMALL)
    after = torch.randn(3)
    b = build_generator("stylegan2-f", seed=3, **SMALL)
    assert torch.equal(before, after)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_public_api_exports():
    for name in ("build_generator", "Generator", "GeneratorConfig", "register_block", "available_blocks"):
        assert hasattr(sgtriton, name)


def test_double_generator_is_a_float64_reference():
    G = small("stylegan2-f")
    G64 = small("stylegan2-f").double()
    z = torch.randn(2, 24)
    ws64 = G64.mapping(z, None)
    img64 = G64.synthesis(ws64, noise_mode="const")
    assert ws64.dtype == torch.float64 and img64.dtype == torch.float64
    torch.testing.assert_close(G(z, None, noise_mode="const"), img64.float(), rtol=1e-4, atol=1e-5)
