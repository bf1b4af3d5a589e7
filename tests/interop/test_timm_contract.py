"""timm's create_model contract, with timm 1.0.29 as the reference: the tag table, loading
``name.tag`` / ``hf-hub:`` / ``local-dir:`` from an offline Hub cache that timm's own
``save_for_hf`` fills (timm loading the same cache is the reference), folders both ways,
head / in_chans adaptation, ``features_only``, FX feature extraction (torchvision's and timm's).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import fastvit
from fastvit.checkpoints.pretrained_cfgs import pretrained_cfg as fastvit_cfg, tags_for
from hub_layout import add_repo, use_cache

# tags of several families, each with a small random model (one block, narrow) in the cache
SMALL = dict(depth=1, embed_dim=64, num_heads=2)
TAGS = [
    "vit_tiny_patch16_224.augreg_in21k_ft_in1k",      # vit augreg
    "vit_base_patch16_224.augreg_in21k",              # a 21k head
    "deit_tiny_patch16_224.fb_in1k",                  # deit
    "deit_small_distilled_patch16_224.fb_in1k",       # deit distilled
    "deit3_small_patch16_224.fb_in22k_ft_in1k",       # deit3
    "vit_small_patch14_reg4_dinov2.lvd142m",          # dinov2 with registers
    "vit_base_patch16_clip_224.openai",               # clip
    "vit_base_patch16_siglip_224.webli",              # siglip (attention pool)
    "vit_small_patch16_dinov3.lvd1689m",              # dinov3 (timm's eva module: rotary, registers)
    "eva02_tiny_patch14_224.mim_in22k",               # eva-02 (rotary, SwiGLU)
]


def _in_timm_registry(timm, arch):
    from timm.models import _registry

    return list(_registry._model_default_cfgs[arch].tags) if arch in _registry._model_default_cfgs else []


def test_tag_table_is_timms(timm):
    for arch in fastvit.list_models():
        theirs = _in_timm_registry(timm, arch)
        assert tags_for(arch) == theirs, arch
        for tag in theirs:
            assert fastvit_cfg(arch, tag) == timm.models.get_pretrained_cfg(f"{arch}.{tag}").to_dict(), f"{arch}.{tag}"
        if theirs:
            assert fastvit.create_model(arch, depth=1).pretrained_cfg == timm.models.get_pretrained_cfg(arch).to_dict()


@pytest.mark.parametrize("pattern, exclude", [("", ""), ("vit_base*", ""), ("*clip*", ""), ("deit*.fb*", ""),
                                              ("vit_small_patch16_224", ""), (["vit_small*", "deit3*"], ""),
                                              ("vit_*", ["*clip*", "*dinov2*"])])
def test_list_pretrained_is_timms(timm, pattern, exclude):
    known = set(fastvit.list_models())  # both families
    theirs = [n for n in timm.list_pretrained(pattern, exclude_filters=exclude) if n.split(".")[0] in known]
    assert fastvit.list_pretrained(pattern, exclude_filters=exclude) == theirs


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch, timm):
    """An offline Hub cache holding, for each of TAGS, a small random timm model saved by timm's save_for_hf."""
    from timm.models._hub import save_for_hf

    cache = tmp_path / "hub"
    torch.manual_seed(0)
    for name in TAGS:
        folder = tmp_path / "src" / name
        save_for_hf(timm.create_model(name, pretrained=False, **SMALL), folder, safe_serialization=True)
        add_repo(cache, f"timm/{name}", {f: folder / f for f in ("config.json", "model.safetensors")})
    use_cache(monkeypatch, cache)
    return cache


def _close(a, b, what):
    scale = b.abs().max().clamp_min(1e-12)
    assert ((a - b).abs().max() / scale).item() <= 1e-5, what


def _input(model, batch=2):
    return torch.randn(batch, *model.pretrained_cfg["input_size"])


def test_name_tag_and_hf_hub_load_what_timm_loads(timm, hub_cache):
    torch.manual_seed(1)
    for name in TAGS:
        for source in (name, f"hf-hub:timm/{name}"):
            ref = timm.create_model(source, pretrained=True, **SMALL).eval()
            ours = fastvit.create_model(source, pretrained=True, **SMALL).eval()
            assert ours.pretrained_cfg == ref.pretrained_cfg, source
            assert ours.num_classes == ref.num_classes, source
            x = _input(ref)
            with torch.no_grad():
                _close(ours(x), ref(x), source)


def test_head_override_and_in_chans_as_timm(timm, hub_cache):
    for name in ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "deit_small_distilled_patch16_224.fb_in1k",
                 "vit_base_patch16_siglip_224.webli"):
        for kw in (dict(num_classes=5), dict(num_classes=0), dict(in_chans=1, num_classes=5), dict(in_chans=4)):
            ref = timm.create_model(name, pretrained=True, **SMALL, **kw).eval()
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                ours = fastvit.create_model(name, pretrained=True, **SMALL, **kw).eval()
            theirs_sd, ours_sd = ref.state_dict(), ours.state_dict()
            assert ours_sd.keys() == theirs_sd.keys(), (name, kw)
            for k in ours_sd:  # every weight but the freshly initialised head is timm's
                if not k.startswith(("head.", "head_dist.")):
                    torch.testing.assert_close(ours_sd[k], theirs_sd[k], rtol=0, atol=0, msg=f"{name} {kw} {k}")
            if kw.get("num_classes") == 0:
                x = _input(ref)[:, : ours.cfg.in_chans]
                with torch.no_grad():
                    _close(ours.forward_head(ours.forward_features(x), pre_logits=True),
                           ref.forward_head(ref.forward_features(x), pre_logits=True), f"{name} {kw}")


@pytest.mark.parametrize("kw", [dict(), dict(out_indices=(0, 2)), dict(out_indices=2)])
def test_features_only_as_timm(timm, hub_cache, kw):
    name = "vit_small_patch14_reg4_dinov2.lvd142m"
    from timm.models._hub import save_for_hf

    ref_full = timm.create_model(name, pretrained=False, depth=3, embed_dim=64, num_heads=2)
    folder = hub_cache.parent / "deep"
    save_for_hf(ref_full, folder, safe_serialization=True, model_args=dict(depth=3, embed_dim=64, num_heads=2))
    ref = timm.create_model(f"local-dir:{folder}", pretrained=True, features_only=True, img_size=56, **kw).eval()
    ours = fastvit.create_model(f"local-dir:{folder}", pretrained=True, features_only=True, img_size=56, **kw).eval()
    for what in ("channels", "reduction", "module_name"):
        assert getattr(ours.feature_info, what)() == getattr(ref.feature_info, what)(), what
    assert ours.pretrained_cfg == ref.pretrained_cfg
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert isinstance(a, list) and len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape
        _close(u, v, "feature map")


def test_timm_reads_fastvit_folders(timm, tmp_path):
    for name, kw in (("vit_tiny_patch16_224", dict(img_size=64, num_classes=5, global_pool="avg", **SMALL)),
                     ("deit3_small_patch16_224", dict(depth=2, embed_dim=64, num_heads=2, drop_path_rate=0.1)),
                     ("vit_base_patch16_clip_224", dict(SMALL, reg_tokens=2, img_size=32))):
        model = fastvit.create_model(name, **kw).eval()
        folder = fastvit.save_pretrained(model, tmp_path / name)
        ref = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        back = fastvit.create_model(f"local-dir:{folder}", pretrained=True).eval()
        assert back.pretrained_cfg == ref.pretrained_cfg, name
        x = torch.randn(2, 3, *model.cfg.img_size)
        with torch.no_grad():
            _close(ref(x), model(x), name)
            _close(back(x), model(x), name)


def test_fastvit_reads_timm_save_for_hf(timm, tmp_path):
    from timm.models._hub import save_for_hf

    args = dict(img_size=48, depth=2, embed_dim=64, num_heads=4, num_classes=7, init_values=1e-4)
    ref = timm.create_model("vit_small_patch16_224", **args).eval()
    save_for_hf(ref, tmp_path / "timm", model_args=args)  # pytorch_model.bin, timm's default
    ours = fastvit.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    again = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    assert ours.pretrained_cfg == again.pretrained_cfg
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        _close(ours(x), ref(x), "save_for_hf folder")


def test_offline_error_names_the_repo(timm, hub_cache):
    with pytest.raises(OSError, match=r"timm/vit_small_patch16_224\.augreg_in21k_ft_in1k.*offline"):
        fastvit.create_model("vit_small_patch16_224", pretrained=True, **SMALL)
    with pytest.raises(Exception):  # timm fails too (its own error)
        timm.create_model("vit_small_patch16_224", pretrained=True, **SMALL)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
                                  "vit_small_patch14_reg4_dinov2", "vit_base_patch16_siglip_224", "vit_small_r26_s32_224"])
def test_fx_feature_extraction(torchvision, timm, name):
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    from timm.models import FeatureGraphNet

    model = fastvit.create_model(name, depth=3, embed_dim=64, num_heads=2, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    nodes = ["blocks.0", "blocks.2", "norm"]
    train_nodes, eval_nodes = get_graph_node_names(model)  # traces in both modes
    assert any(n.startswith("blocks.2.") for n in eval_nodes) and train_nodes
    extractor = create_feature_extractor(model, return_nodes=nodes)
    with torch.no_grad():
        out = extractor(x)
        ref = model.forward_intermediates(x, indices=[0, 2], output_fmt="NLC", intermediates_only=True)
        n = model.num_prefix_tokens  # the blocks' outputs: prefix tokens, then the patches
        for node, patches in zip(nodes, ref):
            torch.testing.assert_close(out[node][:, n:], patches)
        torch.testing.assert_close(out["norm"], model.forward_features(x))
        graph_feats = FeatureGraphNet(model, out_indices=(0, 2))(x)  # timm's FX feature extraction
        for patches, got in zip(ref, graph_feats):
            torch.testing.assert_close(got[:, n:], patches)
