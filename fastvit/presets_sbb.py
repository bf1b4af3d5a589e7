"""timm's "better ViT baselines" (``sbb``) family under timm 1.0.29's names: small-to-mid widths
with LayerScale and register tokens, average pooling, and its experimental twins with
differential attention (``dwee``, ``dlittle``) and parallel blocks (``pwee``, ``dpwee``).

A name reads ``vit_<size>_patch16_<tokens>_<pool>_<img>``: the size fixes the widths (and, for
the twins, the block), the tokens and pool the prefix and head. :mod:`fastvit.presets` merges
these into ``PRESETS``.
"""

from __future__ import annotations

import re

from .presets_modern import _INCEPTION, _arch, _cfg

_SIZES = {  # size: embed_dim, depth, heads, mlp_ratio, options over the recipe (the twins' blocks)
    "wee": (256, 14, 4, 5.0, {}),
    "dwee": (256, 14, 4, 5.0, dict(attn_layer="diff")),
    "pwee": (256, 16, 4, 5.0, dict(block_type="parallel_scaling")),
    "dpwee": (256, 16, 4, 5.0, dict(block_type="diff_parallel_scaling")),
    "little": (320, 14, 5, 5.6, {}),
    "dlittle": (320, 14, 5, 5.6, dict(attn_layer="diff")),
    "medium": (512, 12, 8, 4.0, {}),
    "mediumd": (512, 20, 8, 4.0, {}),
    "betwixt": (640, 12, 10, 4.0, {}),
    "base": (768, 12, 12, 4.0, dict(init_values=None)),  # no LayerScale
    "so150m": (896, 18, 14, 2.572, {}),
    "so150m2": (832, 21, 13, 2.6153846153846154, {}),
}
# The recipes by prefix tokens and pool: registers with the position embedding on the patches
# ("reg"), SoViT-150M's registers with it on all tokens ("so150m*"), no prefix at all ("gap").
_RECIPES = {
    "reg": dict(init_values=1e-5, class_token=False, no_embed_class=True, global_pool="avg"),
    "so150m_gap": dict(class_token=False, global_pool="avg", fc_norm=False),
    "so150m_map": dict(class_token=False, global_pool="map"),
    "so150m2_gap": dict(init_values=1e-5, qkv_bias=False, class_token=False, global_pool="avg"),
    "gap": dict(class_token=False, global_pool="avg", qkv_bias=False, init_values=1e-6, fc_norm=False),
}
_NAMES = {  # name: (tag, crop_pct, crop_mode, num_classes) of timm's default weights
    "vit_wee_patch16_reg1_gap_256": ("sbb_in1k", 0.95, "center", 1000),
    "vit_dwee_patch16_reg1_gap_256": ("sbb_nadamuon_in1k", 0.95, "center", 1000),
    "vit_pwee_patch16_reg1_gap_256": ("sbb_in1k", 0.95, "center", 1000),
    "vit_dpwee_patch16_reg1_gap_256": ("sbb_nadamuon_in1k", 0.95, "center", 1000),
    "vit_little_patch16_reg1_gap_256": ("sbb_in12k_ft_in1k", 0.95, "center", 1000),
    "vit_little_patch16_reg4_gap_256": ("sbb_in1k", 0.95, "center", 1000),
    "vit_dlittle_patch16_reg1_gap_256": ("sbb_nadamuon_in1k", 0.95, "center", 1000),
    "vit_medium_patch16_reg1_gap_256": ("sbb_in1k", 0.95, "center", 1000),
    "vit_medium_patch16_reg4_gap_256": ("sbb_in12k_ft_in1k", 0.95, "center", 1000),
    "vit_medium_patch16_gap_240": ("sw_in12k", 0.95, "center", 11821),
    "vit_medium_patch16_gap_256": ("sw_in12k_ft_in1k", 0.95, "center", 1000),
    "vit_medium_patch16_gap_384": ("sw_in12k_ft_in1k", 0.95, "squash", 1000),
    "vit_mediumd_patch16_reg4_gap_256": ("sbb2_e200_in12k_ft_in1k", 0.95, "center", 1000),
    "vit_mediumd_patch16_reg4_gap_384": ("sbb2_e200_in12k_ft_in1k", 1.0, "center", 1000),
    "vit_betwixt_patch16_gap_256": ("untrained", 0.95, "center", 1000),
    "vit_betwixt_patch16_reg1_gap_256": ("sbb_in1k", 0.95, "center", 1000),
    "vit_betwixt_patch16_reg4_gap_256": ("sbb2_e200_in12k_ft_in1k", 0.95, "center", 1000),
    "vit_betwixt_patch16_reg4_gap_384": ("sbb2_e200_in12k_ft_in1k", 1.0, "center", 1000),
    "vit_base_patch16_reg4_gap_256": ("untrained", 0.9, "center", 1000),
    "vit_so150m_patch16_reg4_gap_256": ("sbb_e250_in12k_ft_in1k", 0.95, "center", 1000),
    "vit_so150m_patch16_reg4_gap_384": ("sbb_e250_in12k_ft_in1k", 1.0, "center", 1000),
    "vit_so150m_patch16_reg4_map_256": ("untrained", 0.9, "center", 1000),
    "vit_so150m2_patch16_reg1_gap_256": ("sbb_e200_in12k_ft_in1k", 1.0, "center", 1000),
    "vit_so150m2_patch16_reg1_gap_384": ("sbb_e200_in12k_ft_in1k", 1.0, "center", 1000),
    "vit_so150m2_patch16_reg1_gap_448": ("sbb_e200_in12k_ft_in1k", 1.0, "squash", 1000),
}


def _recipe(size: str, regs: str | None, pool: str) -> dict:
    if size.startswith("so150m"):
        return dict(_RECIPES[f"{size}_{pool}"], reg_tokens=int(regs))
    if regs is None:
        return _RECIPES["gap"]
    return dict(_RECIPES["reg"], reg_tokens=int(regs))


def _rows():
    for name, (tag, crop, mode, classes) in _NAMES.items():
        size, regs, pool, img = re.fullmatch(r"vit_(\w+?)_patch16_(?:reg(\d)_)?(gap|map)_(\d+)", name).groups()
        dim, depth, heads, mlp_ratio, options = _SIZES[size]
        arch = _arch(16, dim, depth, heads, mlp_ratio, img=int(img), num_classes=classes,
                     **{**_recipe(size, regs, pool), **options})
        yield name, arch, _cfg(tag, crop, _INCEPTION, crop_mode=mode)


_ROWS = list(_rows())
PRESETS: dict[str, dict] = {name: arch for name, arch, _ in _ROWS}
PRETRAINED_CFG: dict[str, dict] = {name: cfg for name, _, cfg in _ROWS}
