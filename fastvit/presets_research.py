"""timm 1.0.29's further VisionTransformer architectures, one family per table: plain sizes and
resolutions beyond the paper's, AIMv2, BEiT-3, FlexiViT, EVA-L (MIM), I-JEPA, TIPSv2, InternViT-300M, the
"three things" block layouts (36x1 serial, 18x2 parallel), the ViT-22B-style parallel-scaling
blocks (``_xp_``), residual post-norm (``_rpn_``) and timm's small test models.

Each row is ``name: (architecture fields, timm's default weights)``; the weights say the tag
and the preprocessing, as in :mod:`fastvit.presets_modern`. :mod:`fastvit.presets` merges them.
"""

from __future__ import annotations

from .presets_modern import _IMAGENET, _INCEPTION, _OPENAI, _arch, _cfg

_ZERO_ONE = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # inputs in [0, 1], no normalisation
_SIZES = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16), "huge": (1280, 32, 16),
          "giant": (1408, 40, 16, 4.363636363636363), "gigantic": (1664, 48, 16, 4.923076923076923),
          "plus": (896, 12, 14), "so400m": (1152, 27, 16, 3.736111111111111),
          "giant_tips": (1536, 40, 24, 5.33334), "test": (64, 6, 2, 3.0), "test2": (64, 8, 2, 3.0),
          "test3": (96, 9, 3, 2.0), "test4": (96, 9, 3, 3.0), "giant_beit3": (1408, 40, 16, 4.3637)}


def _v(size, patch, img, **kw):
    return _arch(patch, *_SIZES[size], img=img, **kw)


_REG_GAP = dict(class_token=False, reg_tokens=1, global_pool="avg", init_values=1e-5)
_XP = dict(pre_norm=True, no_embed_class=True, norm_layer="rmsnorm", block_type="parallel_scaling", qkv_bias=False,
           qk_norm=True)
_IJEPA = dict(class_token=False, global_pool="avg", fc_norm=False, num_classes=0)
_TIPS = dict(init_values=1.0, reg_tokens=1, no_embed_class=True, num_classes=0)
_UNTRAINED = _cfg("untrained", 0.9, _INCEPTION)
_AIMV2 = dict(class_token=False, global_pool="avg", fc_norm=False, qkv_bias=False, proj_bias=False, act_layer="silu",
              mlp_layer="swiglu_unpacked", norm_layer="rmsnorm", norm_eps=1e-5, patch_norm=True, num_classes=0)

_FAMILIES = {
    "plain": {
        "vit_small_patch8_224": (_v("small", 8, 224, num_classes=0), _cfg("dino", 0.9, _IMAGENET)),
        "vit_small_patch32_384": (_v("small", 32, 384), _cfg("augreg_in21k_ft_in1k", 1.0, _INCEPTION)),
        "vit_large_patch32_224": (_v("large", 32, 224, num_classes=0), _cfg("orig_in21k", 0.9, _INCEPTION)),
        "vit_large_patch32_384": (_v("large", 32, 384), _cfg("orig_in21k_ft_in1k", 1.0, _INCEPTION)),
        "vit_giant_patch14_224": (_v("giant", 14, 224), _UNTRAINED),
        "vit_gigantic_patch14_224": (_v("gigantic", 14, 224), _UNTRAINED),
        "vit_base_patch16_224_miil": (_v("base", 16, 224, qkv_bias=False, num_classes=11221),
                                      dict(_cfg("in21k", 0.875, _ZERO_ONE), interpolation="bilinear")),
        # 16 heads, as timm registers it
        "vit_base_patch16_gap_224": (_arch(16, 768, 12, 16, img=224, class_token=False, global_pool="avg", fc_norm=False),
                                     _UNTRAINED),
        "vit_base_patch16_plus_240": (_v("plus", 16, 240, init_values=1e-5), _cfg("untrained", 0.95, _INCEPTION)),
        "vit_base_patch32_plus_256": (_v("plus", 32, 256, init_values=1e-5), _cfg("untrained", 0.95, _INCEPTION)),
        "deit_base_patch16_384": (_v("base", 16, 384), _cfg("fb_in1k", 1.0, _IMAGENET)),
        "deit_base_distilled_patch16_384": (_v("base", 16, 384, distilled=True), _cfg("fb_in1k", 1.0, _IMAGENET)),
    },
    "flexivit": {f"flexivit_{size}": (_v(size, 16, 240, no_embed_class=True), _cfg("1200ep_in1k", 0.95, _INCEPTION))
                 for size in ("small", "base", "large")},
    "eva_mim": {f"eva_large_patch14_{img}": (_v("large", 14, img, global_pool="avg"),
                                             _cfg("in22k_ft_in22k_in1k", 1.0, _OPENAI, "mit", mode))
                for img, mode in ((196, "center"), (336, "squash"))},
    "ijepa": {
        "vit_huge_patch14_gap_224": (_v("huge", 14, 224, **_IJEPA), _cfg("in1k_ijepa", 0.9, _IMAGENET, "cc-by-nc-4.0")),
        "vit_huge_patch16_gap_448": (_v("huge", 16, 448, **_IJEPA), _cfg("in1k_ijepa", 1.0, _IMAGENET, "cc-by-nc-4.0")),
        "vit_giant_patch16_gap_224": (_v("giant", 16, 224, **_IJEPA), _cfg("in22k_ijepa", 0.9, _IMAGENET, "cc-by-nc-4.0")),
    },
    "tipsv2": {
        **{f"vit_{size}_patch14_reg1_tipsv2": (_v(size, 14, 448, **_TIPS), _cfg("webli", 1.0, _ZERO_ONE))
           for size in ("base", "large", "so400m")},
        "vit_giant_patch14_reg1_tipsv2": (_v("giant_tips", 14, 448, mlp_layer="swiglu", act_layer="silu", **_TIPS),
                                          _cfg("webli", 1.0, _ZERO_ONE)),
    },
    "intern": {
        "vit_intern300m_patch14_448": (_v("large", 14, 448, init_values=0.1, final_norm=False, dynamic_img_size=True,
                                          num_classes=0), _cfg("ogvl_dist", 1.0, _IMAGENET, "mit")),
    },
    "block_layouts": {
        "vit_small_patch16_36x1_224": (_arch(16, 384, 36, 6, init_values=1e-5), _UNTRAINED),
        **{f"vit_{size}_patch16_18x2_224": (_arch(16, dim, 18, heads, init_values=1e-5, block_type="parallel", num_parallel=2),
                                            _UNTRAINED) for size, dim, heads in (("small", 384, 6), ("base", 768, 12))},
        "vit_base_patch16_rpn_224": (_v("base", 16, 224, qkv_bias=False, init_values=1e-5, class_token=False,
                                        global_pool="avg", block_type="res_post_norm"), _cfg("sw_in1k", 0.9, _INCEPTION)),
        **{f"vit_{size}_patch{patch}_xp_224": (_v(size, patch, 224, **_XP), _UNTRAINED)
           for size, patch in (("base", 16), ("large", 14), ("huge", 14))},
    },
    "beit3": {  # scale norms in attention and MLP, average pooling after the class token, eps 1e-5
        f"beit3_{size}_patch{patch}_{img}": (
            _v(sizes, patch, img, global_pool="avg", scale_norm=True, norm_eps=1e-5),
            _cfg("untrained" if size == "giant" else "in22k_ft_in1k", 1.0, _IMAGENET))
        for size, sizes, patch, img in (("base", "base", 16, 224), ("large", "large", 16, 224),
                                        ("giant", "giant_beit3", 14, 224), ("giant", "giant_beit3", 14, 336))
    },
    "aimv2": {  # Apple's AIMv2 encoders: RMS norms (also on the patch embedding), bias-free SwiGLU blocks
        f"aimv2_{size}_patch14_{img}": (_arch(14, *dims, img=img, **_AIMV2), _cfg("apple_pt", 1.0, _OPENAI, "apple-ascl"))
        for size, dims in (("large", (1024, 24, 8, 2.75)), ("huge", (1536, 24, 12, 2.6667)), ("1b", (2048, 24, 16, 2.75)),
                           ("3b", (3072, 24, 24, 2.6667)))
        for img in (224, 336, 448)
    },
    "test": {
        "test_vit": (_v("test", 16, 160, dynamic_img_size=True), _cfg("r160_in1k", 0.95, _INCEPTION)),
        "test_vit2": (_v("test2", 16, 160, dynamic_img_size=True, **_REG_GAP), _cfg("r160_in1k", 0.95, _INCEPTION)),
        "test_vit3": (_v("test3", 16, 160, pool_include_prefix=True, **dict(_REG_GAP, global_pool="map")),
                      _cfg("r160_in1k", 0.95, _INCEPTION)),
        "test_vit4": (_v("test4", 16, 160, dynamic_img_size=True, norm_layer="rmsnorm", **_REG_GAP),
                      _cfg("r160_in1k", 0.95, _INCEPTION)),
    },
}

PRESETS: dict[str, dict] = {name: arch for rows in _FAMILIES.values() for name, (arch, _) in rows.items()}
PRETRAINED_CFG: dict[str, dict] = {name: cfg for rows in _FAMILIES.values() for name, (_, cfg) in rows.items()}

