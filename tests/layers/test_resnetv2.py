"""The hybrid stem without timm: weight standardisation, SAME padding, layout, token grid, analyses on a hybrid."""

import math

import pytest
import torch
import torch.nn.functional as F

import fastvit
from fastvit.analysis import attention_maps, mean_attention_distance, patch_embed_components
from fastvit.layers.resnetv2 import HybridEmbed, StdConv2d, backbone_stride, resnetv2_num_params, same_pad


def test_std_conv_standardises_each_filter():
    torch.manual_seed(0)
    conv = StdConv2d(3, 5, 3)
    with torch.no_grad():
        conv.weight.mul_(7).add_(2)
    w = conv.standardized_weight().double().reshape(5, -1)
    torch.testing.assert_close(w.mean(1), torch.zeros(5, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(w.var(1, unbiased=False), torch.ones(5, dtype=torch.float64), atol=1e-5, rtol=0)
    x = torch.randn(1, 3, 6, 6)
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1)), w.float().reshape(5, 3, 3, 3))
    torch.testing.assert_close(conv(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n, k, s, expected", [(224, 7, 2, (2, 3)), (7, 3, 2, (1, 1)), (8, 3, 2, (0, 1)), (9, 1, 2, (0, 0)), (5, 3, 1, (1, 1))])
def test_same_padding_is_tensorflows(n, k, s, expected):
    # TF SAME: output ceil(n / s); total pad = max((out - 1) * s + k - n, 0), the odd pixel after
    x = torch.ones(1, 1, n, n)
    y = same_pad(x, k, s, value=-1.0)
    before, after = expected
    assert y.shape[-1] == n + before + after
    assert (y[0, 0, 0, :] == -1).all() == bool(before) and (y[0, 0, -1, :] == -1).all() == bool(after)
    assert F.max_pool2d(y, k, s).shape[-1] == math.ceil(n / s)


def test_hybrid_layout_stride_and_count():
    embed = HybridEmbed((2, 1), in_chans=3, embed_dim=40)
    assert embed.stride == backbone_stride((2, 1)) == 8
    assert embed.backbone.stages[0].blocks[0].downsample is not None and embed.backbone.stages[0].blocks[1].downsample is None
    assert sum(p.numel() for p in embed.backbone.parameters()) == resnetv2_num_params((2, 1))
    assert embed(torch.randn(2, 3, 40, 24)).shape == (2, 5 * 3, 40)
    # () is valid since timm's vit_tiny_r_s16_p8 (the stem alone, stride 4): tests/test_presets_timm.py
    for bad in ((1, 0), (1, 1, 1, 1, 1), (1.5,)):
        with pytest.raises(ValueError, match="hybrid_layers"):
            backbone_stride(bad)


def tiny_hybrid(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, hybrid_layers=(1, 1), attn_impl="eager")
    cfg.update(kw)
    torch.manual_seed(0)
    return fastvit.VisionTransformer(fastvit.ViTConfig(**cfg)).eval()


def test_hybrid_model_grid_resolution_and_intermediates():
    model = tiny_hybrid(dynamic_img_size=True)
    assert model.cfg.grid_size == (4, 4) and model.cfg.num_tokens == 17
    assert sum(p.numel() for p in model.parameters()) == model.cfg.num_params()
    x = torch.randn(1, 3, 48, 40)
    final, maps = model.forward_intermediates(x, indices=1)
    assert final.shape == (1, 1 + 6 * 5, 32) and maps[0].shape == (1, 32, 6, 5)
    model.set_img_size(48)
    assert model.pos_embed.shape == (1, 37, 32) and model(torch.randn(1, 3, 48, 48)).shape == (1, 1000)
    with pytest.raises(ValueError, match="stride"):
        fastvit.ViTConfig(patch_size=16, hybrid_layers=(2, 2, 2, 2))


def test_analyses_on_a_hybrid_use_the_backbone_stride():
    model = tiny_hybrid()
    d = model.cfg.embed_dim
    with torch.no_grad():
        for block in model.blocks:  # uniform attention
            block.attn.qkv.weight[: 2 * d].zero_()
            block.attn.qkv.bias[: 2 * d].zero_()
    x = torch.randn(1, 3, 32, 32)
    assert attention_maps(model, x)[0].shape == (1, 2, 17, 17)
    pts = [((r + 0.5) * 8, (c + 0.5) * 8) for r in range(4) for c in range(4)]
    expected = sum(math.dist(a, b) for a in pts for b in pts) / 256
    torch.testing.assert_close(mean_attention_distance(model, x), torch.full((2, 2), expected), atol=1e-4, rtol=1e-6)
    with pytest.raises(ValueError, match="hybrid"):
        patch_embed_components(model)


def test_hybrid_presets_build_with_timm_counts():
    # the counts timm 1.0.29 reports (tests/interop checks them against timm itself)
    counts = {"vit_small_r26_s32_224": 36_431_912, "vit_base_r50_s16_384": 98_950_952, "vit_large_r50_s32_384": 329_092_136}
    for name, n in counts.items():
        with torch.device("meta"):
            model = fastvit.create_model(name)
        assert sum(p.numel() for p in model.parameters()) == n == model.cfg.num_params()


def test_hybrid_refuses_layouts_without_a_backbone():
    from fastvit.checkpoints.torchvision import to_torchvision_state_dict

    model = tiny_hybrid()
    with pytest.raises(ValueError, match="hybrid"):
        fastvit.to_hf_state_dict(model)
    with pytest.raises(ValueError, match="hybrid"):
        to_torchvision_state_dict(model)
    sd = fastvit.to_timm_state_dict(model)  # timm's names: a round trip through a file layout
    assert any(k.startswith("patch_embed.backbone.stages.1.blocks.0.downsample") for k in sd)
    fresh = tiny_hybrid()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    fastvit.load_checkpoint(fresh, sd)  # detected as timm's layout, checked key by key
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)
