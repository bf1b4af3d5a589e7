"""The modern families' presets under timm 1.0.29's names: DeiT III, DINOv2, CLIP and SigLIP
image towers, each with timm's default-weights ``pretrained_cfg`` (tag and preprocessing).

Sizes live in one table per family; a name's other parts (patch, image size, ``_quickgelu``,
``_gap``) are read from the name itself. :mod:`fastvit.presets` merges these into ``PRESETS``.
Left out, because fastvit cannot compute them: EVA / EVA-02 CLIP (rotary position embedding,
SwiGLU with a norm inside), NaFlex SigLIP (variable patch grids), ResNet CLIP towers.
"""

from __future__ import annotations

import re

INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN, OPENAI_CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
_IMAGENET, _INCEPTION, _OPENAI = (IMAGENET_MEAN, IMAGENET_STD), (INCEPTION_MEAN, INCEPTION_STD), (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


def _arch(patch, dim, depth, heads, mlp_ratio=4.0, img=224, **kw):
    return dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio, img_size=img, **kw)


def _cfg(tag, crop_pct, norm, license="apache-2.0", crop_mode="center"):
    return dict(tag=tag, crop_pct=crop_pct, crop_mode=crop_mode, mean=norm[0], std=norm[1], license=license)


PRESETS: dict[str, dict] = {}
PRETRAINED_CFG: dict[str, dict] = {}  # timm's default weights per name (fixed fields come from presets.py)

# -- DeiT III: LayerScale (1e-6), position embedding on the patches only ---------------------------
_DEIT3 = {"small": (16, 384, 12, 6), "medium": (16, 512, 12, 8), "base": (16, 768, 12, 12),
          "large": (16, 1024, 24, 16), "huge": (14, 1280, 32, 16)}
for _size, _imgs in (("small", (224, 384)), ("medium", (224,)), ("base", (224, 384)), ("large", (224, 384)),
                     ("huge", (224,))):
    for _img in _imgs:
        _name = f"deit3_{_size}_patch{_DEIT3[_size][0]}_{_img}"
        PRESETS[_name] = _arch(*_DEIT3[_size], img=_img, no_embed_class=True, init_values=1e-6)
        PRETRAINED_CFG[_name] = _cfg("fb_in1k", 0.9 if _img == 224 else 1.0, _IMAGENET)

# -- DINOv2 (518 px: 37x37 patches of 14), LayerScale; giant has a SwiGLU MLP. The reg4 twins add
# four register tokens and put the position embedding on the patches only.
_DINOV2 = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16), "giant": (1536, 40, 24)}
for _size, _dims in _DINOV2.items():
    _mlp = dict(mlp_ratio=2.66667 * 2, mlp_layer="swiglu", act_layer="silu") if _size == "giant" else {}
    for _reg, _reg_kw in (("", {}), ("_reg4", dict(reg_tokens=4, no_embed_class=True))):
        _name = f"vit_{_size}_patch14{_reg}_dinov2"
        PRESETS[_name] = _arch(14, *_dims, img=518, num_classes=0, init_values=1e-5, **_mlp, **_reg_kw)
        PRETRAINED_CFG[_name] = _cfg("lvd142m", 1.0, _IMAGENET)

# -- CLIP image towers: a LayerNorm before the blocks (and no patch bias), eps 1e-5; the head is
# the image projection (its width: num_classes) or an ImageNet classifier after fine-tuning.
_CLIP_SIZES = {  # arch: patch, embed_dim, depth, heads, mlp_ratio
    "xsmall_patch16": (16, 256, 10, 4), "medium_patch16": (16, 512, 12, 8), "medium_patch32": (32, 512, 12, 8),
    "betwixt_patch32": (32, 640, 12, 10), "base_patch16": (16, 768, 12, 12), "base_patch32": (32, 768, 12, 12),
    "base_patch16_plus": (16, 896, 12, 14), "large_patch14": (14, 1024, 24, 16), "huge_patch14": (14, 1280, 32, 16),
    "giant_patch14": (14, 1408, 40, 16, 4.363636363636363), "gigantic_patch14": (14, 1664, 48, 16, 4.923076923076923),
}
_CLIP_NAMES = {  # name: (num_classes, tag, crop_pct, crop_mode, mean/std, license)
    "vit_base_patch16_clip_224": (1000, "laion2b_ft_in12k_in1k", 0.95, "center", _OPENAI, "apache-2.0"),
    "vit_base_patch16_clip_384": (1000, "laion2b_ft_in12k_in1k", 1.0, "squash", _OPENAI, "apache-2.0"),
    "vit_base_patch16_clip_quickgelu_224": (512, "metaclip_2pt5b", 1.0, "center", _OPENAI, "cc-by-nc-4.0"),
    "vit_base_patch16_plus_clip_240": (640, "laion400m_e32", 1.0, "center", _OPENAI, "mit"),
    "vit_base_patch32_clip_224": (1000, "laion2b_ft_in12k_in1k", 0.9, "center", _OPENAI, "apache-2.0"),
    "vit_base_patch32_clip_256": (512, "datacompxl", 1.0, "center", _OPENAI, "apache-2.0"),
    "vit_base_patch32_clip_384": (1000, "laion2b_ft_in12k_in1k", 1.0, "center", _OPENAI, "apache-2.0"),
    "vit_base_patch32_clip_448": (1000, "laion2b_ft_in12k_in1k", 1.0, "center", _OPENAI, "apache-2.0"),
    "vit_base_patch32_clip_quickgelu_224": (512, "laion400m_e32", 0.9, "center", _OPENAI, "mit"),
    "vit_betwixt_patch32_clip_224": (512, "tinyclip_laion400m", 0.9, "center", _OPENAI, "mit"),
    "vit_giant_patch14_clip_224": (1024, "laion2b", 1.0, "center", _OPENAI, "apache-2.0"),
    "vit_gigantic_patch14_clip_224": (1280, "laion2b", 1.0, "center", _OPENAI, "apache-2.0"),
    "vit_gigantic_patch14_clip_378": (1280, "metaclip2_worldwide", 1.0, "squash", _OPENAI, "cc-by-nc-4.0"),
    "vit_gigantic_patch14_clip_quickgelu_224": (1280, "metaclip_2pt5b", 1.0, "center", _OPENAI, "cc-by-nc-4.0"),
    "vit_huge_patch14_clip_224": (1000, "laion2b_ft_in12k_in1k", 1.0, "center", _OPENAI, "apache-2.0"),
    "vit_huge_patch14_clip_336": (1000, "laion2b_ft_in12k_in1k", 1.0, "squash", _OPENAI, "apache-2.0"),
    "vit_huge_patch14_clip_378": (1024, "dfn5b", 1.0, "center", _OPENAI, "apple-ascl"),
    "vit_huge_patch14_clip_quickgelu_224": (1024, "dfn5b", 1.0, "center", _OPENAI, "apple-ascl"),
    "vit_huge_patch14_clip_quickgelu_378": (1024, "dfn5b", 1.0, "center", _OPENAI, "apple-ascl"),
    "vit_large_patch14_clip_224": (1000, "laion2b_ft_in12k_in1k", 1.0, "center", _INCEPTION, "apache-2.0"),
    "vit_large_patch14_clip_336": (1000, "laion2b_ft_in12k_in1k", 1.0, "squash", _INCEPTION, "apache-2.0"),
    "vit_large_patch14_clip_quickgelu_224": (768, "dfn2b", 1.0, "center", _OPENAI, "apple-ascl"),
    "vit_large_patch14_clip_quickgelu_336": (768, "openai", 1.0, "center", _OPENAI, "apache-2.0"),
    "vit_medium_patch16_clip_224": (512, "tinyclip_yfcc15m", 0.9, "center", _OPENAI, "mit"),
    "vit_medium_patch32_clip_224": (512, "tinyclip_laion400m", 0.9, "center", _OPENAI, "mit"),
    "vit_xsmall_patch16_clip_224": (512, "tinyclip_yfcc15m", 0.9, "center", _OPENAI, "mit"),
}
for _name, (_classes, _tag, _crop, _mode, _norm, _license) in _CLIP_NAMES.items():
    _m = re.fullmatch(r"vit_(\w+?)_clip(_quickgelu)?_(\d+)", _name)
    _act = dict(act_layer="quick_gelu") if _m[2] else {}
    PRESETS[_name] = _arch(*_CLIP_SIZES[_m[1]], img=int(_m[3]), num_classes=_classes, pre_norm=True, norm_eps=1e-5, **_act)
    PRETRAINED_CFG[_name] = _cfg(_tag, _crop, _norm, _license, _mode)

# -- SigLIP / SigLIP 2 image towers: no class token; an attention-pool (MAP) head, or the "_gap"
# twins: the final norm on all tokens, then the average of the patches. No head (features).
_SIGLIP_SIZES = {  # arch: patch, embed_dim, depth, heads, mlp_ratio
    "base_patch16": (16, 768, 12, 12), "base_patch32": (32, 768, 12, 12), "large_patch16": (16, 1024, 24, 16),
    "so400m_patch14": (14, 1152, 27, 16, 3.7362), "so400m_patch16": (16, 1152, 27, 16, 3.7362),
    "giantopt_patch16": (16, 1536, 40, 16),
}
_SIGLIP_NAMES = {  # arch: (image sizes with the attention pool, with average pooling)
    "base_patch16": ((224, 256, 384, 512), (224, 256, 384, 512)), "base_patch32": ((256,), (256,)),
    "large_patch16": ((256, 384, 512), (256, 384, 512)), "so400m_patch14": ((224, 378, 384), (224, 378, 384, 448, 896)),
    "so400m_patch16": ((256, 384, 512), (256, 384, 512)), "giantopt_patch16": ((256, 384), (256, 384)),
}
# SigLIP 2 weights whose MLP uses tanh-approximated GELU, as timm builds them
_SIGLIP_TANH = {"base_patch32", "so400m_patch16", "giantopt_patch16", "large_patch16_512"}
_SIGLIP_TAGS = {  # name: (tag, crop_pct) where timm's default weights are not ("v2_webli", 0.9)
    "vit_so400m_patch14_siglip_384": ("webli", 0.9), "vit_so400m_patch14_siglip_gap_384": ("webli", 1.0),
    "vit_so400m_patch14_siglip_gap_448": ("pali_mix", 1.0), "vit_so400m_patch14_siglip_gap_896": ("pali_pt", 1.0),
}
for _a, (_map_imgs, _gap_imgs) in _SIGLIP_NAMES.items():
    for _gap, _imgs in (("", _map_imgs), ("_gap", _gap_imgs)):
        for _img in _imgs:
            _name = f"vit_{_a}_siglip{_gap}_{_img}"
            _act = "gelu_tanh" if _a in _SIGLIP_TANH or f"{_a}_{_img}" in _SIGLIP_TANH else "gelu"
            _pool = dict(global_pool="avg", fc_norm=False) if _gap else dict(global_pool="map")
            PRESETS[_name] = _arch(*_SIGLIP_SIZES[_a], img=_img, num_classes=0, class_token=False, act_layer=_act, **_pool)
            PRETRAINED_CFG[_name] = _cfg(*_SIGLIP_TAGS.get(_name, ("v2_webli", 0.9)), _INCEPTION)
