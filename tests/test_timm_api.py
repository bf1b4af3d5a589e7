"""timm's API on fastvit without timm installed (the interop run compares with real timm)."""

import pytest
import torch

import fastvit
from fastvit.features import feature_take_indices
from fastvit.layers import resample_options, resample_pos_embed


def tiny(**kw):
    return fastvit.create_model("vit_tiny_patch16_224", **{"depth": 3, "img_size": 64, **kw}).eval()


@pytest.mark.parametrize("indices,expected", [(None, [0, 1, 2]), (2, [1, 2]), ([2, 0, 2], [2, 0, 2]), ((-1,), [2])])
def test_feature_take_indices(indices, expected):
    assert feature_take_indices(3, indices) == (expected, max(expected))


@pytest.mark.parametrize("bad", [[], [3], [-4], 0, 4])
def test_bad_indices_raise_value_error(bad):
    model = tiny()
    with pytest.raises(ValueError, match="indices|index"):
        model.forward_intermediates(torch.randn(1, 3, 64, 64), bad)
    with pytest.raises(ValueError):
        model.prune_intermediate_layers(bad)
    assert len(model.blocks) == 3  # a refused prune changes nothing


def test_intermediates_in_block_order_once_each():
    model = tiny()
    x = torch.randn(1, 3, 64, 64)
    got = model.forward_intermediates(x, [2, 0, 2], output_fmt="NLC", intermediates_only=True)
    y, _ = model._embed(x)
    outs = []
    for block in model.blocks:
        y = block(y)
        outs.append(y[:, 1:])
    assert len(got) == 2
    torch.testing.assert_close(got[0], outs[0])
    torch.testing.assert_close(got[1], outs[2])
    d = model.forward_intermediates(x, 1, output_dict=True, return_prefix_tokens=True)
    assert set(d) == {"image_intermediates", "image_intermediates_prefix", "image_features"}


def test_prune_keeps_what_was_asked():
    model = tiny()
    assert model.prune_intermediate_layers([0, -2]) == [0, 1]
    assert len(model.blocks) == 2 and model.cfg.depth == 2 and model.num_classes == 0 and model.global_pool == ""
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1 + 16, 192)  # no pooling, no head


@pytest.mark.parametrize("pool", ["", "max", "avgmax", "avg", "token"])
def test_reset_classifier_pools_keep_the_norms(pool):
    model = tiny()
    x = torch.randn(2, 3, 64, 64)
    tokens = model.forward_features(x)
    model.reset_classifier(0, pool)
    assert model.global_pool == pool and model.cfg.use_fc_norm is False  # the final norm did not move
    patches = tokens[:, 1:]
    expected = {"": tokens, "token": tokens[:, 0], "avg": patches.mean(1), "max": patches.amax(1),
                "avgmax": 0.5 * (patches.mean(1) + patches.amax(1))}[pool]
    torch.testing.assert_close(model(x), expected)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "map")


def test_attributes_follow_the_config():
    model = tiny(num_classes=7)
    assert (model.num_classes, model.embed_dim, model.head_hidden_size, model.has_class_token) == (7, 192, 192, True)
    pe = model.patch_embed
    assert (pe.patch_size, pe.img_size, pe.grid_size, pe.num_patches) == ((16, 16), (64, 64), (4, 4), 16)
    model.set_input_size((96, 64))
    assert (pe.img_size, pe.grid_size, pe.num_patches) == ((96, 64), (6, 4), 24)
    with pytest.raises(ValueError, match="patch_size"):
        model.set_input_size(patch_size=8)
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and model.default_cfg is model.pretrained_cfg
    assert fastvit.create_model("deit_tiny_patch16_224", depth=1).pretrained_cfg["std"] == (0.229, 0.224, 0.225)
    assert len(model.feature_info) == 3 and model.feature_info[0] == dict(module="blocks.0", num_chs=192, reduction=16)


@pytest.mark.parametrize("convention", ["timm", "hf", "torchvision"])
def test_dynamic_and_set_input_size_resample_by_convention(convention):
    model = tiny(dynamic_img_size=True, pos_embed_resample=convention)
    x = torch.randn(1, 3, 48, 80)
    pos = resample_pos_embed(model.pos_embed, (3, 5), (4, 4), 1, **resample_options(convention))
    embedded, _ = model._embed(x)
    torch.testing.assert_close(embedded, torch.cat([model.cls_token, model.patch_embed(x)], 1) + pos)
    model.set_input_size((48, 80))
    torch.testing.assert_close(model.pos_embed, pos)


def test_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="pos_embed_resample"):
        fastvit.ViTConfig(pos_embed_resample="nearest")
