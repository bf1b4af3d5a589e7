""":class:`NaFlexConfig`: timm's ``NaFlexVitCfg`` fields that its ``naflexvit_*`` models use (same
names and defaults), plus the model-level ``in_chans`` / ``num_classes`` and fastvit's
``norm_impl`` / ``linear_impl`` / ``varlen_impl``; the 8 named presets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import to_2tuple
from ..layers.activations import ACTIVATIONS
from ..layers.impls import LINEAR_IMPLS, NORM_IMPLS
from ..layers.varlen import VARLEN_IMPLS

NAFLEX_POOLS = ("avg", "max", "avgmax", "token", "map")
POS_EMBEDS = ("learned", "factorized")


@dataclass
class NaFlexConfig:
    """timm's ``NaFlexVitCfg`` (the options its 8 names use; same defaults) + fastvit's impl switches."""

    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    init_values: float | None = None
    drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    class_token: bool = False
    reg_tokens: int = 0
    pos_embed: str = "learned"
    pos_embed_grid_size: tuple[int, int] = (16, 16)
    pos_embed_interp_mode: str = "bicubic"
    pos_embed_ar_preserving: bool = False
    final_norm: bool = True
    fc_norm: bool | None = None
    global_pool: str = "map"
    attn_pool_num_heads: int | None = None
    attn_pool_mlp_ratio: float | None = None
    act_layer: str = "gelu"
    norm_eps: float = 1e-6
    in_chans: int = 3
    num_classes: int = 1000
    norm_impl: str = "auto"
    linear_impl: str = "auto"
    varlen_impl: str | None = None  # None: "auto" where fastvit.layers.varlen has it, else "torch"

    def __post_init__(self):
        self.pos_embed_grid_size = to_2tuple(self.pos_embed_grid_size, "pos_embed_grid_size")
        for name in ("patch_size", "embed_dim", "depth", "num_heads", "in_chans"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.varlen_impl is None:
            self.varlen_impl = "auto" if "auto" in VARLEN_IMPLS else "torch"
        choices = (("global_pool", NAFLEX_POOLS), ("pos_embed", POS_EMBEDS), ("act_layer", tuple(ACTIVATIONS)),
                   ("pos_embed_interp_mode", ("bicubic", "bilinear")),
                   ("norm_impl", tuple(NORM_IMPLS)), ("linear_impl", tuple(LINEAR_IMPLS)),
                   ("varlen_impl", tuple(VARLEN_IMPLS)))
        for name, valid in choices:
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        if self.num_classes < 0 or self.reg_tokens < 0:
            raise ValueError(f"num_classes and reg_tokens must be >= 0, got {self.num_classes}, {self.reg_tokens}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True")

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def img_size(self) -> tuple[int, int]:
        """The image size the position table is native to (grid x patch); any size runs."""
        return self.pos_embed_grid_size[0] * self.patch_size, self.pos_embed_grid_size[1] * self.patch_size

    @property
    def use_fc_norm(self) -> bool:
        """timm's rule: ``fc_norm`` None means "with avg pooling"; it replaces the final norm."""
        return self.global_pool == "avg" if self.fc_norm is None else bool(self.fc_norm)

    def replace(self, **changes) -> "NaFlexConfig":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown NaFlexVit option(s) {unknown}; valid: {sorted(names)}")
        return dataclasses.replace(self, **changes)


_BASE = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
_SO150M2 = dict(patch_size=16, embed_dim=832, depth=21, num_heads=13, mlp_ratio=34 / 13, init_values=1e-5,
                qkv_bias=False, reg_tokens=1)

# timm 1.0.29's naflexvit_* names -> their NaFlexVitCfg (timm's register functions)
NAFLEX_PRESETS: dict[str, dict] = {
    "naflexvit_base_patch16_gap": dict(**_BASE, init_values=1e-5, global_pool="avg", reg_tokens=4, fc_norm=True),
    "naflexvit_base_patch16_par_gap": dict(**_BASE, init_values=1e-5, pos_embed_ar_preserving=True, global_pool="avg",
                                           reg_tokens=4, fc_norm=True),
    "naflexvit_base_patch16_parfac_gap": dict(**_BASE, init_values=1e-5, pos_embed_ar_preserving=True,
                                              pos_embed="factorized", global_pool="avg", reg_tokens=4, fc_norm=True),
    "naflexvit_base_patch16_map": dict(**_BASE, init_values=1e-5, global_pool="map", reg_tokens=1),
    "naflexvit_so150m2_patch16_reg1_gap": dict(**_SO150M2, global_pool="avg", fc_norm=True),
    "naflexvit_so150m2_patch16_reg1_map": dict(**_SO150M2, global_pool="map"),
    "naflexvit_base_patch16_siglip": dict(**_BASE, act_layer="gelu_tanh", global_pool="map"),
    "naflexvit_so400m_patch16_siglip": dict(patch_size=16, embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362,
                                            act_layer="gelu_tanh", global_pool="map"),
}


def list_naflex_models(pattern: str = "*") -> list[str]:
    import fnmatch

    return sorted(n for n in NAFLEX_PRESETS if fnmatch.fnmatch(n, pattern))


def get_naflex_config(name: str, **overrides) -> NaFlexConfig:
    """The :class:`NaFlexConfig` of preset ``name`` with ``overrides`` (NaFlexConfig fields)."""
    if name not in NAFLEX_PRESETS:
        raise ValueError(f"unknown NaFlexVit preset {name!r}; valid: {sorted(NAFLEX_PRESETS)}")
    return NaFlexConfig(**NAFLEX_PRESETS[name]).replace(**overrides)
