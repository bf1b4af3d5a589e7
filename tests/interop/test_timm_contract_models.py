"""The checks of timm's own ``tests/test_models.py`` over every fastvit preset: forward (with
gradient checkpointing), backward, default cfgs (timm's non-standard-model variant, which timm
applies to its ViTs), ``forward_intermediates``, ``features_only`` (the getter wrapper), FX forward
and backward through torchvision's feature extractor with timm's tracer settings, and pretrained
loading with ``in_chans`` / ``num_classes`` changes and ``features_only`` from an offline Hub cache.

fastvit's own adaptation, not timm's file: each preset is built at its width with 3 blocks and a
small image (4 x 4 patches) so the sweep runs on a CPU; the assertions are timm's. By default the
sweep takes the seven families of issue 22 and a few more; FASTVIT_TIMM_SWEEP=all takes every preset.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

import fastvit
from hub_layout import add_repo, use_cache

QUICK = ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "deit3_small_patch16_224", "vit_base_patch16_clip_224",
         "vit_base_patch16_siglip_224", "vit_small_patch14_reg4_dinov2", "vit_small_r26_s32_224",
         "vit_small_patch32_224", "deit_small_patch16_224", "vit_base_patch32_clip_quickgelu_224", "vit_small_patch14_dinov2"]
PRESETS = fastvit.list_models() if os.environ.get("FASTVIT_TIMM_SWEEP") == "all" else QUICK
DEPTH = 3


def _small(name: str, **kw):
    cfg = fastvit.get_config(name)
    side = 4 * cfg.patch_size
    return fastvit.create_model(name, depth=DEPTH, img_size=side, **kw), (3, side, side)


def _trace_kwargs(timm):
    from timm.models import get_notrace_functions, get_notrace_modules

    return dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)


@pytest.mark.parametrize("name", PRESETS)
def test_model_forward(name):
    model, size = _small(name)
    model.eval()
    x = torch.randn(1, *size)
    out = model(x)
    assert out.shape[0] == 1 and not torch.isnan(out).any()
    model.set_grad_checkpointing()
    torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", PRESETS)
def test_model_backward(name):
    model, size = _small(name, num_classes=42)
    model.train()
    out = model(torch.randn(2, *size))
    if isinstance(out, tuple):
        out = torch.cat(out)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert out.shape[-1] == 42 and not torch.isnan(out).any()


@pytest.mark.parametrize("name", PRESETS)
def test_model_default_cfgs_non_std(name):
    model, size = _small(name)
    model.eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    cfg, state_dict = model.default_cfg, model.state_dict()
    x = torch.randn(1, *size)
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    assert feats.shape[-1] == model.num_features and pre.shape[1] == model.head_hidden_size
    model.reset_classifier(0)
    assert model.num_classes == 0
    out = model(x)
    assert out.shape[-1] == model.head_hidden_size and out.shape == pre.shape
    headless, _ = _small(name, num_classes=0)
    assert headless.eval()(x).shape[-1] == headless.num_features
    if cfg.get("num_classes"):
        classifiers = cfg["classifier"] if isinstance(cfg["classifier"], (tuple, list)) else (cfg["classifier"],)
        assert all(f"{c}.weight" in state_dict for c in classifiers)
    first = cfg["first_conv"] if isinstance(cfg["first_conv"], (tuple, list)) else (cfg["first_conv"],)
    assert all(f"{c}.weight" in state_dict for c in first)


def _check_maps(maps, channels, reductions, size):
    assert len(maps) == len(channels)
    for c, r, m in zip(channels, reductions, maps):
        assert m.shape[1] == c and m.shape[0] == 1 and not torch.isnan(m).any()
        assert m.shape[2] <= math.ceil(size[1] / r) + 1 and m.shape[3] <= math.ceil(size[2] / r) + 1


@pytest.mark.parametrize("name", PRESETS)
def test_model_forward_intermediates(timm, name):
    model, size = _small(name)
    model.eval()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    assert len(info.channels()) >= 3
    x = torch.randn(1, *size)
    final, maps = model.forward_intermediates(x, output_fmt="NCHW")
    _check_maps(maps, info.channels(), info.reduction(), size)
    torch.testing.assert_close(final, model.forward_features(x))
    model.set_grad_checkpointing()
    torch.testing.assert_close(model.forward_intermediates(x, output_fmt="NCHW")[0], final, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", PRESETS)
def test_model_forward_intermediates_features(name):
    model, size = _small(name, features_only=True, feature_cls="getter")
    model.eval()
    _check_maps(model(torch.randn(1, *size)), model.feature_info.channels(), model.feature_info.reduction(), size)


def _fx_model(timm, model, train=False):
    from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

    kwargs = _trace_kwargs(timm)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    train_return = [train_nodes[-1]]
    if train:  # every node feeding the output (a distilled model returns two in training)
        graph = NodePathTracer(**kwargs).trace(model)
        nodes = list(reversed(graph.nodes))
        names = [n.name for n in nodes]
        train_return = [train_nodes[-names.index(n.name)] for n in nodes[0]._input_nodes]
    return create_feature_extractor(model, train_return_nodes=train_return, eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=kwargs)


@pytest.mark.parametrize("name", PRESETS)
def test_model_forward_fx(torchvision, timm, name):
    model, size = _small(name)
    model.eval()
    with torch.inference_mode():
        x = torch.randn(1, *size)
        out = model(x)
        fx_out = torch.cat(tuple(_fx_model(timm, model)(x).values()))
    assert torch.all(fx_out == out) and not torch.isnan(out).any()


@pytest.mark.parametrize("name", PRESETS)
def test_model_backward_fx(torchvision, timm, name):
    model, size = _small(name, num_classes=42)
    model.train()
    fx = _fx_model(timm, model, train=True)
    out = torch.cat(tuple(fx(torch.randn(2, *size)).values()))
    out.mean().backward()
    missing = [n for n, p in fx.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert out.shape[-1] == 42


# -- test_model_load_pretrained / test_model_features_pretrained, from an offline cache -------------------
PRETRAINED = ["vit_tiny_patch16_224.augreg_in21k_ft_in1k", "deit_tiny_distilled_patch16_224.fb_in1k",
              "deit3_small_patch16_224.fb_in1k", "vit_base_patch16_clip_224.openai", "vit_base_patch16_siglip_224.webli",
              "vit_small_patch14_reg4_dinov2.lvd142m", "vit_small_r26_s32_224.augreg_in21k_ft_in1k"]


@pytest.mark.parametrize("name", PRETRAINED)
def test_model_load_pretrained(timm, tmp_path, monkeypatch, name):
    from timm.models._hub import save_for_hf

    save_for_hf(timm.create_model(name, depth=DEPTH), tmp_path / "src", safe_serialization=True)
    add_repo(tmp_path / "hub", f"timm/{name}", {f: tmp_path / "src" / f for f in ("config.json", "model.safetensors")})
    use_cache(monkeypatch, tmp_path / "hub")
    for kw in (dict(in_chans=1, num_classes=5), dict(in_chans=1, num_classes=0)):
        ours = fastvit.create_model(name, pretrained=True, depth=DEPTH, **kw)
        theirs = timm.create_model(name, pretrained=True, depth=DEPTH, **kw)
        assert ours.patch_embed.state_dict().keys() == theirs.patch_embed.state_dict().keys()
        first = ours.pretrained_cfg["first_conv"]
        torch.testing.assert_close(ours.get_parameter(f"{first}.weight"), theirs.get_parameter(f"{first}.weight"))
    feats = fastvit.create_model(name, pretrained=True, depth=DEPTH, features_only=True)
    assert feats.feature_info.channels() == timm.create_model(name, pretrained=True, depth=DEPTH,
                                                              features_only=True).feature_info.channels()
