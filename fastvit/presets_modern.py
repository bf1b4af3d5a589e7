"""The modern families' presets under timm 1.0.29's names: DeiT III, DINOv2, CLIP and SigLIP
image towers, each with timm's default-weights ``pretrained_cfg`` (tag and preprocessing).

Sizes live in one table per family; a name's other parts (patch, image size, ``_quickgelu``,
``_gap``) are read from the name itself. :mod:`fastvit.presets` merges these into ``PRESETS``.
The SigLIP 2 weights (tag ``v2_webli``) are the same architecture under the same names. Left out,
not being timm's VisionTransformer: EVA CLIP (timm's ``Eva``: q / v biases without a k bias;
EVA-02 adds rotary position embedding and a SwiGLU with a norm inside), NaFlex SigLIP 2
(variable patch grids), ResNet CLIP towers.
"""

from __future__ import annotations

import re

INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN, OPENAI_CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
_IMAGENET, _INCEPTION = (IMAGENET_MEAN, IMAGENET_STD), (INCEPTION_MEAN, INCEPTION_STD)
_OPENAI = (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


def _arch(patch, dim, depth, heads, mlp_ratio=4.0, img=224, **kw):
    return dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio, img_size=img, **kw)


def _cfg(tag, crop_pct, norm, license="apache-2.0", crop_mode="center"):
    return dict(tag=tag, crop_pct=crop_pct, crop_mode=crop_mode, mean=norm[0], std=norm[1], license=license)


# -- DeiT III: LayerScale (1e-6), position embedding on the patches only ---------------------------
_DEIT3 = {"small": (16, 384, 12, 6), "medium": (16, 512, 12, 8), "base": (16, 768, 12, 12),
          "large": (16, 1024, 24, 16), "huge": (14, 1280, 32, 16)}
_DEIT3_IMGS = {"small": (224, 384), "medium": (224,), "base": (224, 384), "large": (224, 384), "huge": (224,)}


def _deit3():
    for size, imgs in _DEIT3_IMGS.items():
        for img in imgs:
            yield (f"deit3_{size}_patch{_DEIT3[size][0]}_{img}",
                   _arch(*_DEIT3[size], img=img, no_embed_class=True, init_values=1e-6),
                   _cfg("fb_in1k", 0.9 if img == 224 else 1.0, _IMAGENET))


# -- DINOv2 (518 px: 37x37 patches of 14), LayerScale; giant has a SwiGLU MLP. The reg4 twins add
# four register tokens and put the position embedding on the patches only.
_DINOV2 = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16), "giant": (1536, 40, 24)}


def _dinov2():
    for size, dims in _DINOV2.items():
        mlp = dict(mlp_ratio=2.66667 * 2, mlp_layer="swiglu", act_layer="silu") if size == "giant" else {}
        for reg, reg_kw in (("", {}), ("_reg4", dict(reg_tokens=4, no_embed_class=True))):
            yield (f"vit_{size}_patch14{reg}_dinov2",
                   _arch(14, *dims, img=518, num_classes=0, init_values=1e-5, **mlp, **reg_kw),
                   _cfg("lvd142m", 1.0, _IMAGENET))


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


def _clip():
    for name, (classes, tag, crop, mode, norm, license) in _CLIP_NAMES.items():
        arch, quick_gelu, img = re.fullmatch(r"vit_(\w+?)_clip(_quickgelu)?_(\d+)", name).groups()
        act = "quick_gelu" if quick_gelu else "gelu"
        yield (name, _arch(*_CLIP_SIZES[arch], img=int(img), num_classes=classes, pre_norm=True, norm_eps=1e-5,
                           act_layer=act), _cfg(tag, crop, norm, license, mode))


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


def _siglip():
    for arch, (map_imgs, gap_imgs) in _SIGLIP_NAMES.items():
        for gap, imgs in (("", map_imgs), ("_gap", gap_imgs)):
            for img in imgs:
                name = f"vit_{arch}_siglip{gap}_{img}"
                act = "gelu_tanh" if arch in _SIGLIP_TANH or f"{arch}_{img}" in _SIGLIP_TANH else "gelu"
                pool = dict(global_pool="avg", fc_norm=False) if gap else dict(global_pool="map")
                yield (name, _arch(*_SIGLIP_SIZES[arch], img=img, num_classes=0, class_token=False, act_layer=act,
                                   **pool), _cfg(*_SIGLIP_TAGS.get(name, ("v2_webli", 0.9)), _INCEPTION))


_ROWS = [*_deit3(), *_dinov2(), *_clip(), *_siglip()]
PRESETS: dict[str, dict] = {name: arch for name, arch, _ in _ROWS}
# timm's default weights per name: tag and preprocessing (the fields every preset shares: presets.py)
PRETRAINED_CFG: dict[str, dict] = {name: cfg for name, _, cfg in _ROWS}
