"""fastvit.save_pretrained on the naflexvit family, read by real timm 1.0.29: ``timm.create_model("local-dir:...")``
builds timm's ``NaFlexVit`` from fastvit's config.json and model.safetensors with the same logits (at the
position table's native size and at another one, so the table's resize is timm's), and fastvit reads the
folder back to the same model. Small random models (perturbed so no weight is at its init)."""

import json

import pytest
import torch

import fastvit
from interop_helpers import assert_rel, image, perturb

TINY = dict(embed_dim=64, num_heads=4, depth=2, pos_embed_grid_size=(4, 4))
CASES = [  # registers + avg pool + fc_norm; aspect-preserving factorized table; attention pool; class token and
    # a bilinear table resize (what a converted HF SigLIP 2 model uses), gelu_tanh
    ("naflexvit_base_patch16_gap", dict(num_classes=7)),
    ("naflexvit_base_patch16_parfac_gap", dict(num_classes=0)),
    ("naflexvit_so150m2_patch16_reg1_map", dict(num_classes=5, mlp_ratio=2.0)),
    ("naflexvit_base_patch16_siglip", dict(num_classes=3, class_token=True, global_pool="token",
                                           pos_embed_interp_mode="bilinear")),
]


@pytest.mark.parametrize("name, overrides", CASES, ids=[c[0] for c in CASES])
def test_timm_reads_fastvit_naflex_folders(timm, tmp_path, name, overrides):
    torch.manual_seed(0)
    model = perturb(fastvit.create_model(name, **TINY, **overrides)).eval()
    folder = fastvit.save_pretrained(model, tmp_path / name)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == name and "fastvit_args" not in config
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert type(theirs).__name__ == "NaFlexVit"
    assert {k: v.shape for k, v in theirs.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    ours = fastvit.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert ours.cfg == model.cfg
    for size in ((64, 64), (96, 48)):  # the table's native grid, then a resized one
        x = image(*size)
        with torch.no_grad():
            want = model(x)
            assert_rel(theirs(x), want, what=f"timm from fastvit's {name} folder at {size}")
            assert torch.equal(ours(x), want)


def test_timm_naflex_save_refuses_what_timm_cannot_build(timm, tmp_path):
    """A LayerNorm eps other than timm's 1e-6 has no NaFlexVitCfg field: refused by name, nothing written."""
    model = fastvit.create_model("naflexvit_base_patch16_gap", **TINY, norm_eps=1e-5)
    with pytest.raises(ValueError, match="norm_eps"):
        fastvit.save_pretrained(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not hasattr(timm.models.naflexvit.NaFlexVitCfg(), "norm_eps")  # still no such field in timm


@pytest.mark.parametrize("head", [True, False])
def test_timm_reads_a_converted_hf_siglip2_model_saved_by_fastvit(transformers, timm, tmp_path, head):
    """A transformers SigLIP 2 vision model converted by fastvit (no timm name, a bilinear table resize,
    with or without its attention pool) saves under the closest naflexvit name; timm's model computes the same."""
    from fastvit.checkpoints.hf_siglip2 import from_hf_siglip2

    config = transformers.Siglip2VisionConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                              num_attention_heads=2, patch_size=8, num_patches=16,
                                              vision_use_head=head)
    hf = perturb(transformers.Siglip2VisionModel(config), scale=0.1).eval()
    model = from_hf_siglip2(hf).eval()
    assert model.cfg.pos_embed_interp_mode == "bilinear"
    folder = fastvit.save_pretrained(model, tmp_path / "siglip2")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "naflexvit_base_patch16_siglip"
    assert config["model_args"]["pos_embed_interp_mode"] == "bilinear"
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    for size in ((32, 32), (48, 40), (16, 24)):  # the 4 x 4 table kept, resized up, resized down
        x = image(*size)
        with torch.no_grad():
            assert_rel(theirs(x), model(x), what=f"timm from a converted SigLIP 2 at {size}")
