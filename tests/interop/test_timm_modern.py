"""The issue-14 presets against real timm: every timm name of the DeiT III, DINOv2, CLIP and SigLIP
families is a preset; each converts from timm (in memory and through a state-dict file) within 1e-5
relative on a shallow, small-image version of it, exports back, and has timm's state-dict keys and
shapes, parameter count and pretrained_cfg at full size (built on the meta device)."""

import dataclasses

import pytest
import torch

import fastvit
from interop_helpers import assert_rel, image, perturb
from layouts import open_clip_state_dict

if "reg_tokens" not in {f.name for f in dataclasses.fields(fastvit.ViTConfig)}:
    pytest.skip("needs the issue-14 ViTConfig options", allow_module_level=True)

FAMILIES = ("deit3_*", "vit_*_dinov2", "vit_*_clip_*", "vit_*_siglip_*")
NEW_PRESETS = sorted({n for f in FAMILIES for n in fastvit.list_models(f)})
# the names issue 14 lists
ISSUE_PRESETS = [f"vit_{s}_patch14{r}_dinov2" for s in ("small", "base", "large", "giant") for r in ("", "_reg4")] + [
    "vit_base_patch16_clip_224", "vit_base_patch32_clip_224", "vit_large_patch14_clip_224", "vit_huge_patch14_clip_224",
    "vit_base_patch16_clip_quickgelu_224", "vit_base_patch16_siglip_224", "vit_so400m_patch14_siglip_384",
    "deit3_small_patch16_224", "deit3_base_patch16_224", "deit3_large_patch16_224"]
# the pretrained_cfg fields that fix preprocessing and the head
CFG_KEYS = ("tag", "input_size", "crop_pct", "crop_mode", "mean", "std", "num_classes", "interpolation", "license",
            "fixed_input_size", "classifier", "first_conv", "pool_size")
# the architecture fields a conversion must reproduce (init_values: only LayerScale's presence)
FIELDS = ("patch_size", "embed_dim", "num_heads", "mlp_hidden_dim", "qkv_bias", "class_token", "num_classes", "global_pool",
          "reg_tokens", "no_embed_class", "qk_norm", "pre_norm", "patch_bias", "final_norm", "use_fc_norm", "act_layer",
          "mlp_layer", "norm_eps")


def small(name):
    """Two blocks (one for the widest) at four patches a side: the preset's widths, heads and
    options, quick on a CPU."""
    cfg = fastvit.get_config(name)
    return dict(depth=1 if cfg.embed_dim >= 1024 else 2, img_size=4 * cfg.patch_size)


def random_timm(timm, name, **kw):
    """timm's model ``name`` with random weights, built on the meta device and filled directly
    (timm's own initialisation is most of a CPU conversion test's time): N(0, 0.02) matrices,
    tokens and position embeddings, 1 +- 0.05 norm weights and LayerScale, +- 0.05 biases."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kw)
    assert not list(model.buffers()), "a buffer would be left unfilled"
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim > 1:
                p.copy_(0.02 * noise)
            else:
                p.copy_((1.0 if key.endswith((".weight", ".gamma")) else 0.0) + 0.05 * noise)
    return model.eval()


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_preset_converts_from_timm(timm, name):
    """Every name: timm's model converts, computes the same, and has the preset's options."""
    kw = small(name)
    tm = random_timm(timm, name, **kw)
    x = image(kw["img_size"], kw["img_size"])
    with torch.no_grad():
        fv = fastvit.from_timm(tm)
        assert_rel(fv.forward_features(x), tm.forward_features(x), what=f"{name} from_timm features")
        assert_rel(fv(x), tm(x), what=f"{name} from_timm")
    preset = fastvit.get_config(name, **kw)
    assert {f: getattr(fv.cfg, f) for f in FIELDS} == {f: getattr(preset, f) for f in FIELDS}
    assert (fv.cfg.init_values is None) == (preset.init_values is None)


@pytest.mark.parametrize("name", ISSUE_PRESETS)
def test_preset_loads_timm_file_and_exports(timm, tmp_path, name):
    """The issue's names (the later ones share their loading code and differ in sizes, which
    test_preset_converts_from_timm and the full-size test check): a timm state-dict file into
    the preset, and the preset's weights back into timm."""
    kw = small(name)
    tm = random_timm(timm, name, **kw)
    x = image(kw["img_size"], kw["img_size"])
    with torch.no_grad():
        expected = tm(x)
        torch.save(tm.state_dict(), tmp_path / "timm.pth")
        loaded = fastvit.create_model(name, pretrained=str(tmp_path / "timm.pth"), **kw).eval()
        assert_rel(loaded(x), expected, what=f"{name} state-dict file")
        with torch.device("meta"):  # every tensor comes from the export
            back = timm.create_model(name, pretrained=False, **kw).eval()
        back.load_state_dict(fastvit.to_timm_state_dict(loaded), strict=True, assign=True)
        assert_rel(back(x), expected, what=f"{name} to_timm_state_dict")


def test_every_timm_family_name_is_a_preset(timm):
    """timm's names of the families (EVA, NaFlex and the ResNet towers match none of the patterns)."""
    assert sorted({n for f in FAMILIES for n in timm.list_models(f)}) == NEW_PRESETS


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_full_size_preset_is_timms_live(timm, name):
    with torch.device("meta"):
        tm = timm.create_model(name, pretrained=False)
        fv = fastvit.create_model(name)
    theirs, ours = tm.state_dict(), fv.state_dict()
    assert list(ours) == list(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert fastvit.get_config(name).num_params() == sum(p.numel() for p in fv.parameters()) == \
        sum(p.numel() for p in tm.parameters())
    tcfg = {k: tuple(v) if isinstance(v, list) else v for k, v in tm.pretrained_cfg.items()}
    assert {k: fv.pretrained_cfg[k] for k in CFG_KEYS} == {k: tcfg[k] for k in CFG_KEYS}


def test_timm_model_kwargs_rebuild_the_preset(timm):
    from timm.models.vision_transformer import VisionTransformer

    from fastvit.checkpoints.timm import timm_kwargs

    for name in ("vit_giant_patch14_reg4_dinov2", "vit_base_patch16_clip_quickgelu_224", "vit_base_patch16_siglip_224"):
        cfg = fastvit.get_config(name, **small(name), embed_dim=96, num_heads=4)
        tm = VisionTransformer(**timm_kwargs(cfg)).eval()
        fv = perturb(fastvit.VisionTransformer(cfg)).eval()
        tm.load_state_dict(fastvit.to_timm_state_dict(fv), strict=True)
        x = image(cfg.img_size[0], cfg.img_size[1])
        with torch.no_grad():
            assert_rel(fv(x) if cfg.num_classes else fv.forward_features(x),
                       tm(x) if cfg.num_classes else tm.forward_features(x), what=name)


@pytest.mark.parametrize("source,target,needle", [
    ("vit_small_patch14_reg4_dinov2", "vit_small_patch14_dinov2", "reg_tokens"),
    ("vit_base_patch16_siglip_224", "vit_base_patch16_224", "global_pool"),
    ("vit_base_patch16_clip_224", "vit_base_patch16_224", "pre_norm"),
    ("vit_giant_patch14_dinov2", "vit_giant_patch14_dinov2", None),
])
def test_timm_file_into_another_family_is_refused(timm, tmp_path, source, target, needle):
    kw = small(source)
    torch.save(timm.create_model(source, pretrained=False, **kw).state_dict(), tmp_path / "src.pth")
    if needle is None:  # the same family loads
        fastvit.load_checkpoint(fastvit.create_model(target, **kw), tmp_path / "src.pth")
        return
    with pytest.raises(ValueError, match=needle):
        fastvit.load_checkpoint(fastvit.create_model(target, **kw, num_classes=0), tmp_path / "src.pth")


def test_so400m_native_size_drops_the_remainder_as_timm(timm):
    """384 px at patch 14: timm's patch convolution floors the grid to 27 x 27 (the last 6 pixels
    of each side unused); the preset at its native size must compute the same."""
    tm = perturb(timm.create_model("vit_so400m_patch14_siglip_384", pretrained=False, depth=1, embed_dim=96,
                                   num_heads=4)).eval()
    fv = fastvit.from_timm(tm)
    assert fv.cfg.img_size == (384, 384) and fv.cfg.grid_size == (27, 27)
    x = image(384, 384, batch=1)
    with torch.no_grad():
        assert_rel(fv.forward_features(x), tm.forward_features(x), what="so400m at 384")
        assert_rel(fv.forward_head(fv.forward_features(x), pre_logits=True),
                   tm.forward_head(tm.forward_features(x), pre_logits=True), what="so400m pooled")


def test_open_clip_layout_as_timms_filter(timm, tmp_path):
    """An OpenAI-layout CLIP file: fastvit's reading equals timm's own checkpoint_filter_fn."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    name, kw = "vit_base_patch16_clip_quickgelu_224", dict(depth=2, img_size=64)
    source = perturb(timm.create_model(name, pretrained=False, **kw))
    with torch.no_grad():
        source.head.bias.zero_()
    layout = open_clip_state_dict(source.state_dict(), 2)
    reference = timm.create_model(name, pretrained=False, **kw).eval()
    reference.load_state_dict(checkpoint_filter_fn(dict(layout), reference))
    torch.save(layout, tmp_path / "open_clip_model.pt")
    model = fastvit.create_model(name, pretrained=str(tmp_path / "open_clip_model.pt"), **kw).eval()
    x = image(64, 64)
    with torch.no_grad():
        assert_rel(model(x), reference(x), what="open_clip")


def test_original_dinov2_release_as_timms_filter(timm, tmp_path):
    """The facebookresearch/dinov2 names (register_tokens, mask_token, mlp.w12/w3) as timm reads them."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    name = "vit_giant_patch14_reg4_dinov2"
    kw = dict(depth=1, img_size=56, embed_dim=96, num_heads=4)
    source = perturb(timm.create_model(name, pretrained=False, **kw)).eval()
    sd = source.state_dict()
    cls_pos = torch.randn(1, 1, 96)
    release = {("register_tokens" if k == "reg_token" else k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3")): v
               for k, v in sd.items()}
    release.update(pos_embed=torch.cat([cls_pos, sd["pos_embed"]], dim=1), cls_token=sd["cls_token"] - cls_pos,
                   mask_token=torch.zeros(1, 96))
    reference = timm.create_model(name, pretrained=False, **kw).eval()
    reference.load_state_dict(checkpoint_filter_fn(dict(release), reference))
    model = fastvit.load_checkpoint(fastvit.create_model(name, **kw).eval(), release)
    x = image(56, 56)
    with torch.no_grad():
        assert_rel(model.forward_features(x), reference.forward_features(x), what="dinov2 release")
        assert_rel(model.forward_features(x), source.forward_features(x), what="dinov2 release vs source")
