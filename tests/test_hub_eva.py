"""timm's eva-module family (EVA-02, DINOv3, PE, RoPE-ViT) through create_model's Hub contract, offline:
its tags and pretrained_cfg from the table generated from timm, weights from a Hub cache built here in
huggingface_hub's layout (timm's folder format: config.json + model.safetensors), a head override."""

from __future__ import annotations

import json

import pytest
import torch

import fastvit
from fastvit.checkpoints.pretrained_cfgs import UnknownModelError
from hub_layout import add_repo, use_cache

TINY = dict(depth=1, embed_dim=64, num_heads=2)
NAME = "vit_small_patch16_dinov3.lvd1689m"


def _cache(tmp_path, monkeypatch, name=NAME, **kw):
    pytest.importorskip("huggingface_hub")
    safetensors = pytest.importorskip("safetensors.torch")
    arch = name.partition(".")[0]
    src = fastvit.create_model(arch, **{**TINY, **kw}).eval()
    folder = tmp_path / "src"
    folder.mkdir()
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fastvit.create_model(name).pretrained_cfg.items()
           if k not in ("architecture", "hf_hub_id", "source")}
    (folder / "config.json").write_text(json.dumps({"architecture": arch, "num_classes": src.num_classes,
                                                    "pretrained_cfg": cfg}))
    safetensors.save_file({k: v.contiguous() for k, v in src.state_dict().items()}, folder / "model.safetensors")
    cache = tmp_path / "hub"
    add_repo(cache, f"timm/{name}", {f: folder / f for f in ("config.json", "model.safetensors")})
    use_cache(monkeypatch, cache)
    return src


def test_eva_tags_are_timms():
    tags = [n for n in fastvit.list_pretrained("vit_small_patch16_dinov3*")]
    assert "vit_small_patch16_dinov3.lvd1689m" in tags
    model = fastvit.create_model(NAME, **TINY)
    cfg = model.pretrained_cfg
    assert cfg["tag"] == "lvd1689m" and cfg["hf_hub_id"] == f"timm/{NAME}" and cfg["architecture"] == "vit_small_patch16_dinov3"
    assert tuple(cfg["input_size"]) == (3, 256, 256) and model.num_classes == cfg["num_classes"]
    with pytest.raises(UnknownModelError, match="lvd1689m"):
        fastvit.create_model("vit_small_patch16_dinov3.nosuchtag")


def test_eva_name_tag_loads_from_the_hub_cache(tmp_path, monkeypatch):
    src = _cache(tmp_path, monkeypatch)
    got = fastvit.create_model(NAME, pretrained=True, **TINY).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(got.forward_features(x), src.forward_features(x), rtol=0, atol=0)
    default = fastvit.create_model("vit_small_patch16_dinov3", pretrained=True, **TINY)  # the default tag
    assert default.pretrained_cfg["tag"] == "lvd1689m"


def test_eva_head_override_keeps_the_backbone(tmp_path, monkeypatch):
    src = _cache(tmp_path, monkeypatch)
    got = fastvit.create_model(NAME, pretrained=True, num_classes=5, **TINY)
    assert got.head.out_features == 5
    want = src.state_dict()
    for k, v in got.state_dict().items():
        if not k.startswith("head."):
            torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=k)


def test_eva_offline_without_files_names_the_repo(tmp_path, monkeypatch):
    _cache(tmp_path, monkeypatch)
    with pytest.raises(OSError, match=r"timm/vit_base_patch16_dinov3\.lvd1689m.*offline"):
        fastvit.create_model("vit_base_patch16_dinov3.lvd1689m", pretrained=True, **TINY)


def test_eva_save_pretrained_round_trips(tmp_path):
    """save_pretrained writes timm's format for the eva family (timm reading it: tests/interop/test_timm_eva_save.py);
    fastvit reads the folder back to the same model. A name outside the family is refused, nothing written."""
    model = fastvit.create_model("vit_small_patch16_dinov3", num_classes=3, **TINY).eval()
    folder = fastvit.save_pretrained(model, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "vit_small_patch16_dinov3" and config["num_classes"] == 3
    back = fastvit.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert back.cfg == model.cfg
    x = torch.randn(1, 3, *model.cfg.img_size)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    with pytest.raises(ValueError, match="among the eva family"):
        fastvit.save_pretrained(model, tmp_path / "bad", architecture="vit_small_patch16_224")
    assert not (tmp_path / "bad").exists()
    from fastvit.checkpoints import hub_save

    with pytest.raises(TypeError, match="not a model of the ViT presets"):  # the writer asked for the wrong family
        hub_save.save_pretrained(model, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
