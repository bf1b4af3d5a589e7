"""Issue 14's options in the model, against independent formulas (normal env; the same models
against real timm: tests/test_vit_options_timm.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastvit
from fastvit.config import ViTConfig

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=5)

OPTIONS = {
    "reg4": dict(reg_tokens=4), "reg_no_cls": dict(reg_tokens=2, class_token=False, global_pool="avg"),
    "no_embed_class": dict(no_embed_class=True, reg_tokens=1), "layer_scale": dict(init_values=1e-5),
    "qk_norm": dict(qk_norm=True), "pre_norm": dict(pre_norm=True), "patch_bias_off": dict(patch_bias=False),
    "no_final_norm": dict(final_norm=False), "fc_norm_off": dict(final_norm=False, global_pool="avg"),
    "map": dict(global_pool="map"), "map_no_cls": dict(global_pool="map", class_token=False),
    "swiglu": dict(mlp_layer="swiglu", act_layer="silu", mlp_ratio=2.66667 * 2), "quick_gelu": dict(act_layer="quick_gelu"),
    "dynamic_pad": dict(dynamic_img_size=True, dynamic_img_pad=True, img_size=30),
    "everything": dict(reg_tokens=2, no_embed_class=True, init_values=0.1, qk_norm=True, pre_norm=True, global_pool="map",
                       class_token=False, act_layer="gelu_tanh"),
}


def model_for(seed=0, **options) -> fastvit.VisionTransformer:
    torch.manual_seed(seed)
    model = fastvit.VisionTransformer(ViTConfig(**{**TINY, **options})).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # nothing left at its init (zero biases, unit norms, tiny LayerScale)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def image(h=32, w=32, batch=2, seed=1):
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_parameter_count_is_num_params(name):
    cfg = ViTConfig(**{**TINY, **OPTIONS[name]})
    with torch.device("meta"):
        model = fastvit.VisionTransformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()


def test_parameter_shapes_and_names():
    m = model_for(**OPTIONS["everything"])
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes["reg_token"] == (1, 2, 48) and "cls_token" not in shapes and shapes["pos_embed"] == (1, 16, 48)
    assert shapes["blocks.0.ls1.gamma"] == shapes["blocks.1.ls2.gamma"] == (48,)
    assert shapes["blocks.0.attn.q_norm.weight"] == shapes["blocks.0.attn.k_norm.bias"] == (12,)
    assert shapes["norm_pre.weight"] == (48,) and "patch_embed.proj.bias" not in shapes
    assert shapes["attn_pool.latent"] == (1, 1, 48) and shapes["attn_pool.kv.weight"] == (96, 48)
    assert list(shapes)[:3] == ["reg_token", "pos_embed", "patch_embed.proj.weight"]  # timm's order
    assert (m.num_reg_tokens, m.num_prefix_tokens, m.no_embed_class, m.has_class_token) == (2, 2, True, False)
    assert "reg_token" in m.no_weight_decay() and "reg_token" in m.group_matcher()["stem"]
    swiglu = model_for(**OPTIONS["swiglu"])
    assert swiglu.blocks[0].mlp.fc1.weight.shape == (256, 48) and swiglu.blocks[0].mlp.fc2.weight.shape == (48, 128)


def test_init_values_initialise_layer_scale():
    m = fastvit.VisionTransformer(ViTConfig(**TINY, init_values=1e-6))
    for block in m.blocks:
        assert torch.equal(block.ls1.gamma.detach(), torch.full((48,), 1e-6))
        assert torch.equal(block.ls2.gamma.detach(), torch.full((48,), 1e-6))


def test_zero_layer_scale_makes_every_block_the_identity():
    m = model_for(init_values=0.5)
    with torch.no_grad():
        for block in m.blocks:
            block.ls1.gamma.zero_()
            block.ls2.gamma.zero_()
    x = torch.randn(2, 17, 48)
    for block in m.blocks:
        assert torch.equal(block(x), x)


def _attention(attn, x, qk_norm_eps=None):
    """softmax(q k^T / sqrt(hd)) v per head, written out, with LayerNorm on q and k when given."""
    b, n, d = x.shape
    h = attn.num_heads
    hd = d // h
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = (t.reshape(b, n, h, hd).transpose(1, 2) for t in qkv.split(d, dim=-1))
    if qk_norm_eps is not None:
        q = F.layer_norm(q, (hd,), attn.q_norm.weight, attn.q_norm.bias, qk_norm_eps)
        k = F.layer_norm(k, (hd,), attn.k_norm.weight, attn.k_norm.bias, qk_norm_eps)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    y = (w @ v).transpose(1, 2).reshape(b, n, d)
    return y @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize("options", [dict(init_values=0.7), dict(qk_norm=True), dict(act_layer="quick_gelu"),
                                     dict(mlp_layer="swiglu", act_layer="silu"), dict(qk_norm=True, init_values=0.2, norm_eps=1e-5)])
def test_block_matches_the_formula(options):
    m = model_for(**options).double()
    cfg, block = m.cfg, m.blocks[0]
    x = torch.randn(2, 17, 48, dtype=torch.float64)
    g1 = block.ls1.gamma if cfg.init_values else 1.0
    g2 = block.ls2.gamma if cfg.init_values else 1.0
    eps = cfg.norm_eps
    h = F.layer_norm(x, (48,), block.norm1.weight, block.norm1.bias, eps)
    x1 = x + g1 * _attention(block.attn, h, eps if cfg.qk_norm else None)
    h = F.layer_norm(x1, (48,), block.norm2.weight, block.norm2.bias, eps)
    u = h @ block.mlp.fc1.weight.T + block.mlp.fc1.bias
    act = {"gelu": lambda t: 0.5 * t * (1 + torch.erf(t / math.sqrt(2))), "quick_gelu": lambda t: t / (1 + torch.exp(-1.702 * t)),
           "silu": lambda t: t / (1 + torch.exp(-t))}[cfg.act_layer]
    if cfg.mlp_layer == "swiglu":
        gate, value = u.chunk(2, dim=-1)
        u = act(gate) * value
    else:
        u = act(u)
    expected = x1 + g2 * (u @ block.mlp.fc2.weight.T + block.mlp.fc2.bias)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, atol=1e-10, rtol=1e-10)


def _without_blocks(model):
    """forward_features of the model with no blocks and no final norm: the embedded tokens."""
    model.blocks = nn.Sequential()
    model.norm = nn.Identity()
    return model


@pytest.mark.parametrize("cls,reg,no_embed", [(True, 0, False), (True, 3, False), (True, 3, True), (False, 2, True), (False, 2, False)])
def test_embedding_order_and_positions(cls, reg, no_embed):
    m = model_for(class_token=cls, reg_tokens=reg, no_embed_class=no_embed, global_pool="token" if cls else "avg")
    x = image()
    with torch.no_grad():
        patches = m.patch_embed(x)
        tokens = _without_blocks(m).forward_features(x)
    prefix = [t for t in (m.cls_token, m.reg_token) if t is not None]
    prefix = torch.cat(prefix, dim=1).expand(2, -1, -1) if prefix else patches[:, :0]
    n = int(cls) + reg
    assert tokens.shape == (2, n + 16, 48)
    pos = m.pos_embed.detach()
    if no_embed:  # prefix tokens without a position, positions on the patches only
        expected = torch.cat([prefix, patches + pos], dim=1)
    else:
        expected = torch.cat([prefix, patches], dim=1) + pos
    torch.testing.assert_close(tokens, expected)


def test_pre_norm_normalises_the_embedded_tokens():
    m = model_for(pre_norm=True, reg_tokens=1)
    assert m.patch_embed.proj.bias is None
    x = image()
    with torch.no_grad():
        plain = _without_blocks(model_for(pre_norm=True, reg_tokens=1))
        plain.norm_pre = nn.Identity()
        raw = plain.forward_features(x)
        tokens = _without_blocks(m).forward_features(x)
    torch.testing.assert_close(tokens, F.layer_norm(raw, (48,), m.norm_pre.weight, m.norm_pre.bias, 1e-6))


def test_registers_are_excluded_from_pooling_and_feature_maps():
    m = model_for(reg_tokens=3, global_pool="avg")
    x = image()
    with torch.no_grad():
        tokens = m.forward_features(x)
        assert tokens.shape == (2, 1 + 3 + 16, 48)
        pooled = m.forward_head(tokens, pre_logits=True)
        torch.testing.assert_close(pooled, F.layer_norm(tokens[:, 4:].mean(1), (48,), m.fc_norm.weight, m.fc_norm.bias, 1e-6))
        final, feats = m.forward_intermediates(x, indices=1, return_prefix_tokens=True)
    (fmap, prefix), = feats
    assert fmap.shape == (2, 48, 4, 4) and prefix.shape == (2, 4, 48)


def test_final_norm_false_leaves_tokens_unnormalised():
    m = model_for(final_norm=False)
    assert isinstance(m.norm, nn.Identity) and isinstance(m.fc_norm, nn.Identity)
    x = image()
    with torch.no_grad():
        tokens = m.forward_features(x)
        ref = _without_blocks(model_for(final_norm=False)).forward_features(x)
        for block in m.blocks:
            ref = block(ref)
    torch.testing.assert_close(tokens, ref)


@pytest.mark.parametrize("cls", [True, False])
def test_map_head_pools_the_patch_tokens(cls):
    m = model_for(global_pool="map", class_token=cls, reg_tokens=1)
    x = image()
    with torch.no_grad():
        tokens = m.forward_features(x)
        pooled = m.attn_pool(tokens[:, m.num_prefix_tokens:])
        torch.testing.assert_close(m.pool(tokens), pooled)
        torch.testing.assert_close(m.forward_head(tokens, pre_logits=True), pooled)
        torch.testing.assert_close(m(x), pooled @ m.head.weight.T + m.head.bias)


def test_reset_classifier_and_map():
    m = model_for(global_pool="map")
    m.reset_classifier(3, "map")
    assert m.attn_pool is not None and m.head.out_features == 3 and m.global_pool == "map"
    m.reset_classifier(0, "token")
    assert m.attn_pool is None and m.global_pool == "token" and "attn_pool.latent" not in m.state_dict()
    assert sum(p.numel() for p in m.parameters()) == m.cfg.num_params()
    with pytest.raises(ValueError, match="map"):
        m.reset_classifier(3, "map")
    with pytest.raises(ValueError, match="map"):
        model_for().reset_classifier(3, "map")


@pytest.mark.parametrize("hw,grid", [((30, 30), (4, 4)), ((17, 40), (3, 5)), ((8, 8), (1, 1)), ((5, 9), (1, 2))])
def test_dynamic_img_pad_accepts_any_size(hw, grid):
    m = model_for(**OPTIONS["dynamic_pad"])
    x = image(*hw)
    with torch.no_grad():
        out = m.forward_features(x)
        _, (fmap,) = m.forward_intermediates(x, indices=1)
    assert out.shape == (2, 1 + grid[0] * grid[1], 48) and fmap.shape == (2, 48, *grid)
    padded = F.pad(x, (0, grid[1] * 8 - hw[1], 0, grid[0] * 8 - hw[0]))
    with torch.no_grad():
        torch.testing.assert_close(m.patch_embed(x), m.patch_embed.proj(padded).flatten(2).transpose(1, 2))


def test_without_dynamic_img_pad_sizes_must_divide():
    m = model_for(dynamic_img_size=True)
    with pytest.raises(ValueError, match="divisible"):
        m(image(30, 32))


@pytest.mark.parametrize("dynamic", [False, True])
def test_a_native_size_off_the_patch_grid_leaves_the_last_pixels_out(dynamic):
    """timm's rule (SigLIP so400m: 384 px in patches of 14): floor(size / patch) patches a side."""
    m = model_for(img_size=(38, 45), dynamic_img_size=dynamic)
    x = image(38, 45)
    with torch.no_grad():
        out = m.forward_features(x)
        cropped = fastvit.VisionTransformer(m.cfg.replace(img_size=(32, 40))).eval()
        cropped.load_state_dict(m.state_dict())
        torch.testing.assert_close(out, cropped.forward_features(x[..., :32, :40]))
        torch.testing.assert_close(m.patch_embed.forward_linear(x), m.patch_embed(x), atol=1e-5, rtol=1e-5)
    assert out.shape == (2, 1 + 4 * 5, 48)
    if dynamic:  # other sizes still come in whole patches
        with pytest.raises(ValueError, match="divisible"):
            m(image(39, 45))


@pytest.mark.parametrize("options", [dict(no_embed_class=True, reg_tokens=2), dict(reg_tokens=2), dict(class_token=False, global_pool="avg")])
def test_set_input_size_resamples_only_the_patch_positions(options):
    m = model_for(**options)
    prefix = 0 if m.no_embed_class else m.num_prefix_tokens
    old = m.pos_embed.detach().clone()
    m.set_input_size((48, 24))
    assert m.pos_embed.shape == (1, prefix + 6 * 3, 48)
    torch.testing.assert_close(m.pos_embed[:, :prefix], old[:, :prefix])
    assert m(image(48, 24)).shape == (2, 5)


def test_hybrid_stem_follows_patch_bias():
    cfg = ViTConfig(img_size=64, patch_size=32, embed_dim=48, depth=1, num_heads=4, hybrid_layers=(1, 1, 1, 1), pre_norm=True)
    with torch.device("meta"):
        model = fastvit.VisionTransformer(cfg)
    assert model.patch_embed.proj.bias is None and isinstance(model.norm_pre, nn.LayerNorm)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()


def test_parts_for_the_options():
    from fastvit.layers.activations import QuickGELU
    from fastvit.layers.glu import GluMlp
    from fastvit.layers.layer_scale import LayerScale
    from fastvit.parts import resolve_parts

    parts = resolve_parts(ViTConfig(**TINY, act_layer="quick_gelu", init_values=0.1, linear_impl="torch"))
    assert isinstance(parts.layer_scale(48), LayerScale) and parts.describe()["layer_scale"] == "LayerScale"
    assert isinstance(parts.mlp_layer(48).act, QuickGELU)  # torch: the activation is its own op
    for impl in ("auto", "triton"):  # fused fc1s compute every GELU form in their epilogue
        mlp = resolve_parts(ViTConfig(**TINY, act_layer="quick_gelu", linear_impl=impl)).mlp_layer(48)
        assert isinstance(mlp.act, torch.nn.Identity) and mlp.fc1.approximate == "quick"
    assert resolve_parts(ViTConfig(**TINY)).layer_scale is None
    assert isinstance(resolve_parts(ViTConfig(**TINY, mlp_layer="swiglu", act_layer="silu")).mlp_layer(48), GluMlp)


# The fused implementations with the options: the same numbers as the torch layers (tiny shapes,
# the Triton interpreter on CPU). LayerScale and the GELU forms run in the GEMM epilogues, SiLU
# (SwiGLU) as its own op; the kernels' own parity is tested in tests/kernels.
@pytest.mark.parametrize("options", [
    dict(act_layer="quick_gelu", qk_norm=True, reg_tokens=1),
    dict(init_values=0.3, mlp_layer="swiglu", act_layer="silu", pre_norm=True, global_pool="map", class_token=False),
])
def test_triton_layers_with_the_options_match_torch(options):
    pytest.importorskip("triton")
    small = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3, attn_impl="sdpa")
    ref = model_for(**small, **options)
    fused = fastvit.VisionTransformer(ref.cfg.replace(norm_impl="triton", linear_impl="triton")).eval()
    fused.load_state_dict(ref.state_dict(), strict=True)
    x = image(16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), atol=1e-4, rtol=1e-4)


def test_attention_maps_of_a_qk_norm_model_use_the_norms():
    from fastvit.analysis import attention_maps

    m = model_for(qk_norm=True, reg_tokens=1)
    x = image()
    with torch.no_grad():
        tokens, _ = m._embed(x)
        block = m.blocks[0]
        h = block.norm1(tokens)
        q, k, _ = block.attn.qkv(h).view(2, 18, 3, 4, 12).permute(2, 0, 3, 1, 4)
        q, k = block.attn.q_norm(q), block.attn.k_norm(k)
        expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(12), dim=-1)
    (maps,) = attention_maps(m, x, blocks=0)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)
