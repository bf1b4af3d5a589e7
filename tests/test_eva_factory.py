"""timm's eva-module family through fastvit's own front door: create_model, list_models, from_timm."""

import pytest
import torch

import fastvit
from fastvit.eva import Eva
from fastvit.presets_eva import EVA_PRESETS


def test_list_models_has_both_families():
    names = fastvit.list_models()
    assert "vit_base_patch16_224" in names and "vit_base_patch16_dinov3" in names
    assert set(EVA_PRESETS) <= set(names)
    assert fastvit.list_models("eva02_*") == sorted(n for n in EVA_PRESETS if n.startswith("eva02_"))


def test_create_model_builds_eva_with_overrides():
    model = fastvit.create_model("vit_small_patch16_dinov3", depth=2, num_classes=7).eval()
    assert isinstance(model, Eva) and len(model.blocks) == 2
    size = model.pretrained_cfg["input_size"][-2:]
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 7)
    assert model.pretrained_cfg["architecture"].startswith("vit_small_patch16_dinov3")


def test_create_model_eva_features_only():
    feats = fastvit.create_model("vit_small_patch16_rope_224", depth=3, features_only=True, out_indices=2)
    maps = feats(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape) for m in maps] == [(1, 384, 14, 14)] * 2
    assert feats.feature_info.channels() == [384, 384]


def test_create_model_eva_state_dict_file(tmp_path):
    src = fastvit.create_model("vit_small_patch16_rope_224", depth=2).eval()
    torch.save(src.state_dict(), tmp_path / "w.pth")
    dst = fastvit.create_model("vit_small_patch16_rope_224", depth=2, pretrained=tmp_path / "w.pth").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_every_listed_name_has_a_config():
    """fastvit.get_config answers for every name fastvit.list_models gives (both families)."""
    from fastvit.eva import EvaConfig

    for name in ("vit_base_patch16_224", "vit_7b_patch16_dinov3", "eva02_base_patch14_224"):
        assert name in fastvit.list_models()
    assert isinstance(fastvit.get_config("vit_7b_patch16_dinov3"), EvaConfig)
    assert isinstance(fastvit.get_config("vit_base_patch16_224"), fastvit.ViTConfig)
    assert fastvit.get_config("vit_small_patch16_dinov3", depth=3).depth == 3
