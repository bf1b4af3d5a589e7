"""Issue 14's new layers and ViTConfig.num_params() against real timm (interop venv).

Run: PYTHONPATH=$PWD /work/venv-interop/bin/python -m pytest tests/layers/test_vit_options_interop.py -m interop
Each fastvit module loads the state dict of timm's module with ``strict=True`` (same keys)
and must give its outputs within 1e-5 relative (fp32) -- in practice to rounding.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.interop
timm = pytest.importorskip("timm")

from timm.layers import AttentionPoolLatent as TimmPool  # noqa: E402
from timm.layers import LayerScale as TimmLayerScale  # noqa: E402
from timm.layers import PatchEmbed as TimmPatchEmbed  # noqa: E402
from timm.layers import SwiGLUPacked, get_act_layer  # noqa: E402
from timm.models.vision_transformer import VisionTransformer as TimmViT  # noqa: E402

from fastvit.checkpoints.timm import timm_kwargs  # noqa: E402
from fastvit.config import ACT_LAYERS, ViTConfig  # noqa: E402
from fastvit.layers.activations import create_activation  # noqa: E402
from fastvit.layers.embed import PatchEmbed  # noqa: E402
from fastvit.layers.glu import GluMlp  # noqa: E402
from fastvit.layers.layer_scale import LayerScale  # noqa: E402
from fastvit.layers.pool import AttentionPoolLatent  # noqa: E402


def perturb(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def assert_rel(got, ref, tol=1e-5):
    err = ((got.double() - ref.double()).abs().max() / ref.double().abs().max()).item()
    assert err <= tol, f"relative error {err:.3g} > {tol:g}"


def copy_from(ours: nn.Module, theirs: nn.Module) -> nn.Module:
    """timm's weights into ours, keys must match exactly."""
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.eval()


@pytest.mark.parametrize("name", ACT_LAYERS)
def test_activation_matches_timms(name):
    x = torch.linspace(-8, 8, 4001)
    assert_rel(create_activation(name)(x), get_act_layer(name)()(x), 1e-6)


def test_layer_scale_matches_timms():
    theirs = perturb(TimmLayerScale(24, init_values=1e-5))
    ours = copy_from(LayerScale(24, init_values=1e-5), theirs)
    assert torch.equal(LayerScale(24, 1e-5).gamma, TimmLayerScale(24, 1e-5).gamma)  # same init
    x = torch.randn(2, 5, 24)
    assert_rel(ours(x), theirs(x), 0)


@pytest.mark.parametrize("dim,hidden", [(24, 64), (32, int(32 * 2.66667 * 2))])
def test_swiglu_branch_matches_timms_plus_residual(dim, hidden):
    theirs = perturb(SwiGLUPacked(in_features=dim, hidden_features=hidden)).eval()
    ours = copy_from(GluMlp(dim, hidden), theirs)
    x, r = torch.randn(2, 7, dim), torch.randn(2, 7, dim)
    assert_rel(ours(x, r), r + theirs(x))


@pytest.mark.parametrize("heads,qk_norm,act,eps,ratio", [(4, False, "gelu", 1e-6, 4.0), (2, True, "gelu_tanh", 1e-5, 3.5),
                                                         (8, False, "quick_gelu", 1e-6, 4.0)])
def test_attention_pool_matches_timms(heads, qk_norm, act, eps, ratio):
    theirs = perturb(TimmPool(32, num_heads=heads, mlp_ratio=ratio, qk_norm=qk_norm,
                              norm_layer=partial(nn.LayerNorm, eps=eps), act_layer=get_act_layer(act))).eval()
    ours = copy_from(AttentionPoolLatent(32, heads, mlp_ratio=ratio, qk_norm=qk_norm, norm_eps=eps, act_layer=act), theirs)
    x = torch.randn(3, 11, 32)
    assert_rel(ours(x), theirs(x))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hw", [(32, 32), (30, 27), (9, 17)])
def test_patch_embed_matches_timms(bias, hw):
    theirs = perturb(TimmPatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=16, bias=bias,
                                    strict_img_size=False, dynamic_img_pad=True))
    ours = copy_from(PatchEmbed(8, 3, 16, img_size=32, dynamic_img_size=True, bias=bias, dynamic_img_pad=True), theirs)
    x = torch.randn(2, 3, *hw)
    assert ours.dynamic_feat_size(hw) == theirs.dynamic_feat_size(hw)
    assert_rel(ours(x), theirs(x))
    assert_rel(ours.forward_linear(x), theirs(x))


# -- ViTConfig.num_params() equals the parameter count of timm's VisionTransformer ---------------------

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=5)


OPTIONS = {
    "default": {}, "reg4": dict(reg_tokens=4), "reg_no_cls": dict(reg_tokens=2, class_token=False, global_pool="avg"),
    "no_embed_class": dict(no_embed_class=True, reg_tokens=1), "layer_scale": dict(init_values=1e-5),
    "qk_norm": dict(qk_norm=True), "pre_norm": dict(pre_norm=True), "no_final_norm": dict(final_norm=False),
    "no_final_norm_avg": dict(final_norm=False, global_pool="avg"), "fc_norm": dict(fc_norm=True),
    "map": dict(global_pool="map"), "map_no_cls": dict(global_pool="map", class_token=False),
    "swiglu": dict(mlp_layer="swiglu", act_layer="silu", mlp_ratio=2.66667 * 2),
    "swiglu_map": dict(mlp_layer="swiglu", act_layer="silu", global_pool="map"),
    "quick_gelu": dict(act_layer="quick_gelu"), "no_qkv_bias": dict(qkv_bias=False),
    "dinov2_reg": dict(init_values=1e-5, reg_tokens=4, img_size=28, patch_size=14),
    "clip": dict(pre_norm=True, act_layer="quick_gelu", norm_eps=1e-5),
    "siglip": dict(class_token=False, global_pool="map", act_layer="gelu_tanh"),
    "deit3": dict(no_embed_class=True, init_values=1e-6),
    "dynamic_pad": dict(dynamic_img_size=True, dynamic_img_pad=True, img_size=30),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_num_params_equals_timms(name):
    cfg = ViTConfig(**{**TINY, **OPTIONS[name]})
    model = TimmViT(**timm_kwargs(cfg))
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()


def config_of(model) -> ViTConfig:
    """The ViTConfig a timm VisionTransformer's modules describe (read from the modules, for the count)."""
    block = model.blocks[0]
    d = model.embed_dim
    acts = {nn.GELU: "gelu", nn.SiLU: "silu"}
    act = block.mlp.act
    act_name = "quick_gelu" if type(act).__name__ == "QuickGELU" else (
        "gelu_tanh" if getattr(act, "approximate", "none") == "tanh" or type(act).__name__ == "GELUTanh" else acts[type(act)])
    swiglu = type(block.mlp).__name__ == "GluMlp"
    has = lambda m: not isinstance(m, nn.Identity)  # noqa: E731
    return ViTConfig(
        img_size=model.patch_embed.img_size, patch_size=model.patch_embed.patch_size[0], embed_dim=d, depth=len(model.blocks),
        num_heads=block.attn.num_heads, mlp_ratio=block.mlp.fc1.out_features / d, qkv_bias=block.attn.qkv.bias is not None,
        num_classes=model.num_classes, global_pool=model.global_pool, class_token=model.has_class_token,
        reg_tokens=model.num_reg_tokens, no_embed_class=model.no_embed_class, qk_norm=has(block.attn.q_norm),
        init_values=1e-5 if has(block.ls1) else None, pre_norm=has(model.norm_pre),
        patch_bias=model.patch_embed.proj.bias is not None, final_norm=has(model.norm) or has(model.fc_norm),
        fc_norm=has(model.fc_norm) if has(model.norm) or has(model.fc_norm) else None,
        act_layer=act_name, mlp_layer="swiglu" if swiglu else "mlp")


@pytest.mark.parametrize("name", [
    "vit_small_patch14_dinov2", "vit_giant_patch14_dinov2", "vit_large_patch14_reg4_dinov2", "vit_giant_patch14_reg4_dinov2",
    "vit_base_patch16_clip_224", "vit_huge_patch14_clip_224", "vit_base_patch16_clip_quickgelu_224",
    "vit_base_patch16_siglip_224", "vit_so400m_patch14_siglip_384", "deit3_small_patch16_224", "deit3_large_patch16_224",
])
def test_num_params_of_timms_models(name):
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    cfg = config_of(model)
    assert cfg.num_params() == sum(p.numel() for p in model.parameters())
