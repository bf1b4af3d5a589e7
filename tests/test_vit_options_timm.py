"""Issue 14's model options against real timm's VisionTransformer (interop venv).

For every option alone and DINOv2(-reg) / CLIP / SigLIP / DeiT III-like combinations at tiny
sizes: timm's perturbed weights load into fastvit with ``strict=True`` (same keys, same
``named_parameters`` order) and forward_features, pre-logits and logits agree within 1e-5
relative in fp32. Run:
PYTHONPATH=$PWD /work/venv-interop/bin/python -m pytest tests/test_vit_options_timm.py -m interop
"""

from __future__ import annotations


import pytest
import torch
from torch import nn

pytestmark = pytest.mark.interop
timm = pytest.importorskip("timm")

from timm.models.vision_transformer import VisionTransformer as TimmViT  # noqa: E402

import fastvit  # noqa: E402
from fastvit.checkpoints.timm import timm_kwargs  # noqa: E402
from fastvit.config import ViTConfig  # noqa: E402

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=5)

OPTIONS = {
    "default": {},
    "reg4": dict(reg_tokens=4),
    "reg_no_cls_avg": dict(reg_tokens=2, class_token=False, global_pool="avg"),
    "no_embed_class": dict(no_embed_class=True),
    "no_embed_class_reg": dict(no_embed_class=True, reg_tokens=3),
    "layer_scale": dict(init_values=0.5),
    "qk_norm": dict(qk_norm=True),
    "pre_norm": dict(pre_norm=True),
    "patch_bias_off": dict(patch_bias=False),
    "no_final_norm": dict(final_norm=False),
    "no_final_norm_avg": dict(final_norm=False, global_pool="avg"),
    "fc_norm": dict(fc_norm=True),
    "gelu_tanh": dict(act_layer="gelu_tanh"),
    "quick_gelu": dict(act_layer="quick_gelu"),
    "silu": dict(act_layer="silu"),
    "swiglu": dict(mlp_layer="swiglu", act_layer="silu", mlp_ratio=2.66667 * 2),
    "map": dict(global_pool="map"),
    "map_no_cls": dict(global_pool="map", class_token=False),
    "no_cls_max": dict(class_token=False, global_pool="max"),
    "no_cls_none": dict(class_token=False, global_pool=""),
    "dynamic_pad": dict(dynamic_img_size=True, dynamic_img_pad=True),
    "off_grid": dict(img_size=(38, 45)),  # floor(size / patch) patches: SigLIP so400m's 384 px in 14s
    "off_grid_pad": dict(img_size=(38, 45), dynamic_img_size=True, dynamic_img_pad=True),
    "dinov2": dict(img_size=28, patch_size=14, init_values=1e-5, dynamic_img_size=True),
    "dinov2_reg": dict(img_size=28, patch_size=14, init_values=1e-5, reg_tokens=4, dynamic_img_size=True),
    "dinov2_giant": dict(img_size=28, patch_size=14, init_values=1e-5, mlp_layer="swiglu", act_layer="silu",
                         mlp_ratio=2.66667 * 2, reg_tokens=4),
    "clip": dict(pre_norm=True, norm_eps=1e-5),
    "clip_quickgelu": dict(pre_norm=True, norm_eps=1e-5, act_layer="quick_gelu", num_classes=0),
    "siglip": dict(class_token=False, global_pool="map", act_layer="gelu_tanh"),
    "siglip_no_head": dict(class_token=False, global_pool="map", act_layer="gelu_tanh", num_classes=0),
    "deit3": dict(no_embed_class=True, init_values=1e-6),
    "everything": dict(reg_tokens=2, no_embed_class=True, init_values=0.3, qk_norm=True, pre_norm=True,
                       global_pool="map", act_layer="quick_gelu", dynamic_img_size=True, dynamic_img_pad=True),
}


def timm_model(cfg: ViTConfig) -> nn.Module:
    """timm's VisionTransformer with ``cfg``'s architecture (fastvit.checkpoints.timm.timm_kwargs); a patch
    bias that disagrees with timm's rule (bias = not pre_norm) is swapped in after construction."""
    tied = cfg.replace(patch_bias=None)
    model = TimmViT(**timm_kwargs(tied))
    if cfg.use_patch_bias != tied.use_patch_bias:
        model.patch_embed.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size, bias=cfg.use_patch_bias)
    return model


def perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def rel(got, ref) -> float:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def pair(name: str, seed: int = 0):
    cfg = ViTConfig(**{**TINY, **OPTIONS[name]})
    torch.manual_seed(seed)
    theirs = perturbed(timm_model(cfg), seed)
    ours = fastvit.VisionTransformer(cfg).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return cfg, ours, theirs


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_same_parameters_and_outputs_as_timm(name):
    cfg, ours, theirs = pair(name)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    assert sum(p.numel() for p in ours.parameters()) == cfg.num_params()
    sizes = [cfg.img_size]
    if cfg.dynamic_img_size:
        sizes += [(cfg.img_size[0] + cfg.patch_size, cfg.img_size[1] - (cfg.patch_size if cfg.dynamic_img_pad else 0))]
        if cfg.dynamic_img_pad:
            sizes += [(cfg.img_size[0] - 3, cfg.img_size[1] + 5)]
    for hw in sizes:
        x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            f_ours, f_theirs = ours.forward_features(x), theirs.forward_features(x)
            assert rel(f_ours, f_theirs) <= 1e-5, f"{hw}: forward_features"
            assert rel(ours.forward_head(f_ours, pre_logits=True), theirs.forward_head(f_theirs, pre_logits=True)) <= 1e-5
            assert rel(ours(x), theirs(x)) <= 1e-5, f"{hw}: logits"


@pytest.mark.parametrize("name", ["reg4", "no_embed_class_reg", "map_no_cls", "dinov2_reg", "everything"])
def test_timm_attributes_and_helpers(name):
    cfg, ours, theirs = pair(name)
    for attr in ("num_prefix_tokens", "num_reg_tokens", "no_embed_class", "has_class_token", "global_pool",
                 "pool_include_prefix", "dynamic_img_size", "num_features", "embed_dim"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.patch_embed.dynamic_img_pad == theirs.patch_embed.dynamic_img_pad
    assert ours.group_matcher() == theirs.group_matcher()
    present = {n for n, _ in theirs.named_parameters()}
    assert ours.no_weight_decay() == theirs.no_weight_decay() & present


@pytest.mark.parametrize("name", ["reg4", "no_embed_class_reg", "map_no_cls", "everything"])
def test_forward_intermediates_as_timm(name):
    _, ours, theirs = pair(name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for kw in (dict(indices=2, return_prefix_tokens=True, norm=True), dict(indices=[0], output_fmt="NLC")):
            a, b = ours.forward_intermediates(x, **kw), theirs.forward_intermediates(x, **kw)
            assert rel(a[0], b[0]) <= 1e-5
            assert len(a[1]) == len(b[1])
            for ya, yb in zip(a[1], b[1]):
                for ta, tb in zip(ya if isinstance(ya, tuple) else (ya,), yb if isinstance(yb, tuple) else (yb,)):
                    assert rel(ta, tb) <= 1e-5


@pytest.mark.parametrize("name", ["no_embed_class_reg", "dinov2_reg", "reg4"])
def test_set_input_size_resamples_as_timm(name):
    _, ours, theirs = pair(name)
    new = (ours.cfg.patch_size * 5, ours.cfg.patch_size * 3)
    ours.set_input_size(new)
    theirs.set_input_size(new)
    assert ours.pos_embed.shape == theirs.pos_embed.shape
    assert rel(ours.pos_embed, theirs.pos_embed) <= 1e-5
    x = torch.randn(1, 3, *new, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert rel(ours(x), theirs(x)) <= 1e-5


def test_reset_classifier_map_as_timm():
    _, ours, theirs = pair("map")
    ours.reset_classifier(3, "map")
    theirs.reset_classifier(3, "map")
    assert ours.attn_pool is not None and ours.head.out_features == 3
    ours.reset_classifier(0, "avg")
    theirs.reset_classifier(0, "avg")
    assert ours.attn_pool is None and theirs.attn_pool is None
    x = torch.randn(2, 3, 32, 32)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    with torch.no_grad():
        assert rel(ours(x), theirs(x)) <= 1e-5


@pytest.mark.parametrize("name", ["everything", "dinov2_giant", "siglip", "clip_quickgelu"])
def test_parameter_gradients_as_timm(name):
    cfg, ours, theirs = pair(name)
    x = torch.randn(2, 3, *cfg.img_size, generator=torch.Generator().manual_seed(4))
    for model in (ours, theirs):
        model.zero_grad()
        model(x).square().sum().backward()
    grads = {n: p.grad for n, p in theirs.named_parameters()}
    for n, p in ours.named_parameters():
        assert p.grad is not None, n
        assert rel(p.grad, grads[n]) <= 1e-5, n
