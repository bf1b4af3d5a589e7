"""Issue 14's options, phase 1: ViTConfig's new fields and the new layer modules, against
independent plain formulas (fp64). The same modules against real timm: test_vit_options_interop.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastvit.config import ACT_LAYERS, ViTConfig
from fastvit.layers.activations import ACTIVATIONS, activation_class, create_activation
from fastvit.layers.embed import PatchEmbed, patchify
from fastvit.layers.glu import GluMlp
from fastvit.layers.layer_scale import LayerScale
from fastvit.layers.pool import AttentionPoolLatent

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=5)


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (LayerNorm weights and biases too), so none can hide behind its init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return module


# -- ViTConfig: fields, validation, derived counts -------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("reg_tokens", 1.0), ("reg_tokens", True), ("reg_tokens", "4"), ("no_embed_class", 1), ("qk_norm", None),
    ("pre_norm", "yes"), ("final_norm", 0), ("dynamic_img_pad", 1), ("patch_bias", 0), ("init_values", "1e-5"),
    ("init_values", True), ("act_layer", None), ("act_layer", nn.GELU), ("mlp_layer", 1),
])
def test_wrong_types_raise_type_error_naming_the_field(field, value):
    with pytest.raises(TypeError, match=field):
        ViTConfig(**TINY, **{field: value})


@pytest.mark.parametrize("field,value", [
    ("reg_tokens", -1), ("init_values", 0.0), ("init_values", -1e-5), ("init_values", math.inf), ("init_values", math.nan),
    ("act_layer", "relu"), ("act_layer", "GELU"), ("mlp_layer", "swiglu_packed"), ("global_pool", "mean"),
])
def test_out_of_range_values_raise_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ViTConfig(**TINY, **{field: value})


@pytest.mark.parametrize("bad,match", [
    (dict(mlp_layer="swiglu"), "act_layer='silu'"),  # default act_layer gelu
    (dict(mlp_layer="swiglu", act_layer="silu", mlp_ratio=25 / 48), "even"),  # int(48 * 25/48) = 25 is odd
    (dict(global_pool="token", class_token=False, reg_tokens=2), "class_token"),
    (dict(distilled=True, reg_tokens=1), "reg_tokens"),
    (dict(distilled=True, global_pool="map"), "map"),
    (dict(img_size=(4, 32), dynamic_img_pad=True, dynamic_img_size=True), "smaller than one patch"),
    (dict(img_size=36, patch_size=32, hybrid_layers=(1, 1, 1, 1)), "stride"),
])
def test_combinations_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**{**TINY, **bad})


@pytest.mark.parametrize("pool,class_token", [("map", False), ("map", True), ("avg", False), ("", False), ("max", False),
                                              ("avgmax", True)])
def test_pools_with_and_without_class_token(pool, class_token):
    cfg = ViTConfig(**TINY, global_pool=pool, class_token=class_token)
    assert (cfg.global_pool, cfg.class_token) == (pool, class_token)


@pytest.mark.parametrize("cls,reg,dist,no_embed", [(1, 0, 0, False), (1, 4, 0, False), (0, 4, 0, False), (1, 4, 0, True),
                                                   (0, 0, 0, True), (1, 0, 1, False), (1, 0, 1, True), (0, 1, 0, False)])
def test_prefix_and_position_counts(cls, reg, dist, no_embed):
    pool = "token" if cls else "avg"
    cfg = ViTConfig(**TINY, class_token=bool(cls), reg_tokens=reg, distilled=bool(dist), no_embed_class=no_embed, global_pool=pool)
    patches = (32 // 8) ** 2
    assert cfg.num_patches == patches
    assert cfg.num_prefix_tokens == cls + reg + dist
    assert cfg.seq_len == patches + cls + reg + dist
    assert cfg.num_tokens == (patches if no_embed else patches + cls + reg + dist)  # the pos_embed's length


@pytest.mark.parametrize("img_size,grid", [(36, (4, 4)), ((39, 47), (4, 5)), (384, (48, 48))])
def test_an_img_size_off_the_patch_grid_rounds_down(img_size, grid):  # timm's rule (SigLIP so400m: 384 px, 14)
    cfg = ViTConfig(**{**TINY, "img_size": img_size})
    assert cfg.grid_size == grid and cfg.num_tokens == grid[0] * grid[1] + 1
    assert ViTConfig(img_size=384, patch_size=14).grid_size == (27, 27)


def test_patch_bias_follows_pre_norm_unless_set():
    assert ViTConfig(**TINY).use_patch_bias is True
    assert ViTConfig(**TINY, pre_norm=True).use_patch_bias is False  # CLIP: no bias in front of norm_pre
    assert ViTConfig(**TINY, pre_norm=True, patch_bias=True).use_patch_bias is True
    assert ViTConfig(**TINY, patch_bias=False).use_patch_bias is False
    # None is resolved when asked, so replace() keeps timm's rule
    assert ViTConfig(**TINY).replace(pre_norm=True).use_patch_bias is False


@pytest.mark.parametrize("pool,fc_norm,final,norm,fc", [
    ("token", None, True, True, False), ("avg", None, True, False, True), ("token", True, True, False, True),
    ("avg", False, True, True, False), ("map", None, True, True, False), ("avg", None, False, False, False),
    ("token", True, False, False, False),
])
def test_which_final_norm_exists(pool, fc_norm, final, norm, fc):
    cfg = ViTConfig(**TINY, global_pool=pool, fc_norm=fc_norm, final_norm=final)
    assert (cfg.use_final_norm, cfg.use_fc_norm) == (norm, fc)


def test_swiglu_widths():
    cfg = ViTConfig(**TINY, mlp_layer="swiglu", act_layer="silu", mlp_ratio=2.66667 * 2)  # DINOv2 giant's ratio
    assert cfg.mlp_hidden_dim == int(48 * 2.66667 * 2) == 256
    assert cfg.mlp_fc2_in_dim == 128
    assert ViTConfig(**TINY).mlp_fc2_in_dim == ViTConfig(**TINY).mlp_hidden_dim == 192


def test_the_field_names_are_timms():
    names = set(ViTConfig.__dataclass_fields__)
    assert {"reg_tokens", "no_embed_class", "init_values", "qk_norm", "pre_norm", "final_norm", "fc_norm",
            "act_layer", "mlp_layer", "global_pool", "class_token", "dynamic_img_pad"} <= names
    assert set(ACT_LAYERS) == set(ACTIVATIONS)


# num_params(): each option's increment equals the parameters of the modules the option adds
# (built from the layer classes here, not from the formula).
@pytest.mark.parametrize("option,added", [
    (dict(reg_tokens=3), lambda c: 3 * c.embed_dim * 2),  # reg_token and its rows of pos_embed
    (dict(reg_tokens=3, no_embed_class=True), lambda c: 3 * c.embed_dim - c.embed_dim),  # and the class row leaves pos_embed
    (dict(no_embed_class=True), lambda c: -c.embed_dim),
    (dict(init_values=1e-5), lambda c: c.depth * 2 * numel(LayerScale(c.embed_dim))),
    (dict(qk_norm=True), lambda c: c.depth * 2 * numel(nn.LayerNorm(c.head_dim))),
    (dict(pre_norm=True, patch_bias=True), lambda c: numel(nn.LayerNorm(c.embed_dim))),
    (dict(pre_norm=True), lambda c: numel(nn.LayerNorm(c.embed_dim)) - c.embed_dim),  # and no patch bias
    (dict(patch_bias=False), lambda c: -c.embed_dim),
    (dict(final_norm=False), lambda c: -numel(nn.LayerNorm(c.embed_dim))),
    (dict(global_pool="map"), lambda c: numel(AttentionPoolLatent(c.embed_dim, c.num_heads, c.mlp_ratio))),
    (dict(global_pool="map", class_token=False), lambda c: numel(AttentionPoolLatent(c.embed_dim, c.num_heads)) - 2 * c.embed_dim),
    (dict(mlp_layer="swiglu", act_layer="silu"),
     lambda c: c.depth * (numel(GluMlp(c.embed_dim, c.mlp_hidden_dim)) - numel(nn.Sequential(
         nn.Linear(c.embed_dim, c.mlp_hidden_dim), nn.Linear(c.mlp_hidden_dim, c.embed_dim))))),
    (dict(act_layer="quick_gelu"), lambda c: 0),
    (dict(dynamic_img_pad=True, dynamic_img_size=True), lambda c: 0),
])
def test_num_params_increment_per_option(option, added):
    base = ViTConfig(**TINY)
    cfg = ViTConfig(**TINY, **option)
    assert cfg.num_params() - base.num_params() == added(base)


def test_num_params_of_an_all_options_config_adds_up():
    opts = dict(reg_tokens=2, init_values=0.1, qk_norm=True, pre_norm=True, final_norm=True, global_pool="map",
                class_token=False, mlp_layer="swiglu", act_layer="silu", no_embed_class=True)
    cfg = ViTConfig(**TINY, **opts)
    d, depth = cfg.embed_dim, cfg.depth
    patch = nn.Conv2d(3, d, 8, 8, bias=False)
    block = nn.ModuleList([nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.LayerNorm(cfg.head_dim), nn.LayerNorm(cfg.head_dim),
                           nn.Linear(d, d), LayerScale(d), nn.LayerNorm(d), GluMlp(d, cfg.mlp_hidden_dim), LayerScale(d)])
    expected = (numel(patch) + 2 * d + 16 * d + numel(nn.LayerNorm(d)) + depth * numel(block) + numel(nn.LayerNorm(d))
                + numel(AttentionPoolLatent(d, cfg.num_heads, cfg.mlp_ratio)) + d * 5 + 5)
    assert cfg.num_params() == expected


# -- activations ------------------------------------------------------------------------------------

FORMULAS = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "quick_gelu": lambda x: x / (1 + torch.exp(-1.702 * x)),
    "silu": lambda x: x / (1 + torch.exp(-x)),
}


@pytest.mark.parametrize("name", ACT_LAYERS)
def test_activation_matches_its_formula(name):
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    act = create_activation(name)
    assert isinstance(act, nn.Module) and isinstance(act, activation_class(name))
    torch.testing.assert_close(act(x), FORMULAS[name](x), atol=1e-12, rtol=1e-12)
    xf = x.float().requires_grad_()
    act(xf).sum().backward()  # a differentiable module: the gradient is the formula's
    xd = x.clone().requires_grad_()
    FORMULAS[name](xd).sum().backward()
    torch.testing.assert_close(xf.grad.double(), xd.grad, atol=1e-5, rtol=1e-5)


def test_quick_gelu_differs_from_gelu():  # a mix-up between them must not pass the tests above
    x = torch.tensor([1.0], dtype=torch.float64)
    assert abs(create_activation("quick_gelu")(x) - create_activation("gelu")(x)).item() > 1e-3


@pytest.mark.parametrize("name,exc", [("relu", ValueError), (None, TypeError), (nn.GELU, TypeError)])
def test_unknown_activation(name, exc):
    with pytest.raises(exc, match="act_layer"):
        activation_class(name)


# -- LayerScale --------------------------------------------------------------------------------------

def test_layer_scale_initialises_and_scales_per_channel():
    ls = LayerScale(6, init_values=0.25)
    assert [n for n, _ in ls.named_parameters()] == ["gamma"]
    assert ls.gamma.shape == (6,) and torch.equal(ls.gamma.detach(), torch.full((6,), 0.25))
    randomize(ls)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    gamma = ls.gamma.detach().double()
    expected = torch.stack([x[..., c] * gamma[c] for c in range(6)], dim=-1)
    torch.testing.assert_close(ls.double()(x), expected, atol=0, rtol=0)


# -- SwiGLU branch -------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_glu_mlp_matches_the_gated_formula(act):
    torch.manual_seed(0)
    mlp = randomize(GluMlp(12, 20, act_layer=activation_class(act))).double()
    assert [n for n, _ in mlp.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert mlp.fc1.weight.shape == (20, 12) and mlp.fc2.weight.shape == (12, 10)
    x, r = torch.randn(3, 7, 12, dtype=torch.float64), torch.randn(3, 7, 12, dtype=torch.float64)
    w1, b1, w2, b2 = (p.detach() for p in mlp.parameters())
    gate = x @ w1[:10].T + b1[:10]  # first half gates (timm's SwiGLUPacked: gate_last=False)
    value = x @ w1[10:].T + b1[10:]
    expected = r + (FORMULAS[act](gate) * value) @ w2.T + b2
    torch.testing.assert_close(mlp(x, r), expected, atol=1e-12, rtol=1e-12)


def test_glu_mlp_drop_path_drops_whole_samples_around_the_residual():
    torch.manual_seed(0)
    mlp = GluMlp(8, 16, drop_path=0.5).train()
    x, r = torch.randn(64, 3, 8), torch.randn(64, 3, 8)
    out = mlp(x, r)
    kept = ~torch.isclose(out, r).all(dim=(1, 2))
    assert 0 < kept.sum() < 64  # some samples are the residual alone
    with torch.no_grad():
        full = r + F.linear(mlp.gated(x), mlp.fc2.weight, mlp.fc2.bias) * 2.0  # survivors scaled by 1/(1-p)
    torch.testing.assert_close(out[kept], full[kept], atol=1e-5, rtol=1e-5)


def test_glu_mlp_needs_an_even_width():
    with pytest.raises(ValueError, match="even"):
        GluMlp(8, 15)


# -- attention pooling ------------------------------------------------------------------------------

def _pool_reference(pool: AttentionPoolLatent, x: torch.Tensor, eps: float, act: str, qk_norm: bool) -> torch.Tensor:
    """Per-head softmax(q k^T / sqrt(hd)) v, written with explicit loops and LayerNorm formulas (fp64)."""
    p = {k: v.detach().double() for k, v in pool.state_dict().items()}
    b, n, d = x.shape
    h = pool.num_heads
    hd = d // h

    def ln(t, w, bias):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + eps) * w + bias

    q = p["latent"][0, 0] @ p["q.weight"].T + p["q.bias"]  # (d,)
    kv = x @ p["kv.weight"].T + p["kv.bias"]  # (b, n, 2d)
    k, v = kv[..., :d], kv[..., d:]
    heads = []
    for i in range(h):
        qi, ki, vi = q[i * hd:(i + 1) * hd], k[..., i * hd:(i + 1) * hd], v[..., i * hd:(i + 1) * hd]
        if qk_norm:
            qi, ki = ln(qi, p["q_norm.weight"], p["q_norm.bias"]), ln(ki, p["k_norm.weight"], p["k_norm.bias"])
        w = torch.softmax((ki @ qi) / math.sqrt(hd), dim=-1)  # (b, n)
        heads.append(torch.einsum("bn,bnc->bc", w, vi))
    y = torch.cat(heads, dim=-1) @ p["proj.weight"].T + p["proj.bias"]
    z = ln(y, p["norm.weight"], p["norm.bias"])
    z = FORMULAS[act](z @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"]) @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
    return y + z


@pytest.mark.parametrize("heads,qk_norm,act,eps", [(4, False, "gelu", 1e-6), (2, True, "quick_gelu", 1e-5), (1, False, "silu", 1e-6)])
def test_attention_pool_matches_the_formula(heads, qk_norm, act, eps):
    pool = randomize(AttentionPoolLatent(16, heads, mlp_ratio=3.0, qk_norm=qk_norm, norm_eps=eps, act_layer=act)).double()
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    out = pool(x)
    assert out.shape == (3, 16)
    torch.testing.assert_close(out, _pool_reference(pool, x, eps, act, qk_norm), atol=1e-10, rtol=1e-10)


def test_attention_pool_parameter_names_are_timms():
    names = [n for n, _ in AttentionPoolLatent(16, 4, qk_norm=True).named_parameters()]
    assert names == ["latent", "q.weight", "q.bias", "kv.weight", "kv.bias", "q_norm.weight", "q_norm.bias",
                     "k_norm.weight", "k_norm.bias", "proj.weight", "proj.bias", "norm.weight", "norm.bias",
                     "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
    assert AttentionPoolLatent(16, 4).latent.shape == (1, 1, 16)
    assert AttentionPoolLatent(16, 4, mlp_ratio=2.5).mlp.fc1.out_features == 40


def test_attention_pool_is_permutation_invariant_over_tokens():
    pool = randomize(AttentionPoolLatent(16, 4)).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(pool(x), pool(x[:, torch.randperm(7)]), atol=1e-12, rtol=1e-12)


def test_attention_pool_rejects_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        AttentionPoolLatent(10, 4)
    with pytest.raises(ValueError, match=r"\(B, N, 16\)"):
        AttentionPoolLatent(16, 4)(torch.randn(2, 16))


# -- patch embedding: bias and dynamic padding ----------------------------------------------------------

def test_patch_embed_without_bias():
    pe = PatchEmbed(4, 3, 10, img_size=8, bias=False)
    assert pe.proj.bias is None and [n for n, _ in pe.named_parameters()] == ["proj.weight"]
    x = torch.randn(2, 3, 8, 8)
    expected = patchify(x, 4) @ pe.proj.weight.flatten(1).T
    torch.testing.assert_close(pe(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pe.forward_linear(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hw,grid", [((13, 9), (4, 3)), ((12, 12), (3, 3)), ((1, 5), (1, 2)), ((16, 7), (4, 2))])
def test_dynamic_img_pad_zero_pads_right_and_bottom(hw, grid):
    pe = PatchEmbed(4, 2, 6, img_size=12, dynamic_img_size=True, dynamic_img_pad=True)
    assert pe.dynamic_img_pad is True
    x = torch.randn(2, 2, *hw, dtype=torch.float64)
    pe = pe.double()
    assert pe.dynamic_feat_size(hw) == grid
    padded = torch.zeros(2, 2, grid[0] * 4, grid[1] * 4, dtype=torch.float64)  # the image in the top-left corner
    padded[..., : hw[0], : hw[1]] = x
    expected = patchify(padded, 4) @ pe.proj.weight.flatten(1).T + pe.proj.bias
    out = pe(x)
    assert out.shape == (2, grid[0] * grid[1], 6)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(pe.forward_linear(x), expected, atol=1e-12, rtol=1e-12)


def test_without_dynamic_img_pad_the_grid_rounds_down():
    pe = PatchEmbed(4, 2, 6, img_size=12, dynamic_img_size=True)
    assert pe.dynamic_img_pad is False and pe.dynamic_feat_size((13, 9)) == (3, 2)
    x = torch.randn(1, 2, 12, 8)
    assert torch.equal(pe.pad(x), x)
