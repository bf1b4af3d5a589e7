"""The issue-14 presets (DINOv2 +reg4, CLIP, SigLIP, DeiT III): timm's parameter counts and options.

The expected counts are timm 1.0.29's (``sum(p.numel())`` of ``timm.create_model(name)``, read
once in the interop environment; tests/interop/test_timm_modern.py recomputes them live).
"""

import dataclasses

import pytest
import torch

import fastvit

if "reg_tokens" not in {f.name for f in dataclasses.fields(fastvit.ViTConfig)}:
    pytest.skip("needs the issue-14 ViTConfig options", allow_module_level=True)

TIMM_PARAMS = {
    "vit_small_patch14_dinov2": 22_056_192,
    "vit_base_patch14_dinov2": 86_579_712,
    "vit_large_patch14_dinov2": 304_367_616,
    "vit_giant_patch14_dinov2": 1_136_479_232,
    "vit_small_patch14_reg4_dinov2": 22_057_344,
    "vit_base_patch14_reg4_dinov2": 86_582_016,
    "vit_large_patch14_reg4_dinov2": 304_370_688,
    "vit_giant_patch14_reg4_dinov2": 1_136_483_840,
    "vit_base_patch16_clip_224": 86_568_424,
    "vit_base_patch32_clip_224": 88_225_000,
    "vit_large_patch14_clip_224": 304_204_776,
    "vit_huge_patch14_clip_224": 632_047_080,
    "vit_base_patch16_clip_quickgelu_224": 86_193_152,
    "vit_base_patch16_siglip_224": 92_884_224,
    "vit_so400m_patch14_siglip_384": 428_225_600,
    "deit3_small_patch16_224": 22_059_496,
    "deit3_base_patch16_224": 86_585_320,
    "deit3_large_patch16_224": 304_374_760,
}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_parameter_count_is_timms(name):
    cfg = fastvit.get_config(name)
    assert cfg.num_params() == TIMM_PARAMS[name]
    with torch.device("meta"):  # the model itself, not only the closed form
        model = fastvit.VisionTransformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == TIMM_PARAMS[name]


def test_presets_listed():
    assert set(TIMM_PARAMS) <= set(fastvit.list_models())
    assert fastvit.list_models("*dinov2") == sorted(n for n in TIMM_PARAMS if n.endswith("dinov2"))


# what each family is, as timm builds it
@pytest.mark.parametrize("name,fields", [
    ("vit_base_patch14_dinov2", dict(init_values=1e-5, reg_tokens=0, no_embed_class=False, img_size=(518, 518), num_classes=0)),
    ("vit_large_patch14_reg4_dinov2", dict(init_values=1e-5, reg_tokens=4, no_embed_class=True, patch_size=14)),
    ("vit_giant_patch14_dinov2", dict(mlp_layer="swiglu", act_layer="silu", embed_dim=1536, depth=40, num_heads=24)),
    ("vit_huge_patch14_clip_224", dict(pre_norm=True, norm_eps=1e-5, act_layer="gelu", class_token=True, num_classes=1000)),
    ("vit_base_patch16_clip_quickgelu_224", dict(pre_norm=True, act_layer="quick_gelu", num_classes=512)),
    ("vit_so400m_patch14_siglip_384", dict(class_token=False, global_pool="map", embed_dim=1152, depth=27, norm_eps=1e-6)),
    ("deit3_base_patch16_224", dict(init_values=1e-6, no_embed_class=True, num_classes=1000)),
])
def test_preset_options(name, fields):
    cfg = fastvit.get_config(name)
    assert {k: getattr(cfg, k) for k in fields} == fields


@pytest.mark.parametrize("name,hidden,tokens,positions", [("vit_so400m_patch14_siglip_384", 4304, 729, 729),
                                                          ("vit_giant_patch14_dinov2", 8192, 1370, 1370),
                                                          ("vit_base_patch14_reg4_dinov2", 3072, 1374, 1369),
                                                          ("deit3_small_patch16_224", 1536, 197, 196)])
def test_preset_widths_and_tokens(name, hidden, tokens, positions):
    cfg = fastvit.get_config(name)
    assert cfg.mlp_hidden_dim == hidden and cfg.num_patches + cfg.num_prefix_tokens == tokens
    with torch.device("meta"):
        assert fastvit.VisionTransformer(cfg).pos_embed.shape[1] == positions


def test_pretrained_cfg_of_the_families():
    from fastvit.presets import pretrained_cfg_for

    def pc(name):
        return pretrained_cfg_for(name, fastvit.get_config(name))

    assert pc("vit_small_patch14_dinov2")["input_size"] == (3, 518, 518)
    assert pc("vit_small_patch14_dinov2")["mean"] == (0.485, 0.456, 0.406)
    assert pc("vit_base_patch16_clip_224")["mean"] == (0.48145466, 0.4578275, 0.40821073)
    assert pc("vit_base_patch16_clip_224")["crop_pct"] == 0.95
    assert pc("vit_so400m_patch14_siglip_384")["std"] == (0.5, 0.5, 0.5)
    assert pc("vit_base_patch16_clip_quickgelu_224")["num_classes"] == 512
    assert fastvit.create_model("deit3_small_patch16_224", depth=1).pretrained_cfg["tag"] == "fb_in1k"
