"""The issue-14 presets (DINOv2 +reg4, CLIP, SigLIP, DeiT III): timm's parameter counts, options
and pretrained_cfg.

The expected counts and cfgs are timm 1.0.29's (``sum(p.numel())`` and ``pretrained_cfg`` of
``timm.create_model(name)``, read once in the interop environment;
tests/interop/test_timm_modern.py recomputes them live).
"""

import dataclasses

import pytest
import torch

import fastvit

if "reg_tokens" not in {f.name for f in dataclasses.fields(fastvit.ViTConfig)}:
    pytest.skip("needs the issue-14 ViTConfig options", allow_module_level=True)

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OPENAI = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
# every timm 1.0.29 deit3_* / *_dinov2 / vit_*_clip_* / vit_*_siglip_* name fastvit expresses:
# (parameters, default tag, image size, crop_pct, crop_mode, mean/std, num_classes, license)
TIMM = {
    "deit3_base_patch16_224": (86_585_320, "fb_in1k", 224, 0.9, "center", IMAGENET, 1000, "apache-2.0"),
    "deit3_base_patch16_384": (86_877_160, "fb_in1k", 384, 1.0, "center", IMAGENET, 1000, "apache-2.0"),
    "deit3_huge_patch14_224": (632_126_440, "fb_in1k", 224, 0.9, "center", IMAGENET, 1000, "apache-2.0"),
    "deit3_large_patch16_224": (304_374_760, "fb_in1k", 224, 0.9, "center", IMAGENET, 1000, "apache-2.0"),
    "deit3_large_patch16_384": (304_763_880, "fb_in1k", 384, 1.0, "center", IMAGENET, 1000, "apache-2.0"),
    "deit3_medium_patch16_224": (38_849_512, "fb_in1k", 224, 0.9, "center", IMAGENET, 1000, "apache-2.0"),
    "deit3_small_patch16_224": (22_059_496, "fb_in1k", 224, 0.9, "center", IMAGENET, 1000, "apache-2.0"),
    "deit3_small_patch16_384": (22_205_416, "fb_in1k", 384, 1.0, "center", IMAGENET, 1000, "apache-2.0"),
    "vit_base_patch14_dinov2": (86_579_712, "lvd142m", 518, 1.0, "center", IMAGENET, 0, "apache-2.0"),
    "vit_base_patch14_reg4_dinov2": (86_582_016, "lvd142m", 518, 1.0, "center", IMAGENET, 0, "apache-2.0"),
    "vit_base_patch16_clip_224": (86_568_424, "laion2b_ft_in12k_in1k", 224, 0.95, "center", OPENAI, 1000, "apache-2.0"),
    "vit_base_patch16_clip_384": (86_860_264, "laion2b_ft_in12k_in1k", 384, 1.0, "squash", OPENAI, 1000, "apache-2.0"),
    "vit_base_patch16_clip_quickgelu_224": (86_193_152, "metaclip_2pt5b", 224, 1.0, "center", OPENAI, 512, "cc-by-nc-4.0"),
    "vit_base_patch16_plus_clip_240": (117_214_464, "laion400m_e32", 240, 1.0, "center", OPENAI, 640, "mit"),
    "vit_base_patch16_siglip_224": (92_884_224, "v2_webli", 224, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_base_patch16_siglip_256": (92_930_304, "v2_webli", 256, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_base_patch16_siglip_384": (93_176_064, "v2_webli", 384, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_base_patch16_siglip_512": (93_520_128, "v2_webli", 512, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_base_patch16_siglip_gap_224": (85_797_120, "v2_webli", 224, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_base_patch16_siglip_gap_256": (85_843_200, "v2_webli", 256, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_base_patch16_siglip_gap_384": (86_088_960, "v2_webli", 384, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_base_patch16_siglip_gap_512": (86_433_024, "v2_webli", 512, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_base_patch32_clip_224": (88_225_000, "laion2b_ft_in12k_in1k", 224, 0.9, "center", OPENAI, 1000, "apache-2.0"),
    "vit_base_patch32_clip_256": (87_861_248, "datacompxl", 256, 1.0, "center", OPENAI, 512, "apache-2.0"),
    "vit_base_patch32_clip_384": (88_297_960, "laion2b_ft_in12k_in1k", 384, 1.0, "center", OPENAI, 1000, "apache-2.0"),
    "vit_base_patch32_clip_448": (88_337_896, "laion2b_ft_in12k_in1k", 448, 1.0, "center", OPENAI, 1000, "apache-2.0"),
    "vit_base_patch32_clip_quickgelu_224": (87_849_728, "laion400m_e32", 224, 0.9, "center", OPENAI, 512, "mit"),
    "vit_base_patch32_siglip_256": (94_552_320, "v2_webli", 256, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_base_patch32_siglip_gap_256": (87_465_216, "v2_webli", 256, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_betwixt_patch32_clip_224": (61_411_712, "tinyclip_laion400m", 224, 0.9, "center", OPENAI, 512, "mit"),
    "vit_giant_patch14_clip_224": (1_012_646_656, "laion2b", 224, 1.0, "center", OPENAI, 1024, "apache-2.0"),
    "vit_giant_patch14_dinov2": (1_136_479_232, "lvd142m", 518, 1.0, "center", IMAGENET, 0, "apache-2.0"),
    "vit_giant_patch14_reg4_dinov2": (1_136_483_840, "lvd142m", 518, 1.0, "center", IMAGENET, 0, "apache-2.0"),
    "vit_giantopt_patch16_siglip_256": (1_163_168_256, "v2_webli", 256, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_giantopt_patch16_siglip_384": (1_163_659_776, "v2_webli", 384, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_giantopt_patch16_siglip_gap_256": (1_134_838_272, "v2_webli", 256, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_giantopt_patch16_siglip_gap_384": (1_135_329_792, "v2_webli", 384, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_gigantic_patch14_clip_224": (1_844_908_544, "laion2b", 224, 1.0, "center", OPENAI, 1280, "apache-2.0"),
    "vit_gigantic_patch14_clip_378": (1_845_695_616, "metaclip2_worldwide", 378, 1.0, "squash", OPENAI, 1280, "cc-by-nc-4.0"),
    "vit_gigantic_patch14_clip_quickgelu_224": (1_844_908_544, "metaclip_2pt5b", 224, 1.0, "center", OPENAI, 1280, "cc-by-nc-4.0"),
    "vit_huge_patch14_clip_224": (632_047_080, "laion2b_ft_in12k_in1k", 224, 1.0, "center", OPENAI, 1000, "apache-2.0"),
    "vit_huge_patch14_clip_336": (632_456_680, "laion2b_ft_in12k_in1k", 336, 1.0, "squash", OPENAI, 1000, "apache-2.0"),
    "vit_huge_patch14_clip_378": (632_683_264, "dfn5b", 378, 1.0, "center", OPENAI, 1024, "apple-ascl"),
    "vit_huge_patch14_clip_quickgelu_224": (632_077_824, "dfn5b", 224, 1.0, "center", OPENAI, 1024, "apple-ascl"),
    "vit_huge_patch14_clip_quickgelu_378": (632_683_264, "dfn5b", 378, 1.0, "center", OPENAI, 1024, "apple-ascl"),
    "vit_large_patch14_clip_224": (304_204_776, "laion2b_ft_in12k_in1k", 224, 1.0, "center", INCEPTION, 1000, "apache-2.0"),
    "vit_large_patch14_clip_336": (304_532_456, "laion2b_ft_in12k_in1k", 336, 1.0, "squash", INCEPTION, 1000, "apache-2.0"),
    "vit_large_patch14_clip_quickgelu_224": (303_966_976, "dfn2b", 224, 1.0, "center", OPENAI, 768, "apple-ascl"),
    "vit_large_patch14_clip_quickgelu_336": (304_294_656, "openai", 336, 1.0, "center", OPENAI, 768, "apache-2.0"),
    "vit_large_patch14_dinov2": (304_367_616, "lvd142m", 518, 1.0, "center", IMAGENET, 0, "apache-2.0"),
    "vit_large_patch14_reg4_dinov2": (304_370_688, "lvd142m", 518, 1.0, "center", IMAGENET, 0, "apache-2.0"),
    "vit_large_patch16_siglip_256": (315_956_224, "v2_webli", 256, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_large_patch16_siglip_384": (316_283_904, "v2_webli", 384, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_large_patch16_siglip_512": (316_742_656, "v2_webli", 512, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_large_patch16_siglip_gap_256": (303_361_024, "v2_webli", 256, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_large_patch16_siglip_gap_384": (303_688_704, "v2_webli", 384, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_large_patch16_siglip_gap_512": (304_147_456, "v2_webli", 512, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_medium_patch16_clip_224": (38_587_904, "tinyclip_yfcc15m", 224, 0.9, "center", OPENAI, 512, "mit"),
    "vit_medium_patch32_clip_224": (39_692_288, "tinyclip_laion400m", 224, 0.9, "center", OPENAI, 512, "mit"),
    "vit_small_patch14_dinov2": (22_056_192, "lvd142m", 518, 1.0, "center", IMAGENET, 0, "apache-2.0"),
    "vit_small_patch14_reg4_dinov2": (22_057_344, "lvd142m", 518, 1.0, "center", IMAGENET, 0, "apache-2.0"),
    "vit_so400m_patch14_siglip_224": (427_680_704, "v2_webli", 224, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch14_siglip_378": (428_225_600, "v2_webli", 378, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch14_siglip_384": (428_225_600, "webli", 384, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch14_siglip_gap_224": (412_442_352, "v2_webli", 224, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch14_siglip_gap_378": (412_987_248, "v2_webli", 378, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch14_siglip_gap_384": (412_987_248, "webli", 384, 1.0, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch14_siglip_gap_448": (413_327_088, "pali_mix", 448, 1.0, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch14_siglip_gap_896": (416_866_032, "pali_pt", 896, 1.0, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch16_siglip_256": (427_888_064, "v2_webli", 256, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch16_siglip_384": (428_256_704, "v2_webli", 384, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch16_siglip_512": (428_772_800, "v2_webli", 512, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch16_siglip_gap_256": (412_649_712, "v2_webli", 256, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch16_siglip_gap_384": (413_018_352, "v2_webli", 384, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_so400m_patch16_siglip_gap_512": (413_534_448, "v2_webli", 512, 0.9, "center", INCEPTION, 0, "apache-2.0"),
    "vit_xsmall_patch16_clip_224": (8_277_504, "tinyclip_yfcc15m", 224, 0.9, "center", OPENAI, 512, "mit"),
}
TIMM_PARAMS = {name: row[0] for name, row in TIMM.items()}


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


@pytest.mark.parametrize("name", sorted(TIMM))
def test_pretrained_cfg_is_timms(name):
    from fastvit.presets import pretrained_cfg_for

    _, tag, img, crop_pct, crop_mode, (mean, std), num_classes, license = TIMM[name]
    pc = pretrained_cfg_for(name, fastvit.get_config(name))
    assert pc == dict(pc, tag=tag, input_size=(3, img, img), crop_pct=crop_pct, crop_mode=crop_mode, mean=mean, std=std,
                      num_classes=num_classes, interpolation="bicubic", license=license, architecture=name)
    assert fastvit.get_config(name).num_classes == num_classes and fastvit.get_config(name).img_size == (img, img)


# the later names: each family's variants, as timm builds them
@pytest.mark.parametrize("name,fields", [
    ("deit3_huge_patch14_224", dict(patch_size=14, embed_dim=1280, depth=32, init_values=1e-6, no_embed_class=True)),
    ("deit3_medium_patch16_224", dict(embed_dim=512, depth=12, num_heads=8, mlp_hidden_dim=2048)),
    ("deit3_small_patch16_384", dict(img_size=(384, 384), num_tokens=576, seq_len=577)),
    ("vit_base_patch16_siglip_gap_384", dict(global_pool="avg", use_fc_norm=False, use_final_norm=True, class_token=False,
                                              act_layer="gelu", seq_len=576)),
    ("vit_so400m_patch16_siglip_512", dict(act_layer="gelu_tanh", global_pool="map", mlp_hidden_dim=4304, grid_size=(32, 32))),
    ("vit_large_patch16_siglip_512", dict(act_layer="gelu_tanh", embed_dim=1024)),
    ("vit_large_patch16_siglip_384", dict(act_layer="gelu", embed_dim=1024)),
    ("vit_giantopt_patch16_siglip_gap_256", dict(embed_dim=1536, depth=40, num_heads=16, head_dim=96, act_layer="gelu_tanh")),
    ("vit_so400m_patch14_siglip_gap_896", dict(grid_size=(64, 64), global_pool="avg", use_fc_norm=False)),
    ("vit_giant_patch14_clip_224", dict(embed_dim=1408, mlp_hidden_dim=6144, head_dim=88, num_classes=1024, pre_norm=True)),
    ("vit_gigantic_patch14_clip_quickgelu_224", dict(embed_dim=1664, mlp_hidden_dim=8192, head_dim=104, act_layer="quick_gelu")),
    ("vit_huge_patch14_clip_quickgelu_378", dict(act_layer="quick_gelu", grid_size=(27, 27), num_classes=1024, norm_eps=1e-5)),
    ("vit_base_patch16_plus_clip_240", dict(embed_dim=896, num_heads=14, grid_size=(15, 15), use_patch_bias=False)),
    ("vit_xsmall_patch16_clip_224", dict(embed_dim=256, depth=10, num_heads=4, num_classes=512)),
])
def test_later_preset_options(name, fields):
    cfg = fastvit.get_config(name)
    assert {k: getattr(cfg, k) for k in fields} == fields


def test_every_family_name_is_a_preset():
    families = ("deit3_*", "*_dinov2", "vit_*_clip_*", "vit_*_siglip_*")
    assert sorted({n for f in families for n in fastvit.list_models(f)}) == sorted(TIMM)
