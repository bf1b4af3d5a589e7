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
