"""fastvit.save_pretrained on the eva family, read by real timm 1.0.29: ``timm.create_model("local-dir:...")``
builds timm's ``Eva`` from fastvit's config.json and model.safetensors with the same logits, and fastvit
reads the folder back to the same model. Plus ``fastvit bench`` with the timm variant on the two eva
presets it names (tiny sizes). Small random models (perturbed so no weight is at its init)."""

import json

import pytest
import torch

import fastvit
from interop_helpers import assert_rel, image, perturb

TINY = dict(embed_dim=64, num_heads=2, depth=2)
CASES = [  # name, overrides: EVA-02 (cat RoPE, SwiGLU, q/v bias), DINOv3 (registers, half RoPE, LayerScale),
    # RoPE-Mixed (learned frequencies), PE core (attention pool, no class token), and a changed option
    ("eva02_tiny_patch14_224", dict(img_size=56, num_classes=7)),
    ("vit_small_patch16_dinov3", dict(img_size=64, num_classes=3)),
    ("vit_small_patch16_rope_mixed_224", dict(img_size=48, num_classes=4)),
    ("vit_pe_core_tiny_patch16_384", dict(img_size=64)),
    ("vit_base_patch16_dinov3", dict(img_size=48, num_classes=0, rope_temperature=50.0, global_pool="token")),
]


@pytest.mark.parametrize("name, overrides", CASES, ids=[c[0] for c in CASES])
def test_timm_reads_fastvit_eva_folders(timm, tmp_path, name, overrides):
    torch.manual_seed(0)
    model = perturb(fastvit.create_model(name, **TINY, **overrides)).eval()
    folder = fastvit.save_pretrained(model, tmp_path / name)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == name and "fastvit_args" not in config
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert type(theirs).__name__ == "Eva"
    ours = fastvit.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = image(*model.cfg.img_size)
    with torch.no_grad():
        want = model(x)
        assert_rel(theirs(x), want, what=f"timm from fastvit's {name} folder")
        assert torch.equal(ours(x), want)
    assert ours.cfg == model.cfg.replace(attn_impl=ours.cfg.attn_impl)
    # and timm's own save of the model it read (its keywords passed, as timm's save needs) reads back the same
    from timm.models._hub import save_for_hf

    save_for_hf(theirs, tmp_path / "timm", model_args=config.get("model_args"), safe_serialization=True)
    again = fastvit.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(again(x), want)


@pytest.mark.parametrize("model", ["vit_base_patch16_dinov3", "eva02_base_patch14_224"])
def test_fastvit_bench_times_timms_eva_beside_fastvits(timm, tmp_path, monkeypatch, model):
    from test_eva_bench import run_cli_tiny  # the CPU test's tiny command line (tests/ is on the path)

    code, records = run_cli_tiny(monkeypatch, tmp_path / "bench.json", model, "sdpa,timm")
    assert code == 0
    sdpa, theirs = records
    assert (sdpa["status"], theirs["status"]) == ("ok", "ok"), theirs["reason"]
    assert theirs["variant"] == "timm" and theirs["max_rel_err"] < 1e-5  # the same weights in timm's model
