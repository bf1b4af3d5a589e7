"""fastvit's model API is timm's: attributes, forward_intermediates, pruning, heads, and timm's
own data, optimizer and feature-extraction helpers give the same for a timm model and its conversion."""

import copy
import dataclasses

import pytest
import torch
from torch import nn

import fastvit
from interop_helpers import assert_rel, image, perturb

PAIRS = ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"]


def pair(timm, name="vit_tiny_patch16_224", depth=3, seed=0, **kw):
    """A perturbed timm model at 64 px (16 patches: quick) and its fastvit conversion."""
    torch.manual_seed(seed)
    tm = perturb(timm.create_model(name, pretrained=False, depth=depth, **{"img_size": 64, **kw}), seed).eval()
    return tm, fastvit.from_timm(tm)


def timm_public_names(model) -> set[str]:
    """Attributes and methods a timm ViT has beyond nn.Module's, minus what is internal to it."""
    base = set(dir(nn.Module()))
    return {n for n in dir(model) if not n.startswith("_") and n not in base}


# timm internals with no role in the API: init helpers, npz/jit specifics, its own weight-init mode
NOT_API = {"fix_init", "fix_init_weight", "weight_init_mode", "load_pretrained", "set_lambda_init"}


@pytest.mark.parametrize("name", PAIRS)
def test_every_timm_attribute_exists_with_timm_values(timm, name):
    tm, fv = pair(timm, name)
    missing = sorted(n for n in timm_public_names(tm) - NOT_API if not hasattr(fv, n))
    assert not missing, f"fastvit lacks timm's {missing}"
    for attr in ("num_classes", "global_pool", "embed_dim", "num_features", "head_hidden_size", "has_class_token",
                 "num_reg_tokens", "no_embed_class", "dynamic_img_size", "num_prefix_tokens", "pool_include_prefix",
                 "in_chans", "feature_info", "pretrained_cfg", "default_cfg", "grad_checkpointing"):
        assert getattr(fv, attr) == getattr(tm, attr), attr
    for attr in ("patch_size", "grid_size", "num_patches", "img_size", "dynamic_img_pad"):
        theirs = getattr(tm.patch_embed, attr)
        assert getattr(fv.patch_embed, attr) == (tuple(theirs) if isinstance(theirs, (list, tuple)) else theirs), attr
    assert fv.no_weight_decay() <= tm.no_weight_decay()
    assert fv.group_matcher() == tm.group_matcher() and fv.group_matcher(coarse=True) == tm.group_matcher(coarse=True)
    classifier = fv.get_classifier()
    theirs = tm.get_classifier()
    if isinstance(theirs, tuple):
        assert [type(c) for c in classifier] == [type(c) for c in theirs]
    else:
        assert type(classifier) is type(theirs)


def test_pretrained_cfg_per_preset_is_timms(timm):
    keys = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "num_classes", "fixed_input_size",
            "pool_size", "first_conv", "classifier", "architecture", "tag", "license")
    from fastvit.presets import get_config, pretrained_cfg_for

    for name in fastvit.presets.list_models():  # the ViT presets (the eva family: test_timm_eva.py, test_timm_contract.py)
        theirs = timm.models.get_pretrained_cfg(name).to_dict()
        ours = pretrained_cfg_for(name, get_config(name))
        diff = {k: (ours.get(k), theirs.get(k)) for k in keys if ours.get(k) != theirs.get(k)}
        assert not diff, f"{name}: {diff}"
        # timm builds its model with the class count of that config
        assert get_config(name).num_classes == theirs["num_classes"], name
    # create_model attaches it, and a changed image size leaves it as timm leaves it
    for name in ("vit_tiny_patch16_384", "deit_tiny_distilled_patch16_224"):
        ours = fastvit.create_model(name, depth=1, img_size=64).pretrained_cfg
        theirs = timm.create_model(name, depth=1, img_size=64).pretrained_cfg
        assert {k: ours.get(k) for k in keys} == {k: theirs.get(k) for k in keys}


@pytest.mark.parametrize("name", ["vit_small_patch16_384", "deit_tiny_patch16_224", "vit_base_patch32_224"])
def test_resolve_model_data_config_is_timms(timm, name):
    from timm.data import create_transform, resolve_model_data_config

    tm = timm.create_model(name, pretrained=False, depth=1)
    for model in (fastvit.from_timm(tm), fastvit.create_model(name, depth=1)):
        assert resolve_model_data_config(model) == resolve_model_data_config(tm)
        assert str(create_transform(**resolve_model_data_config(model))) == str(create_transform(**resolve_model_data_config(tm)))
    plain = timm.models.vision_transformer.VisionTransformer(img_size=224, depth=1, embed_dim=64, num_heads=2)
    assert resolve_model_data_config(fastvit.from_timm(plain)) == resolve_model_data_config(plain)


def _groups(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return [(g["lr_scale"] if "lr_scale" in g else None, g["weight_decay"], [names[id(p)] for p in g["params"]])
            for g in optimizer.param_groups]


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("layer_decay", [0.75, None])
def test_create_optimizer_v2_gives_timms_param_groups(timm, name, layer_decay):
    from timm.optim import create_optimizer_v2

    tm, fv = pair(timm, name, depth=12 if layer_decay else 2)
    kw = dict(opt="adamw", lr=1e-3, weight_decay=0.05, layer_decay=layer_decay)
    ours, theirs = _groups(create_optimizer_v2(fv, **kw), fv), _groups(create_optimizer_v2(tm, **kw), tm)
    assert ours == theirs
    if layer_decay:
        assert len(ours) == 28  # stem + 12 blocks + the head, each with and without decay


@pytest.mark.parametrize("name", PAIRS)
def test_feature_getter_and_hooks(timm, name):
    from timm.models._features import FeatureGetterNet

    tm, fv = pair(timm, name, depth=4)
    x = image(64, 64, batch=1)
    for out_indices, norm in ((3, False), ((0, 2), True), ([-1], False)):
        ours = FeatureGetterNet(copy.deepcopy(fv), out_indices=out_indices, norm=norm)
        theirs = FeatureGetterNet(copy.deepcopy(tm), out_indices=out_indices, norm=norm)
        assert ours.out_indices == theirs.out_indices
        assert ours.feature_info.channels() == theirs.feature_info.channels()
        assert ours.feature_info.reduction() == theirs.feature_info.reduction()
        with torch.no_grad():
            assert_rel(ours(x), theirs(x), what=f"FeatureGetterNet {out_indices}")
    # timm.create_model(features_only=True) wraps timm's own ViT in the same getter; its outputs are ours
    fo = timm.create_model(name, pretrained=False, depth=4, img_size=64, features_only=True, out_indices=(1, 3)).eval()
    kept = fo.model.state_dict().keys()  # timm pruned the blocks after 3, the norm and the head
    fo.model.load_state_dict({k: v for k, v in tm.state_dict().items() if k in kept})
    with torch.no_grad():
        assert_rel(FeatureGetterNet(copy.deepcopy(fv), out_indices=(1, 3))(x), fo(x), what="features_only")


INDICES = [None, 1, 3, [0, -1], [2, 0, 2], (1,), [-4]]


@pytest.mark.parametrize("name", PAIRS)
def test_forward_intermediates_every_option(timm, name):
    tm, fv = pair(timm, name, depth=4)
    x = image(64, 64, batch=1)
    with torch.no_grad():
        for indices in INDICES:
            for kw in (dict(), dict(norm=True, return_prefix_tokens=True), dict(output_fmt="NLC", intermediates_only=True),
                       dict(stop_early=True, intermediates_only=True, return_prefix_tokens=True),
                       dict(output_dict=True, return_prefix_tokens=True), dict(output_dict=True, intermediates_only=True),
                       dict(stop_early=True)):
                ours, theirs = fv.forward_intermediates(x, indices, **kw), tm.forward_intermediates(x, indices, **kw)
                assert_rel(ours, theirs, what=f"indices={indices} {kw}")
        # positional order is timm's: (x, indices, return_prefix_tokens, norm, stop_early, output_fmt, intermediates_only)
        assert_rel(fv.forward_intermediates(x, [1], True, True, True, "NLC", True),
                   tm.forward_intermediates(x, [1], True, True, True, "NLC", True), what="positional")
        assert_rel(fv.get_intermediate_layers(x, 2, reshape=True), tm.get_intermediate_layers(x, 2, reshape=True))
    for bad in ([], [4], [-5], 0, 5):
        with pytest.raises(ValueError):
            fv.forward_intermediates(x, bad)
        with pytest.raises(Exception):  # timm refuses them too (AssertionError / ValueError)
            tm.forward_intermediates(x, bad)
    with pytest.raises(ValueError, match="output_fmt"):
        fv.forward_intermediates(x, 1, output_fmt="NHWC")


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("indices,prune_norm,prune_head", [(1, False, True), ([0, 2], True, True), ((-2,), False, False)])
def test_prune_intermediate_layers(timm, name, indices, prune_norm, prune_head):
    tm, fv = pair(timm, name, depth=4)
    assert fv.prune_intermediate_layers(indices, prune_norm, prune_head) == tm.prune_intermediate_layers(indices, prune_norm, prune_head)
    assert len(fv.blocks) == len(tm.blocks) and fv.state_dict().keys() == tm.state_dict().keys()
    x = image(64, 64, batch=1)
    with torch.no_grad():
        assert_rel(fv(x), tm(x), what="pruned forward")
        take = list(range(len(tm.blocks)))
        assert_rel(fv.forward_intermediates(x, take), tm.forward_intermediates(x, take), what="pruned intermediates")


@pytest.mark.parametrize("pool", ["", "max", "avgmax", "avg", "token"])
@pytest.mark.parametrize("num_classes", [0, 7])
def test_reset_classifier_like_timm(timm, pool, num_classes):
    tm, fv = pair(timm, depth=2)
    tm.reset_classifier(num_classes, pool)
    fv.reset_classifier(num_classes, pool)
    assert (fv.num_classes, fv.global_pool) == (tm.num_classes, tm.global_pool)
    if num_classes:
        fv.head.load_state_dict(tm.head.state_dict())
    x = image(64, 64, batch=2)
    with torch.no_grad():
        assert_rel(fv(x), tm(x), what=f"reset_classifier({num_classes}, {pool!r})")
        assert_rel(fv.pool(fv.forward_features(x), "max"), tm.pool(tm.forward_features(x), "max"))
    with pytest.raises(ValueError, match="global_pool"):
        fv.reset_classifier(3, "map")


def test_distilled_head_like_timm(timm):
    tm, fv = pair(timm, "deit_tiny_distilled_patch16_224", depth=2)
    x = image(64, 64, batch=2)
    with torch.no_grad():
        feats = tm.forward_features(x)
        for training in (False, True):
            for distilled_training in (False, True):
                tm.train(training), fv.train(training)
                tm.set_distilled_training(distilled_training), fv.set_distilled_training(distilled_training)
                assert_rel(fv.forward_head(feats), tm.forward_head(feats), what=f"train={training} dt={distilled_training}")
                assert_rel(fv.forward_head(feats, pre_logits=True), tm.forward_head(feats, pre_logits=True))
    tm.reset_classifier(4), fv.reset_classifier(4)
    assert [h.out_features for h in fv.get_classifier()] == [h.out_features for h in tm.get_classifier()] == [4, 4]


def test_from_timm_refuses_what_it_cannot_compute(timm):
    from timm.models.vision_transformer import VisionTransformer

    # timm's other blocks, bias-free projections and pool_include_prefix convert since issue 22
    # (tests/interop/test_timm_arch.py); what still has no fastvit equivalent:
    base = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    cases = {"mlp.act": dict(act_layer="relu"), "no position": dict(pos_embed="none"),
             "one scale norm without the other": dict(scale_attn_norm=True),
             "SiLU exactly with the SwiGLU": dict(act_layer="gelu", mlp_layer=timm.layers.SwiGLUPacked, mlp_ratio=2.0)}
    for needle, kw in cases.items():
        with pytest.raises(ValueError, match="cannot convert timm") as info:
            fastvit.from_timm(VisionTransformer(**{**base, **kw}))
        assert needle.lower() in str(info.value).lower(), (needle, str(info.value))
    # what it can: every timm pooling, fc_norm on a class token; with the issue-14 options also
    # no_embed_class, LayerScale, registers, qk-norm, attention pool, pre-norm, no final norm, the activations
    can = [dict(global_pool="max", class_token=False), dict(global_pool="avgmax"), dict(global_pool=""),
           dict(fc_norm=True), dict(global_pool="avg")]
    if "reg_tokens" in {f.name for f in dataclasses.fields(fastvit.ViTConfig)}:
        can += [dict(no_embed_class=True), dict(init_values=0.1), dict(reg_tokens=2), dict(qk_norm=True),
                dict(global_pool="map"), dict(global_pool="map", class_token=False), dict(pre_norm=True),
                dict(final_norm=False), dict(act_layer="quick_gelu"), dict(act_layer="gelu_tanh"),
                dict(act_layer="silu", mlp_layer=timm.layers.SwiGLUPacked, mlp_ratio=2.0), dict(dynamic_img_pad=True)]
    for kw in can:
        tm = perturb(VisionTransformer(**{**base, **kw})).eval()
        with torch.no_grad():
            assert_rel(fastvit.from_timm(tm)(image(32, 32)), tm(image(32, 32)), what=str(kw))
