"""The further timm architectures without timm: the new blocks and stems against plain-PyTorch
references written from the papers' formulas, their shapes, gradients, configs and presets.
(Against real timm: tests/interop/test_timm_arch.py.)"""

import math

import pytest
import torch
import torch.nn.functional as F

import fastvit
from fastvit import presets_hybrid, presets_research, presets_sbb
from fastvit.layers.block_layouts import ParallelScalingBlock, ParallelThingsBlock, ResPostBlock
from fastvit.layers.conv_stems import StemEmbed
from fastvit.layers.diff_attention import DiffAttention, lambda_init_at

TORCH = dict(attn_impl="eager", norm_impl="torch", linear_impl="torch")
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5, **TORCH)
LAYOUTS = {
    "res_post_norm": dict(block_type="res_post_norm", init_values=0.5, class_token=False, global_pool="avg"),
    "parallel": dict(block_type="parallel", num_parallel=3, init_values=0.5),
    "parallel_scaling": dict(block_type="parallel_scaling", qkv_bias=False, qk_norm=True, init_values=0.5),
    "parallel_scaling_rms": dict(block_type="parallel_scaling", norm_layer="rmsnorm", pre_norm=True, qk_norm=True),
    "diff_parallel_scaling": dict(block_type="diff_parallel_scaling", init_values=0.5),
    "diff_attention": dict(attn_layer="diff", reg_tokens=1, init_values=0.5),
    "rmsnorm": dict(norm_layer="rmsnorm", global_pool="avg", class_token=False),
    "scale_norm": dict(scale_norm=True, global_pool="avg"),
    "aimv2": dict(class_token=False, global_pool="avg", fc_norm=False, qkv_bias=False, proj_bias=False, act_layer="silu",
                  mlp_layer="swiglu_unpacked", norm_layer="rmsnorm", patch_norm=True),
    "pool_include_prefix": dict(class_token=False, reg_tokens=2, global_pool="map", pool_include_prefix=True),
}


def tiny(**kw):
    torch.manual_seed(0)
    model = fastvit.VisionTransformer(**{**TINY, **kw}).eval()
    with torch.no_grad():  # every weight matters: perturb zero biases, unit norms, lambdas
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def softmax_attention(q, k, v, scale):
    return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1) @ v


def heads(t, h):  # (B, N, C) -> (B, h, N, C / h)
    b, n, c = t.shape
    return t.view(b, n, h, c // h).transpose(1, 2)


def merge(t):  # (B, h, N, d) -> (B, N, h * d)
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def attn_ref(attn, x):
    q, k, v = (heads(t, attn.num_heads) for t in F.linear(x, attn.qkv.weight, attn.qkv.bias).chunk(3, -1))
    return F.linear(merge(softmax_attention(q, k, v, attn.head_dim**-0.5)), attn.proj.weight, attn.proj.bias)


def mlp_ref(mlp, x):
    return F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)


def diff_ref(m, q, k, v):
    """The Differential Transformer's formula, head by head with explicit softmax maps."""
    h, d = m.num_heads, m.head_dim
    q, k, v = heads(q, 2 * h), heads(k, 2 * h), heads(v, h)
    lam = (torch.exp((m.lambda_q1 * m.lambda_k1).sum()) - torch.exp((m.lambda_q2 * m.lambda_k2).sum()) + m.lambda_init)
    outs = []
    for i in range(h):
        a1 = torch.softmax(q[:, 2 * i] @ k[:, 2 * i].transpose(-2, -1) / math.sqrt(d), -1)
        a2 = torch.softmax(q[:, 2 * i + 1] @ k[:, 2 * i + 1].transpose(-2, -1) / math.sqrt(d), -1)
        o = (a1 - lam * a2) @ v[:, i]
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * m.sub_norm.weight
        outs.append(o * (1 - m.lambda_init))
    return torch.cat(outs, dim=-1)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_res_post_block_matches_formula():
    block = tiny(**LAYOUTS["res_post_norm"]).blocks[1]
    assert isinstance(block, ResPostBlock)
    x = torch.randn(2, 16, 32)
    ln = lambda n, t: F.layer_norm(t, (32,), n.weight, n.bias, 1e-6)  # noqa: E731
    y = x + ln(block.norm1, attn_ref(block.attn, x))
    close(block(x), y + ln(block.norm2, mlp_ref(block.mlp, y)))


def test_res_post_block_norms_start_at_init_values():
    model = fastvit.VisionTransformer(**{**TINY, **LAYOUTS["res_post_norm"]})
    assert all(torch.all(b.norm1.weight == 0.5) and torch.all(b.norm2.weight == 0.5) for b in model.blocks)
    assert not any(".ls" in k for k in model.state_dict())


def test_parallel_things_block_sums_its_branches():
    block = tiny(**LAYOUTS["parallel"]).blocks[0]
    assert isinstance(block, ParallelThingsBlock) and len(block.attns) == len(block.ffns) == 3
    x = torch.randn(2, 17, 32)
    ln = lambda n, t: F.layer_norm(t, (32,), n.weight, n.bias, 1e-6)  # noqa: E731
    y = x + sum(b.ls.gamma * attn_ref(b.attn, ln(b.norm, x)) for b in block.attns)
    close(block(x), y + sum(b.ls.gamma * mlp_ref(b.mlp, ln(b.norm, y)) for b in block.ffns))


@pytest.mark.parametrize("layout", ["parallel_scaling", "parallel_scaling_rms"])
def test_parallel_scaling_block_matches_formula(layout):
    cfg = LAYOUTS[layout]
    block = tiny(**cfg).blocks[0]
    assert isinstance(block, ParallelScalingBlock)
    x = torch.randn(2, 17, 32)
    rms = cfg.get("norm_layer") == "rmsnorm"

    def norm(n, t):
        if rms:
            return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * n.weight
        return F.layer_norm(t, t.shape[-1:], n.weight, n.bias, 1e-6)

    y = F.linear(norm(block.in_norm, x), block.in_proj.weight, block.in_proj.bias)
    hidden = 64
    x_mlp, q, k, v = y.split([hidden, 32, 32, 32], -1)
    if block.mlp_bias is not None:
        x_mlp = x_mlp + block.mlp_bias
    q, k, v = heads(q, 2), heads(k, 2), heads(v, 2)
    attn = softmax_attention(norm(block.q_norm, q), norm(block.k_norm, k), v, 16**-0.5)
    out = F.linear(merge(attn), block.attn_out_proj.weight, block.attn_out_proj.bias)
    out = out + F.linear(F.gelu(x_mlp), block.mlp_out_proj.weight, block.mlp_out_proj.bias)
    gamma = block.ls.gamma if hasattr(block.ls, "gamma") else 1.0
    close(block(x), x + gamma * out)


def test_diff_attention_matches_formula():
    model = tiny(**LAYOUTS["diff_attention"])
    attn = model.blocks[1].attn
    assert isinstance(attn, DiffAttention)
    x = torch.randn(2, 18, 32)
    want = F.linear(diff_ref(attn, *F.linear(x, attn.qkv.weight, attn.qkv.bias).chunk(3, -1)), attn.proj.weight, attn.proj.bias)
    close(attn(x, torch.zeros_like(x)), want)


def test_diff_parallel_scaling_block_matches_formula():
    block = tiny(**LAYOUTS["diff_parallel_scaling"]).blocks[1]
    x = torch.randn(2, 17, 32)
    y = F.linear(F.layer_norm(x, (32,), block.in_norm.weight, block.in_norm.bias, 1e-6), block.in_proj.weight, block.in_proj.bias)
    x_mlp, q, k, v = y.split([64, 32, 32, 32], -1)
    out = F.linear(torch.cat([diff_ref(block, q, k, v), F.gelu(x_mlp)], -1), block.out_proj.weight, block.out_proj.bias)
    close(block(x), x + block.ls.gamma * out)


def test_lambda_init_follows_the_block_index():
    for layout in ("diff_attention", "diff_parallel_scaling"):
        model = fastvit.VisionTransformer(**{**TINY, **LAYOUTS[layout], "depth": 3})
        got = [getattr(b, "attn", b).lambda_init for b in model.blocks]
        assert got == [0.8 - 0.6 * math.exp(-0.3 * i) for i in range(3)] == [lambda_init_at(i) for i in range(3)]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_forward_backward_and_count(layout):
    model = tiny(**LAYOUTS[layout]).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    assert sum(p.numel() for p in model.parameters()) == model.cfg.num_params()


@pytest.mark.parametrize("stem,layers,patch,width", [("resnetv2", (), 32, 64), ("resnetd", (1, 1, 1), 16, 1024),
                                                     ("resnetd", (1, 1), 16, 512), ("mci", (), 16, 48)])
def test_stems_shapes_and_counts(stem, layers, patch, width):
    embed = StemEmbed(stem, layers, 3, 48, patch, img_size=64).eval()
    assert embed(torch.randn(2, 3, 64, 96)).shape == (2, (64 // patch) * (96 // patch), 48)
    assert embed.grid_size == (64 // patch, 64 // patch)
    if stem != "mci":
        assert embed.proj.in_channels == width and embed.proj.kernel_size == (patch // (4 * 2 ** max(len(layers) - 1, 0)),) * 2
    cfg = fastvit.ViTConfig(img_size=64, patch_size=patch, embed_dim=48, num_heads=2, depth=1, hybrid_stem=stem,
                            hybrid_layers=layers, **TORCH)
    model = fastvit.VisionTransformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("fields,match", [
    (dict(block_type="parallel_scaling", attn_layer="diff"), "attn_layer='diff' goes in the pre_norm block"),
    (dict(block_type="sandwich"), "block_type must be one of"),
    (dict(norm_layer="batchnorm"), "norm_layer must be one of"),
    (dict(num_parallel=0), "num_parallel must be a positive int"),
    (dict(block_type="parallel_scaling", mlp_layer="swiglu", act_layer="silu"), "plain MLP"),
    (dict(attn_layer="diff", num_heads=32), "head_dim 1 must be even"),
    (dict(hybrid_stem="mci", hybrid_layers=(1,)), "mci' has no ResNet stages"),
    (dict(hybrid_stem="resnetd", hybrid_layers=()), "resnetd' needs 1 to 4 stages"),
    (dict(hybrid_stem="resnetv2", hybrid_layers=(1, 1), patch_size=12), "multiple of the resnetv2 stem's stride 8"),
    (dict(proj_bias=False, block_type="parallel"), "proj_bias=False is for the pre_norm block"),
    (dict(patch_norm=True, hybrid_layers=(1,), patch_size=4), "a hybrid stem has none"),
    (dict(scale_norm=True, block_type="parallel_scaling"), "scale_norm=True adds norms"),
])
def test_config_refuses_what_it_cannot_build(fields, match):
    with pytest.raises(ValueError, match=match):
        fastvit.ViTConfig(**{**TINY, **fields})


def test_new_presets_carry_timms_default_tag():
    further = {**presets_sbb.PRETRAINED_CFG, **presets_research.PRETRAINED_CFG, **presets_hybrid.PRETRAINED_CFG}
    assert len(further) == 87 and set(further) <= set(fastvit.list_models())
    cfg = fastvit.create_model("vit_dwee_patch16_reg1_gap_256", depth=1).pretrained_cfg
    assert (cfg["tag"], cfg["crop_pct"], cfg["input_size"]) == ("sbb_nadamuon_in1k", 0.95, (3, 256, 256))
    assert fastvit.create_model("vit_base_mci_224", depth=1).pretrained_cfg["first_conv"] == "patch_embed.backbone.0.conv"
    assert fastvit.presets.pretrained_cfg_for("vit_base_patch16_224_miil", fastvit.get_config("vit_base_patch16_224_miil"))[
        "interpolation"] == "bilinear"
    xp = fastvit.get_config("vit_large_patch14_xp_224")
    assert (xp.block_type, xp.norm_layer, xp.qk_norm, xp.pre_norm, xp.use_patch_bias) == ("parallel_scaling", "rmsnorm", True, True, False)


def test_scale_norm_branches_match_formula():
    block = tiny(**LAYOUTS["scale_norm"]).blocks[0]
    x = torch.randn(2, 17, 32)
    ln = lambda n, t: F.layer_norm(t, t.shape[-1:], n.weight, n.bias, 1e-6)  # noqa: E731
    a = block.attn
    q, k, v = (heads(t, 2) for t in F.linear(x, a.qkv.weight, a.qkv.bias).chunk(3, -1))
    want = F.linear(ln(a.norm, merge(softmax_attention(q, k, v, 16**-0.5))), a.proj.weight, a.proj.bias)
    close(a(x, torch.zeros_like(x)), want)
    m = block.mlp
    want = F.linear(ln(m.norm, F.gelu(F.linear(x, m.fc1.weight, m.fc1.bias))), m.fc2.weight, m.fc2.bias)
    close(m(x, torch.zeros_like(x)), want)


def test_pool_include_prefix_pools_the_registers_too():
    model = tiny(**LAYOUTS["pool_include_prefix"])
    tokens = torch.randn(2, 2 + 16, 32)
    close(model.pool(tokens), model.attn_pool(tokens))
    assert model.pool_include_prefix is True


def test_aimv2_parts_match_formula():
    model = tiny(**LAYOUTS["aimv2"])
    block = model.blocks[0]
    assert model.patch_embed.norm.weight.shape == (32,) and "patch_embed.norm.weight" in model.state_dict()
    assert block.attn.proj.bias is None and block.mlp.fc1_g.bias is None and block.mlp.fc2.bias is None
    x = torch.randn(2, 16, 32)
    m = block.mlp
    want = F.linear(F.silu(F.linear(x, m.fc1_g.weight)) * F.linear(x, m.fc1_x.weight), m.fc2.weight)
    close(m(x, torch.zeros_like(x)), want)
    img = torch.randn(1, 3, 32, 32)
    t = F.conv2d(img, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=8).flatten(2).transpose(1, 2)
    close(model.patch_embed(img), t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * model.patch_embed.norm.weight)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_with_fastvits_kernels_match_torch(layout):
    """The new blocks built from the Triton parts (norms, fused MLP / residual GEMMs, attention,
    under the interpreter on a CPU) compute what the PyTorch parts do."""
    small = dict(TINY, img_size=16, depth=1)
    torch.manual_seed(0)
    ref = fastvit.VisionTransformer(**{**small, **LAYOUTS[layout]}).eval()
    fused = fastvit.VisionTransformer(**{**small, **LAYOUTS[layout], "attn_impl": "triton", "norm_impl": "triton",
                                         "linear_impl": "triton"}).eval()
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        close(fused(x), ref(x))
