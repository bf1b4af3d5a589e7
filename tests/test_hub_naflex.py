"""fastvit.save_pretrained / push_to_hub on the naflexvit family: timm's Hub format (config.json with the
architecture, timm's NaFlexVitCfg keywords and the pretrained_cfg; model.safetensors under timm's names),
read back by fastvit to the same model. (Real timm reading it: tests/interop/test_timm_naflex_save.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fastvit

TINY = dict(embed_dim=32, num_heads=2, depth=1, pos_embed_grid_size=(3, 3))


def _image(h, w):
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))


def test_naflex_save_pretrained_round_trips(tmp_path):
    model = fastvit.create_model("naflexvit_base_patch16_map", num_classes=5, pos_embed_interp_mode="bilinear",
                                 **TINY).eval()
    with torch.no_grad():
        for p in model.parameters():  # no weight at its init, so a dropped or swapped one shows
            p.add_(torch.randn_like(p) * 0.05)
    folder = fastvit.save_pretrained(model, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "naflexvit_base_patch16_map" and config["num_classes"] == 5
    assert config["global_pool"] == "map" and config["num_features"] == 32
    assert config["model_args"] == dict(embed_dim=32, num_heads=2, depth=1, pos_embed_grid_size=[3, 3],
                                        pos_embed_interp_mode="bilinear")
    assert config["pretrained_cfg"]["first_conv"] == "embeds.proj" and "hf_hub_id" not in config["pretrained_cfg"]
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    assert saved.keys() == model.state_dict().keys()  # timm's NaFlexVit names are fastvit's
    x = _image(48, 80)  # a grid other than the table's: the resize (bilinear) comes back too
    for back in (fastvit.create_model(f"local-dir:{folder}", pretrained=True),
                 fastvit.create_model("naflexvit_base_patch16_map", pretrained=folder)):
        back.eval()
        assert back.cfg == model.cfg
        with torch.no_grad():
            assert torch.equal(back(x), model(x))


def test_naflex_save_refuses_fields_timm_has_no_keyword_for(tmp_path):
    model = fastvit.create_model("naflexvit_base_patch16_gap", norm_eps=1e-5, **TINY)
    with pytest.raises(ValueError, match=r"\['norm_eps'\].*no keyword"):
        fastvit.save_pretrained(model, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="among the naflexvit family"):
        fastvit.save_pretrained(fastvit.create_model("naflexvit_base_patch16_gap", **TINY), tmp_path / "bad",
                                architecture="vit_small_patch16_224")
    assert not (tmp_path / "bad").exists()
    from fastvit.checkpoints import hub_save

    with pytest.raises(TypeError, match="not a model of the ViT presets"):
        hub_save.save_pretrained(model, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_naflex_push_to_hub_uploads_timms_format(monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    seen = {}

    class FakeApi:  # records what would be uploaded; nothing leaves the machine
        def __init__(self, token=None, **kw):
            pass

        def create_repo(self, repo_id, private=False, exist_ok=True):
            return type("Repo", (), {"repo_id": repo_id})()

        def file_exists(self, repo_id, filename, revision=None):
            return False

        def upload_folder(self, repo_id, folder_path, revision=None, create_pr=False, commit_message=""):
            folder = Path(folder_path)
            seen.update(files=sorted(p.name for p in folder.iterdir()),
                        config=json.loads((folder / "config.json").read_text()))
            return "done"

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    model = fastvit.create_model("naflexvit_base_patch16_gap", **TINY)
    assert fastvit.push_to_hub(model, "me/naflex") == "done"
    assert seen["files"] == ["README.md", "config.json", "model.safetensors", "pytorch_model.bin"]
    assert seen["config"]["architecture"] == "naflexvit_base_patch16_gap"


def test_naflex_avg_pool_without_prefix_tokens(tmp_path):
    """No class or register token with avg pooling (a converted SigLIP 2 model without its attention pool):
    the logits are the head over fc_norm of the patch tokens' mean."""
    model = fastvit.create_model("naflexvit_base_patch16_gap", reg_tokens=0, num_classes=3, **TINY).eval()
    assert model.num_prefix_tokens == 0
    x = _image(48, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        want = model.head(model.fc_norm(tokens.mean(1)))
        torch.testing.assert_close(model(x), want)
    folder = fastvit.save_pretrained(model, tmp_path / "noprefix")
    assert json.loads((folder / "config.json").read_text())["model_args"]["reg_tokens"] == 0


def test_naflex_without_a_name_saves_under_the_closest_preset(tmp_path):
    """A NaFlexVit built from a config (no timm name in its pretrained_cfg, as one converted from
    transformers): the preset differing in the fewest fields, model_args the rest."""
    from fastvit.naflex import NaFlexConfig, NaFlexVit

    model = NaFlexVit(NaFlexConfig(act_layer="gelu_tanh", global_pool="map", num_classes=0, **TINY)).eval()
    folder = fastvit.save_pretrained(model, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "naflexvit_base_patch16_siglip"
    assert config["model_args"] == dict(embed_dim=32, num_heads=2, depth=1, pos_embed_grid_size=[3, 3])
    back = fastvit.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert back.cfg == model.cfg
    x = _image(32, 64)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
