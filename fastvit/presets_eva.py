"""timm 1.0.29's ``eva`` module by name: all 60 of its names (EVA, EVA-02, EVA CLIP, timm's SBB RoPE
ViTs, Perception Encoder core / lang / spatial, Naver's RoPE-ViT, DINOv3, EUPE, LingBot-Vision),
their :class:`fastvit.eva.EvaConfig` arguments and timm's ``pretrained_cfg`` (default tag and
preprocessing), and :func:`create_eva` / :func:`list_eva_models`.

A row holds what timm's model function passes plus what timm's builder takes from the default
weights' config (``num_classes``, ``img_size`` where the function leaves it out). Each family's
shared options are one dict; a row adds its sizes and differences.
"""

from __future__ import annotations

import difflib
import fnmatch

import torch

from .checkpoints.timm_eva import load_timm_eva
from .eva import Eva, EvaConfig
from .presets_modern import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

_IMAGENET, _INCEPTION = (IMAGENET_MEAN, IMAGENET_STD), (INCEPTION_MEAN, INCEPTION_STD)
_OPENAI = (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
_SAT = ((0.430, 0.411, 0.296), (0.213, 0.156, 0.143))  # DINOv3 satellite (SAT-493M) weights


def _arch(family, patch, dim, depth, heads, img, classes, **kw):
    return dict(family, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, img_size=img,
                num_classes=classes, **kw)


def _cfg(tag, crop_pct, crop_mode, norm, license, **kw):
    return dict(tag=tag, crop_pct=crop_pct, crop_mode=crop_mode, mean=norm[0], std=norm[1], license=license, **kw)


# -- the families' shared options (timm's Eva keyword arguments) ----------------------------------
_EVA02 = dict(mlp_ratio=8 / 3, ref_feat_shape=(16, 16), swiglu_mlp=True, use_rot_pos_emb=True)
_EVA02_CLIP = dict(global_pool='token')
_EVA = dict(mlp_ratio=4.363636363636363)
_DINOV3 = dict(dynamic_img_size=True, init_values=1e-05, norm_eps=1e-05, num_reg_tokens=4, rope_rotate_half=True,
    rope_temperature=100, rope_type='dinov3', use_abs_pos_emb=False, use_fc_norm=False, use_rot_pos_emb=True)
_LINGBOT = dict(dynamic_img_size=True, global_pool='token', init_values=1e-05, norm_eps=1e-05, num_reg_tokens=4,
    rope_rotate_half=True, rope_temperature=100, rope_type='dinov3', use_abs_pos_emb=False, use_fc_norm=False,
    use_rot_pos_emb=True)
_NAVER = dict(attn_type='rope', class_token=True, global_pool='token', init_values=1e-05, mlp_ratio=4, qkv_bias=True,
    rope_grid_indexing='xy', use_rot_pos_emb=True)
_SBB = dict(class_token=False, init_values=1e-05, qkv_fused=True, ref_feat_shape=(16, 16), use_abs_pos_emb=False,
    use_rot_pos_emb=True)
_PE_CORE = dict(attn_pool_mlp_ratio=4.0, attn_pool_num_heads=8, attn_type='rope', global_pool='map', norm_eps=1e-05,
    rope_grid_indexing='xy', use_pre_transformer_norm=True, use_rot_pos_emb=True)
_PE_LANG = dict(attn_type='rope', init_values=0.1, norm_eps=1e-05, ref_feat_shape=(32, 32), rope_grid_indexing='xy',
    use_fc_norm=False, use_post_transformer_norm=False, use_pre_transformer_norm=True, use_rot_pos_emb=True)
_PE_SPATIAL = dict(attn_type='rope', norm_eps=1e-05, ref_feat_shape=(32, 32), rope_grid_indexing='xy',
    use_fc_norm=False, use_post_transformer_norm=False, use_pre_transformer_norm=True, use_rot_pos_emb=True)

# -- name: family, patch, embed_dim, depth, heads, image size, num_classes, differences ----------
EVA_PRESETS: dict[str, dict] = {
    "eva02_base_patch14_224": _arch(_EVA02, 14, 768, 12, 12, 224, 0, qkv_fused=False, scale_mlp=True),
    "eva02_base_patch14_448": _arch(_EVA02, 14, 768, 12, 12, 448, 1000, qkv_fused=False, scale_mlp=True),
    "eva02_large_patch14_224": _arch(_EVA02, 14, 1024, 24, 16, 224, 0, qkv_fused=False, scale_mlp=True),
    "eva02_large_patch14_448": _arch(_EVA02, 14, 1024, 24, 16, 448, 1000, qkv_fused=False, scale_mlp=True),
    "eva02_small_patch14_224": _arch(_EVA02, 14, 384, 12, 6, 224, 0),
    "eva02_small_patch14_336": _arch(_EVA02, 14, 384, 12, 6, 336, 1000),
    "eva02_tiny_patch14_224": _arch(_EVA02, 14, 192, 12, 3, 224, 0),
    "eva02_tiny_patch14_336": _arch(_EVA02, 14, 192, 12, 3, 336, 1000),
    "eva02_base_patch16_clip_224": _arch(_EVA02_CLIP, 16, 768, 12, 12, 224, 512, mlp_ratio=8 / 3, qkv_fused=False,
        ref_feat_shape=(16, 16), scale_attn_inner=True, scale_mlp=True, swiglu_mlp=True, use_rot_pos_emb=True),
    "eva02_enormous_patch14_clip_224": _arch(_EVA02_CLIP, 14, 1792, 64, 16, 224, 1024, mlp_ratio=8.571428571428571,
        use_post_norm=True),
    "eva02_large_patch14_clip_224": _arch(_EVA02_CLIP, 14, 1024, 24, 16, 224, 768, mlp_ratio=8 / 3, qkv_fused=False,
        ref_feat_shape=(16, 16), scale_attn_inner=True, scale_mlp=True, swiglu_mlp=True, use_rot_pos_emb=True),
    "eva02_large_patch14_clip_336": _arch(_EVA02_CLIP, 14, 1024, 24, 16, 336, 768, mlp_ratio=8 / 3, qkv_fused=False,
        ref_feat_shape=(16, 16), scale_attn_inner=True, scale_mlp=True, swiglu_mlp=True, use_rot_pos_emb=True),
    "eva_giant_patch14_224": _arch(_EVA, 14, 1408, 40, 16, 224, 1000),
    "eva_giant_patch14_336": _arch(_EVA, 14, 1408, 40, 16, 336, 1000),
    "eva_giant_patch14_560": _arch(_EVA, 14, 1408, 40, 16, 560, 1000),
    "eva_giant_patch14_clip_224": _arch(_EVA, 14, 1408, 40, 16, 224, 1024, global_pool='token'),
    "vit_7b_patch16_dinov3": _arch(_DINOV3, 16, 4096, 40, 32, 256, 0, mlp_ratio=2, qkv_bias=False,
        swiglu_align_to=64, swiglu_mlp=True),
    "vit_base_patch16_dinov3": _arch(_DINOV3, 16, 768, 12, 12, 256, 0, qkv_bias=False),
    "vit_base_patch16_dinov3_qkvb": _arch(_DINOV3, 16, 768, 12, 12, 256, 0, qkv_bias=True),
    "vit_huge_plus_patch16_dinov3": _arch(_DINOV3, 16, 1280, 32, 20, 256, 0, qkv_bias=False, swiglu_align_to=8,
        swiglu_mlp=True),
    "vit_huge_plus_patch16_dinov3_qkvb": _arch(_DINOV3, 16, 1280, 32, 20, 256, 0, qkv_bias=True, swiglu_align_to=8,
        swiglu_mlp=True),
    "vit_large_patch16_dinov3": _arch(_DINOV3, 16, 1024, 24, 16, 256, 0, qkv_bias=False),
    "vit_large_patch16_dinov3_qkvb": _arch(_DINOV3, 16, 1024, 24, 16, 256, 0, qkv_bias=True),
    "vit_small_patch16_dinov3": _arch(_DINOV3, 16, 384, 12, 6, 256, 0, qkv_bias=False),
    "vit_small_patch16_dinov3_qkvb": _arch(_DINOV3, 16, 384, 12, 6, 256, 0, qkv_bias=True),
    "vit_small_plus_patch16_dinov3": _arch(_DINOV3, 16, 384, 12, 6, 256, 0, qkv_bias=False, swiglu_align_to=8,
        swiglu_mlp=True),
    "vit_small_plus_patch16_dinov3_qkvb": _arch(_DINOV3, 16, 384, 12, 6, 256, 0, qkv_bias=True, swiglu_align_to=8,
        swiglu_mlp=True),
    "vit_tiny_patch16_dinov3_qkvb": _arch(_DINOV3, 16, 192, 12, 3, 256, 0, qkv_bias=True),
    "vit_base_patch16_lingbot": _arch(_LINGBOT, 16, 768, 12, 12, 512, 0, qkv_bias=True),
    "vit_giant_patch16_lingbot": _arch(_LINGBOT, 16, 1536, 40, 24, 512, 0, mlp_ratio=8 / 3, qkv_bias=False,
        swiglu_align_to=8, swiglu_mlp=True),
    "vit_large_patch16_lingbot": _arch(_LINGBOT, 16, 1024, 24, 16, 512, 0, qkv_bias=True),
    "vit_small_patch16_lingbot": _arch(_LINGBOT, 16, 384, 12, 6, 512, 0, qkv_bias=True),
    "vit_base_patch16_rope_224": _arch(_NAVER, 16, 768, 12, 12, 224, 1000, rope_temperature=100.0,
        use_abs_pos_emb=False, use_fc_norm=False),
    "vit_base_patch16_rope_ape_224": _arch(_NAVER, 16, 768, 12, 12, 224, 1000, no_embed_class=True,
        rope_temperature=100.0, use_abs_pos_emb=True),
    "vit_base_patch16_rope_mixed_224": _arch(_NAVER, 16, 768, 12, 12, 224, 1000, rope_temperature=10.0,
        rope_type='mixed', use_abs_pos_emb=False),
    "vit_base_patch16_rope_mixed_ape_224": _arch(_NAVER, 16, 768, 12, 12, 224, 1000, no_embed_class=True,
        rope_temperature=10.0, rope_type='mixed', use_abs_pos_emb=True),
    "vit_large_patch16_rope_224": _arch(_NAVER, 16, 1024, 24, 16, 224, 1000, rope_temperature=100.0,
        use_abs_pos_emb=False),
    "vit_large_patch16_rope_ape_224": _arch(_NAVER, 16, 1024, 24, 16, 224, 1000, no_embed_class=True,
        rope_temperature=100.0, use_abs_pos_emb=True),
    "vit_large_patch16_rope_mixed_224": _arch(_NAVER, 16, 1024, 24, 16, 224, 1000, rope_temperature=10.0,
        rope_type='mixed', use_abs_pos_emb=False),
    "vit_large_patch16_rope_mixed_ape_224": _arch(_NAVER, 16, 1024, 24, 16, 224, 1000, no_embed_class=True,
        rope_temperature=10.0, rope_type='mixed', use_abs_pos_emb=True),
    "vit_small_patch16_rope_224": _arch(_NAVER, 16, 384, 12, 6, 224, 1000, rope_temperature=100.0,
        use_abs_pos_emb=False),
    "vit_small_patch16_rope_ape_224": _arch(_NAVER, 16, 384, 12, 6, 224, 1000, no_embed_class=True,
        rope_temperature=100.0, use_abs_pos_emb=True),
    "vit_small_patch16_rope_mixed_224": _arch(_NAVER, 16, 384, 12, 6, 224, 1000, rope_temperature=10.0,
        rope_type='mixed', use_abs_pos_emb=False),
    "vit_small_patch16_rope_mixed_ape_224": _arch(_NAVER, 16, 384, 12, 6, 224, 1000, no_embed_class=True,
        rope_temperature=10.0, rope_type='mixed', use_abs_pos_emb=True),
    "vit_base_patch16_rope_reg1_gap_256": _arch(_SBB, 16, 768, 12, 12, 256, 1000, num_reg_tokens=1, qkv_bias=True),
    "vit_betwixt_patch16_rope_reg4_gap_256": _arch(_SBB, 16, 640, 12, 10, 256, 1000, num_reg_tokens=4, qkv_bias=True),
    "vit_medium_patch16_rope_reg1_gap_256": _arch(_SBB, 16, 512, 12, 8, 256, 1000, num_reg_tokens=1, qkv_bias=True),
    "vit_mediumd_patch16_rope_reg1_gap_256": _arch(_SBB, 16, 512, 20, 8, 256, 1000, num_reg_tokens=1, qkv_bias=False),
    "vit_pe_core_base_patch16_224": _arch(_PE_CORE, 16, 768, 12, 12, 224, 1024, mlp_ratio=4.0, ref_feat_shape=(14,
        14), rope_grid_offset=1.0),
    "vit_pe_core_gigantic_patch14_448": _arch(_PE_CORE, 14, 1536, 50, 16, 448, 1280, class_token=False,
        mlp_ratio=5.833333333333333, ref_feat_shape=(32, 32)),
    "vit_pe_core_large_patch14_336": _arch(_PE_CORE, 14, 1024, 24, 16, 336, 1024, mlp_ratio=4.0, ref_feat_shape=(24,
        24), rope_grid_offset=1.0),
    "vit_pe_core_small_patch16_384": _arch(_PE_CORE, 16, 384, 12, 6, 384, 512, mlp_ratio=4.0, ref_feat_shape=(24,
        24), rope_grid_offset=1.0),
    "vit_pe_core_tiny_patch16_384": _arch(_PE_CORE, 16, 192, 12, 3, 384, 512, mlp_ratio=4.0, ref_feat_shape=(24, 24),
        rope_grid_offset=1.0),
    "vit_pe_lang_gigantic_patch14_448": _arch(_PE_LANG, 14, 1536, 47, 16, 448, 0, class_token=False,
        mlp_ratio=5.833333333333333),
    "vit_pe_lang_large_patch14_448": _arch(_PE_LANG, 14, 1024, 23, 16, 448, 0, class_token=True, mlp_ratio=4.0,
        rope_grid_offset=1.0),
    "vit_pe_spatial_base_patch16_512": _arch(_PE_SPATIAL, 16, 768, 12, 12, 512, 0, mlp_ratio=4.0,
        rope_grid_offset=1.0),
    "vit_pe_spatial_gigantic_patch14_448": _arch(_PE_SPATIAL, 14, 1536, 50, 16, 448, 0, class_token=False,
        init_values=0.1, mlp_ratio=5.833333333333333),
    "vit_pe_spatial_large_patch14_448": _arch(_PE_SPATIAL, 14, 1024, 24, 16, 448, 0, mlp_ratio=4.0,
        rope_grid_offset=1.0),
    "vit_pe_spatial_small_patch16_512": _arch(_PE_SPATIAL, 16, 384, 12, 6, 512, 0, mlp_ratio=4.0,
        rope_grid_offset=1.0),
    "vit_pe_spatial_tiny_patch16_512": _arch(_PE_SPATIAL, 16, 192, 12, 3, 512, 0, mlp_ratio=4.0,
        rope_grid_offset=1.0),
}

# -- timm's default weights per name: tag, crop_pct, crop_mode, mean / std, license ---------------
EVA_PRETRAINED_CFG: dict[str, dict] = {
    "eva02_base_patch14_224": _cfg("mim_in22k", 0.9, "center", _OPENAI, "mit"),
    "eva02_base_patch14_448": _cfg("mim_in22k_ft_in22k_in1k", 1.0, "squash", _OPENAI, "mit"),
    "eva02_base_patch16_clip_224": _cfg("merged2b", 0.9, "center", _OPENAI, "mit"),
    "eva02_enormous_patch14_clip_224": _cfg("laion2b", 0.9, "center", _OPENAI, "mit"),
    "eva02_large_patch14_224": _cfg("mim_in22k", 0.9, "center", _OPENAI, "mit"),
    "eva02_large_patch14_448": _cfg("mim_in22k_ft_in22k_in1k", 1.0, "squash", _OPENAI, "mit"),
    "eva02_large_patch14_clip_224": _cfg("merged2b", 0.9, "center", _OPENAI, "mit"),
    "eva02_large_patch14_clip_336": _cfg("merged2b", 1.0, "center", _OPENAI, "mit"),
    "eva02_small_patch14_224": _cfg("mim_in22k", 0.9, "center", _OPENAI, "mit"),
    "eva02_small_patch14_336": _cfg("mim_in22k_ft_in1k", 1.0, "center", _OPENAI, "mit"),
    "eva02_tiny_patch14_224": _cfg("mim_in22k", 0.9, "center", _OPENAI, "mit"),
    "eva02_tiny_patch14_336": _cfg("mim_in22k_ft_in1k", 1.0, "center", _OPENAI, "mit"),
    "eva_giant_patch14_224": _cfg("clip_ft_in1k", 0.9, "center", _OPENAI, "mit"),
    "eva_giant_patch14_336": _cfg("clip_ft_in1k", 1.0, "squash", _OPENAI, "mit"),
    "eva_giant_patch14_560": _cfg("m30m_ft_in22k_in1k", 1.0, "squash", _IMAGENET, "mit"),
    "eva_giant_patch14_clip_224": _cfg("laion400m", 0.9, "center", _OPENAI, "mit"),
    "vit_7b_patch16_dinov3": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_base_patch16_dinov3": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_base_patch16_dinov3_qkvb": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_base_patch16_lingbot": _cfg("robbyant", 1.0, "squash", _IMAGENET, "apache-2.0", interpolation='bilinear',
        origin_url='https://github.com/robbyant/lingbot-vision', paper_ids='arXiv:2607.05247'),
    "vit_base_patch16_rope_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_base_patch16_rope_ape_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_base_patch16_rope_mixed_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_base_patch16_rope_mixed_ape_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_base_patch16_rope_reg1_gap_256": _cfg("sbb_in1k", 0.95, "center", _INCEPTION, "mit"),
    "vit_betwixt_patch16_rope_reg4_gap_256": _cfg("sbb_in1k", 0.95, "center", _OPENAI, "mit"),
    "vit_giant_patch16_lingbot": _cfg("robbyant", 1.0, "squash", _IMAGENET, "apache-2.0", interpolation='bilinear',
        origin_url='https://github.com/robbyant/lingbot-vision', paper_ids='arXiv:2607.05247'),
    "vit_huge_plus_patch16_dinov3": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_huge_plus_patch16_dinov3_qkvb": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_large_patch16_dinov3": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_large_patch16_dinov3_qkvb": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_large_patch16_lingbot": _cfg("robbyant", 1.0, "squash", _IMAGENET, "apache-2.0", interpolation='bilinear',
        origin_url='https://github.com/robbyant/lingbot-vision', paper_ids='arXiv:2607.05247'),
    "vit_large_patch16_rope_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_large_patch16_rope_ape_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_large_patch16_rope_mixed_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_large_patch16_rope_mixed_ape_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_medium_patch16_rope_reg1_gap_256": _cfg("sbb_in1k", 0.95, "center", _INCEPTION, "mit"),
    "vit_mediumd_patch16_rope_reg1_gap_256": _cfg("sbb_in1k", 0.95, "center", _INCEPTION, "mit"),
    "vit_pe_core_base_patch16_224": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_core_gigantic_patch14_448": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_core_large_patch14_336": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_core_small_patch16_384": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_core_tiny_patch16_384": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_lang_gigantic_patch14_448": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_lang_large_patch14_448": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_spatial_base_patch16_512": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_spatial_gigantic_patch14_448": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_spatial_large_patch14_448": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_spatial_small_patch16_512": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_pe_spatial_tiny_patch16_512": _cfg("fb", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_small_patch16_dinov3": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_small_patch16_dinov3_qkvb": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_small_patch16_lingbot": _cfg("robbyant", 1.0, "squash", _IMAGENET, "apache-2.0", interpolation='bilinear',
        origin_url='https://github.com/robbyant/lingbot-vision', paper_ids='arXiv:2607.05247'),
    "vit_small_patch16_rope_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_small_patch16_rope_ape_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_small_patch16_rope_mixed_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_small_patch16_rope_mixed_ape_224": _cfg("naver_in1k", 0.9, "center", _IMAGENET, "apache-2.0"),
    "vit_small_plus_patch16_dinov3": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_small_plus_patch16_dinov3_qkvb": _cfg("lvd1689m", 1.0, "center", _IMAGENET, "dinov3-license"),
    "vit_tiny_patch16_dinov3_qkvb": _cfg("eupe_lvd1689m", 1.0, "center", _IMAGENET,
        "fair-noncommercial-research-license"),
}


def list_eva_models(pattern: str = "*") -> list[str]:
    """The Eva preset names, sorted; ``pattern`` is a shell-style wildcard (``"*dinov3*"``)."""
    return sorted(n for n in EVA_PRESETS if fnmatch.fnmatch(n, pattern))


def get_eva_config(name: str, **overrides) -> EvaConfig:
    """The preset's :class:`EvaConfig`, with timm keyword arguments (and ``*_impl``) overriding it."""
    if name not in EVA_PRESETS:
        close = difflib.get_close_matches(name, EVA_PRESETS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown Eva model {name!r}.{hint} fastvit.presets_eva.list_eva_models() lists all "
                         f"{len(EVA_PRESETS)}.")
    return EvaConfig().replace(**{**EVA_PRESETS[name], **overrides})


def eva_pretrained_cfg(name: str, cfg: EvaConfig) -> dict:
    """timm's ``pretrained_cfg`` for preset ``name`` (no url or hub id: fastvit never downloads);
    ``input_size`` and ``num_classes`` are the preset's, as timm's."""
    preset = EvaConfig().replace(**EVA_PRESETS[name])
    common = dict(url="", architecture=name, custom_load=False, input_size=(preset.in_chans, *preset.img_size),
                  fixed_input_size=True, interpolation="bicubic", pool_size=None, first_conv="patch_embed.proj",
                  classifier="head", num_classes=preset.num_classes)
    return {**common, **EVA_PRETRAINED_CFG[name]}


def create_eva(name: str, pretrained=None, *, device=None, dtype=None, **overrides) -> Eva:
    """Build Eva preset ``name`` (timm's name) with timm keyword arguments overriding the preset
    (``num_classes=``, ``global_pool=``, ``dynamic_img_size=``, ``img_size=``...) and fastvit's
    ``attn_impl`` / ``norm_impl`` / ``linear_impl``. ``pretrained``: a timm state dict or the path
    of a timm checkpoint file (:func:`fastvit.checkpoints.timm_eva.load_timm_eva`); None / False: none.
    ``device`` / ``dtype`` as timm's: where the model is built (``"meta"``: no memory) and its dtype."""
    cfg = get_eva_config(name, **overrides)
    if device is not None:
        with torch.device(device):
            model = Eva(cfg)
    else:
        model = Eva(cfg)
    if dtype is not None:
        model = model.to(dtype=dtype)
    model.pretrained_cfg = model.default_cfg = eva_pretrained_cfg(name, model.cfg)
    if pretrained is True:
        raise ValueError(f"fastvit does not download weights: pass pretrained= a timm checkpoint file (or state dict) "
                         f"for {name!r}")
    if pretrained is not None and pretrained is not False:
        load_timm_eva(model, pretrained)
    return model
