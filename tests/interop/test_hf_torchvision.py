"""fastvit against real transformers and torchvision: in-memory conversions, checkpoint files and
save_pretrained directories (whose config.json is honoured), other image sizes, strict exports."""

import copy

import pytest
import torch

import fastvit
from fastvit.checkpoints import to_hf_config, to_torchvision_state_dict
from interop_helpers import assert_rel, image, perturb

HF_SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                image_size=64, patch_size=16, num_labels=5)


def hf_model(transformers, cls_name="ViTForImageClassification", seed=0, **kw):
    torch.manual_seed(seed)
    cls = getattr(transformers, cls_name)
    config_cls = transformers.DeiTConfig if cls_name.startswith("DeiT") else transformers.ViTConfig
    return perturb(cls(config_cls(**{**HF_SMALL, **kw})), seed).eval()


def hf_out(model, x, **kw):
    out = model(pixel_values=x, **kw)
    return out.logits if hasattr(out, "logits") else out.pooler_output


HF_CLASSES = ["ViTForImageClassification", "ViTModel", "DeiTForImageClassificationWithTeacher"]


@pytest.mark.parametrize("cls_name", HF_CLASSES)
def test_from_hf_native_and_other_size(transformers, cls_name):
    hf = hf_model(transformers, cls_name)
    fv = fastvit.from_hf(hf, dynamic_img_size=True)
    assert fv.cfg.pos_embed_resample == "hf" and fv.cfg.norm_eps == hf.config.layer_norm_eps
    with torch.no_grad():
        for size in ((64, 64), (48, 80), (96, 96)):
            x = image(*size)
            kw = {} if size == (64, 64) else dict(interpolate_pos_encoding=True)
            assert_rel(fastvit_out(fv, x), hf_out(hf, x, **kw), what=f"{cls_name} at {size}")
        x = image(64, 64)
        base = getattr(hf, "vit", None) or getattr(hf, "deit", None) or hf
        assert_rel(fv.forward_features(x), base(pixel_values=x).last_hidden_state, what="last_hidden_state")


def fastvit_out(model, x):
    return model(x)


@pytest.mark.parametrize("cls_name", HF_CLASSES)
def test_save_pretrained_dir_and_file_honour_config(transformers, tmp_path, cls_name):
    """The issue's bug: create_model(pretrained=<HF dir or .safetensors>) took the preset's eps (1e-6)."""
    hf = hf_model(transformers, cls_name, seed=2, hidden_size=192, num_attention_heads=3, intermediate_size=768,
                  image_size=224, num_labels=1000)
    hf.save_pretrained(tmp_path)
    name = "deit_tiny_distilled_patch16_224" if cls_name.startswith("DeiT") else "vit_tiny_patch16_224"
    kw = dict(num_classes=0, representation_size=192) if cls_name == "ViTModel" else {}
    x = image(224, 224, batch=1)
    for source in (tmp_path, tmp_path / "model.safetensors"):
        model = fastvit.create_model(name, pretrained=str(source), depth=2, **kw).eval()
        assert model.cfg.norm_eps == 1e-12 and model.cfg.pos_embed_resample == "hf"
        with torch.no_grad():
            assert_rel(model(x), hf_out(hf, x), what=f"create_model(pretrained={source.name})")
    # an existing model takes the file's eps; at 384 the embedding is resampled as interpolate_pos_encoding
    model = fastvit.load_checkpoint(fastvit.create_model(name, depth=2, img_size=384, **kw).eval(), tmp_path)
    assert model.cfg.norm_eps == 1e-12 and all(m.eps == 1e-12 for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    with torch.no_grad():
        x = image(384, 384, batch=1)
        assert_rel(model(x), hf_out(hf, x, interpolate_pos_encoding=True), what="HF 224 weights at 384")
    # a head count the config contradicts is refused before anything is written
    wrong = fastvit.create_model(name, depth=2, num_heads=6, **kw)
    before = {k: v.clone() for k, v in wrong.state_dict().items()}
    with pytest.raises(ValueError, match="num_heads"):
        fastvit.load_checkpoint(wrong, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in wrong.state_dict().items())


def test_hf_config_refusals(transformers, tmp_path):
    hf = hf_model(transformers, hidden_act="gelu_new")
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="hidden_act"):
        fastvit.create_model("vit_tiny_patch16_224", pretrained=str(tmp_path))
    with pytest.raises(ValueError, match="hidden_act"):
        fastvit.from_hf(hf)


@pytest.mark.parametrize("cls_name", HF_CLASSES)
def test_hf_export_loads_back_strictly(transformers, cls_name):
    hf = hf_model(transformers, cls_name, seed=4)
    fv = fastvit.from_hf(hf)
    back = hf_model(transformers, cls_name, seed=9)
    back.load_state_dict(fastvit.to_hf_state_dict(fv), strict=True)
    config = getattr(transformers, "DeiTConfig" if cls_name.startswith("DeiT") else "ViTConfig")(**to_hf_config(fv))
    assert config.layer_norm_eps == hf.config.layer_norm_eps and config.num_attention_heads == hf.config.num_attention_heads
    x = image(64, 64)
    with torch.no_grad():
        assert_rel(hf_out(back, x), hf_out(hf, x), what="HF -> fastvit -> HF")


def tv_model(torchvision, seed=0, image_size=64, **kw):
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    args = dict(image_size=image_size, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=256, num_classes=5)
    return perturb(VisionTransformer(**{**args, **kw}), seed).eval()


def test_torchvision_vit_b_16(torchvision, tmp_path):
    """The real torchvision preset (ViT-B/16), in memory, through a .pth file, and exported back."""
    torch.manual_seed(0)
    tv = perturb(torchvision.models.vit_b_16(), 0).eval()
    x = image(224, 224, batch=1)
    fv = fastvit.from_torchvision(tv)
    with torch.no_grad():
        ref = tv(x)
        assert_rel(fv(x), ref, what="from_torchvision vit_b_16")
        torch.save(tv.state_dict(), tmp_path / "vit_b_16.pth")
        loaded = fastvit.create_model("vit_base_patch16_224", pretrained=str(tmp_path / "vit_b_16.pth")).eval()
        assert_rel(loaded(x), ref, what="vit_b_16.pth")
        back = perturb(copy.deepcopy(tv), seed=1)  # other weights, same architecture
        back.load_state_dict(to_torchvision_state_dict(fv), strict=True)
        assert_rel(back(x), ref, what="exported to torchvision")


def test_torchvision_other_size_like_interpolate_embeddings(torchvision, tmp_path):
    from torchvision.models.vision_transformer import interpolate_embeddings

    tv = tv_model(torchvision, seed=3)
    torch.save(tv.state_dict(), tmp_path / "tv64.pth")
    ref = tv_model(torchvision, seed=5, image_size=96)
    ref.load_state_dict(interpolate_embeddings(96, 16, tv.state_dict()))
    model = fastvit.VisionTransformer(fastvit.ViTConfig(img_size=96, patch_size=16, depth=2, num_heads=4, embed_dim=64,
                                                        num_classes=5)).eval()
    fastvit.load_checkpoint(model, tmp_path / "tv64.pth")
    assert model.cfg.pos_embed_resample == "torchvision"
    with torch.no_grad():
        assert_rel(model(image(96, 96)), ref(image(96, 96)), what="torchvision 64 -> 96")
        fv = fastvit.from_torchvision(tv)
        fv.set_input_size(96)
        assert_rel(fv(image(96, 96)), ref(image(96, 96)), what="from_torchvision + set_input_size(96)")
