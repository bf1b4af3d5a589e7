"""A training run's folder and fastvit's Hugging Face export, read by the real libraries:
timm's ``create_model("local-dir:RUN")`` and transformers' Auto classes."""

import json
import warnings

import pytest
import torch

import fastvit
from interop_helpers import assert_rel, perturb

SIZES = dict(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2)
CLASSES = ["cat", "dog", "eel"]


def _run_folder(tmp_path):
    """What fastvit train writes at the end of a run, through the same writer functions."""
    from fastvit.train.checkpointing import save_weights
    from fastvit.train.run_folder import write_run_config

    overrides = {**SIZES, "num_classes": 3, "attn_impl": "sdpa"}
    model = perturb(fastvit.create_model("vit_tiny_patch16_224", **overrides), seed=3).eval()
    out = tmp_path / "run"
    out.mkdir()
    write_run_config(out, "vit_tiny_patch16_224", overrides, CLASSES, "supervised")
    save_weights(out / "model.safetensors", model.state_dict(), {"model": "vit_tiny_patch16_224"})
    return out, model


def test_timm_loads_a_run_folder_as_a_local_dir(timm, tmp_path):
    out, model = _run_folder(tmp_path)
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    cfg = theirs.pretrained_cfg
    assert list(cfg["input_size"]) == [3, 16, 16] and list(cfg["mean"]) == [0.5] * 3 and cfg["crop_mode"] == "squash"
    assert cfg["label_names"] == CLASSES and theirs.num_classes == 3
    data = timm.data.resolve_data_config({}, model=theirs)
    assert tuple(data["input_size"]) == (3, 16, 16) and tuple(data["mean"]) == (0.5, 0.5, 0.5)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert_rel(theirs(x), model(x), what="timm local-dir vs fastvit")


def _auto_load(transformers, cls, folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hf = getattr(transformers, cls).from_pretrained(str(folder)).eval()
    dropped = [str(w.message) for w in caught if "newly initialized" in str(w.message) or "not used" in str(w.message)]
    assert not dropped, dropped
    return hf


def test_auto_model_for_image_classification_loads_save_hf(transformers, tmp_path):
    from fastvit.checkpoints.huggingface import save_hf

    out, _ = _run_folder(tmp_path)
    model = fastvit.train.load_run(out).eval()  # label names come with the run
    folder = save_hf(model, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "vit" and config["num_labels"] == 3
    hf = _auto_load(transformers, "AutoModelForImageClassification", folder)
    assert type(hf).__name__ == "ViTForImageClassification"
    assert hf.config.id2label == dict(enumerate(CLASSES)) and hf.config.label2id == {n: i for i, n in enumerate(CLASSES)}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert_rel(hf(pixel_values=x).logits, model(x), what="AutoModelForImageClassification vs fastvit")


def test_auto_model_loads_a_headless_export(transformers, tmp_path):
    from fastvit.checkpoints.huggingface import save_hf

    model = perturb(fastvit.create_model("vit_tiny_patch16_224", **SIZES, num_classes=0), seed=4).eval()
    folder = save_hf(model, tmp_path / "hf")
    hf = _auto_load(transformers, "AutoModel", folder)
    assert type(hf).__name__ == "ViTModel"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert_rel(hf(pixel_values=x).last_hidden_state, model.forward_features(x), what="AutoModel vs fastvit")


def test_labels_argument_and_errors(tmp_path):
    model = fastvit.create_model("vit_tiny_patch16_224", **SIZES, num_classes=3)
    assert fastvit.to_hf_config(model)["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    assert fastvit.to_hf_config(model, labels=CLASSES)["label2id"] == {"cat": 0, "dog": 1, "eel": 2}
    with pytest.raises(ValueError, match="3 classes, got 2"):
        fastvit.to_hf_config(model, labels=["a", "b"])


def test_hf_folder_with_10_labels_keeps_its_head(transformers, tmp_path):
    """Issue 24: create_model(pretrained=HF folder) read num_labels / id2label instead of dropping the head."""
    c = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                               image_size=16, patch_size=8, num_labels=10)
    torch.manual_seed(0)
    hf = perturb(transformers.ViTForImageClassification(c), seed=5).eval()
    hf.save_pretrained(str(tmp_path / "hf"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "head dropped" warning
        model = fastvit.create_model("vit_tiny_patch16_224", img_size=16, pretrained=str(tmp_path / "hf")).eval()
    assert model.cfg.num_classes == 10
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert_rel(model(x), hf(pixel_values=x).logits, what="fastvit from HF folder vs HF")
