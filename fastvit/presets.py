"""The named presets (timm's names and sizes) and timm's ``pretrained_cfg`` for each."""

from __future__ import annotations

import difflib

from .config import ViTConfig
from .presets_modern import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD
from .presets_modern import PRESETS as MODERN_PRESETS
from .presets_modern import PRETRAINED_CFG as MODERN_CFG
from . import presets_hybrid, presets_research, presets_sbb


def _vit(patch, dim, depth, heads, img=224, **kw):
    return dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, img_size=img, **kw)


# Names and sizes as in timm. Ti 192/12/3, S 384/12/6, B 768/12/12, L 1024/24/16, H 1280/32/16.
PRESETS: dict[str, dict] = {
    "vit_tiny_patch16_224": _vit(16, 192, 12, 3),
    "vit_tiny_patch16_384": _vit(16, 192, 12, 3, img=384),
    "vit_small_patch16_224": _vit(16, 384, 12, 6),
    "vit_small_patch32_224": _vit(32, 384, 12, 6),
    "vit_small_patch16_384": _vit(16, 384, 12, 6, img=384),
    "vit_base_patch8_224": _vit(8, 768, 12, 12),
    "vit_base_patch16_224": _vit(16, 768, 12, 12),
    "vit_base_patch32_224": _vit(32, 768, 12, 12),
    "vit_base_patch16_384": _vit(16, 768, 12, 12, img=384),
    "vit_base_patch32_384": _vit(32, 768, 12, 12, img=384),
    "vit_large_patch16_224": _vit(16, 1024, 24, 16),
    "vit_large_patch14_224": _vit(14, 1024, 24, 16),
    "vit_large_patch16_384": _vit(16, 1024, 24, 16, img=384),
    "vit_huge_patch14_224": _vit(14, 1280, 32, 16, num_classes=0),  # timm's: in21k features, no head
    # The paper's hybrids (§3.1): a ResNetV2 stem of (blocks per stage); patch_size is its stride.
    "vit_small_r26_s32_224": _vit(32, 384, 12, 6, hybrid_layers=(2, 2, 2, 2)),
    "vit_base_r50_s16_224": _vit(16, 768, 12, 12, hybrid_layers=(3, 4, 9), num_classes=0),  # timm: in21k features, no head
    "vit_base_r50_s16_384": _vit(16, 768, 12, 12, img=384, hybrid_layers=(3, 4, 9)),
    "vit_large_r50_s32_384": _vit(32, 1024, 24, 16, img=384, hybrid_layers=(3, 4, 6, 3)),
    "deit_tiny_patch16_224": _vit(16, 192, 12, 3),
    "deit_small_patch16_224": _vit(16, 384, 12, 6),
    "deit_base_patch16_224": _vit(16, 768, 12, 12),
    "deit_tiny_distilled_patch16_224": _vit(16, 192, 12, 3, distilled=True),
    "deit_small_distilled_patch16_224": _vit(16, 384, 12, 6, distilled=True),
    "deit_base_distilled_patch16_224": _vit(16, 768, 12, 12, distilled=True),
    **MODERN_PRESETS,  # DeiT III, DINOv2, CLIP, SigLIP: fastvit.presets_modern
    **presets_sbb.PRESETS,  # timm's better-baselines family (wee ... so150m2)
    **presets_research.PRESETS,  # FlexiViT, EVA-L, I-JEPA, TIPSv2, parallel / post-norm blocks, ...
    **presets_hybrid.PRESETS,  # the other hybrid stems: ResNetV2 stem-only, ResNet-D, MobileCLIP
}
# timm's default weights (tag and preprocessing) of the presets outside the paper's table
MODERN_CFG = {**MODERN_CFG, **presets_sbb.PRETRAINED_CFG, **presets_research.PRETRAINED_CFG,
              **presets_hybrid.PRETRAINED_CFG}


# -- timm's pretrained_cfg per preset -------------------------------------------------------------
# timm 1.0.29's default weights for each name (the first tag it lists): the preprocessing
# its data helpers read from model.pretrained_cfg. fastvit never downloads, so no url / hub id.
_DEFAULT_TAGS = {
    "vit_base_patch8_224": "augreg2_in21k_ft_in1k", "vit_base_patch16_224": "augreg2_in21k_ft_in1k",
    "vit_large_patch14_224": "untrained", "vit_huge_patch14_224": "orig_in21k",
    "vit_base_r50_s16_224": "orig_in21k", "vit_base_r50_s16_384": "orig_in21k_ft_in1k",
}


def pretrained_cfg_for(name: str | None, cfg: "ViTConfig") -> dict:
    """timm's ``pretrained_cfg`` for preset ``name``; for a config without a preset name,
    timm's data defaults (ImageNet mean/std, crop 0.875) at the config's input size."""
    classifier = ("head", "head_dist") if cfg.distilled else "head"
    common = dict(url="", architecture=name, tag=None, custom_load=False, fixed_input_size=True,
                  interpolation="bicubic", crop_mode="center", pool_size=None, first_conv="patch_embed.proj",
                  classifier=classifier, license="apache-2.0")
    if name not in PRESETS:
        return dict(common, input_size=(cfg.in_chans, *cfg.img_size), crop_pct=0.875, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, num_classes=cfg.num_classes)
    preset = ViTConfig(**PRESETS[name])
    deit = name.startswith("deit_")
    if preset.hybrid_layers is not None:  # the image meets the stem's first convolution
        common["first_conv"] = {"resnetd": "patch_embed.backbone.conv1.0", "mci": "patch_embed.backbone.0.conv"}.get(
            preset.hybrid_stem, "patch_embed.backbone.stem.conv" if preset.hybrid_layers else "patch_embed.backbone.conv")
    if name in MODERN_CFG:
        return dict(common, **MODERN_CFG[name], input_size=(preset.in_chans, *preset.img_size),
                    num_classes=preset.num_classes)
    return dict(
        common, tag="fb_in1k" if deit else _DEFAULT_TAGS.get(name, "augreg_in21k_ft_in1k"),
        input_size=(preset.in_chans, *preset.img_size),
        crop_pct=0.9 if deit or preset.img_size[0] < 384 else 1.0,
        mean=IMAGENET_MEAN if deit else INCEPTION_MEAN, std=IMAGENET_STD if deit else INCEPTION_STD,
        num_classes=preset.num_classes,
    )


def list_models(pattern: str = "*") -> list[str]:
    """Preset names, sorted; ``pattern`` is a shell-style wildcard (``"vit_base*"``)."""
    import fnmatch

    return sorted(n for n in PRESETS if fnmatch.fnmatch(n, pattern))


def get_config(name: str, **overrides) -> ViTConfig:
    """The preset's config with ``overrides``; ``"name.tag"`` (a pretrained tag) gives the name's."""
    if isinstance(name, str) and name not in PRESETS and name.partition(".")[0] in PRESETS:
        name = name.partition(".")[0]
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} fastvit.list_models() lists all {len(PRESETS)} presets.")
    return ViTConfig(**PRESETS[name]).replace(**overrides)
