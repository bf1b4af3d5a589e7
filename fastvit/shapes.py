"""The shapes fastvit's models run, derived from the presets: one table for every grid.

The compile check (:mod:`fastvit.aot.cases`), the kernel benchmarks
(``benchmarks/kernel_cases.py``), the GPU check's sweep and the CUDA test grids
read their widths, MLP widths, head dims, token counts and qk-norm layouts
here, so a new preset's shapes enter all of them with no other edit.

Two tiers:

- ``"wide"``: every shape of every preset (:func:`fastvit.presets.list_models`);
- ``"core"``: the shapes of :data:`CORE_PRESETS` (ViT-B, ViT-L, SigLIP So400m,
  ViT-H: head dims 64, 72 and 80, the widths 768 to 1280), what the default
  test runs and the first pass of a sweep cover.

Imports no Triton and nothing of the kernels; the preset table is read once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

TIERS = ("core", "wide")
# The presets whose shapes make the core tier, one per head dim class the models run most.
CORE_PRESETS = ("vit_base_patch16_224", "vit_large_patch16_224", "vit_so400m_patch14_siglip_378",
                "vit_huge_patch14_clip_224")  # fmt: skip


@dataclass(frozen=True)
class ModelShape:
    """One preset's shapes: ``width`` (embed dim), ``mlp_width`` (fc1's output), ``heads``,
    ``head_dim``, ``tokens`` (its sequence length, prefix tokens included) and ``qk_norm``."""

    preset: str
    width: int
    mlp_width: int
    heads: int
    head_dim: int
    tokens: int
    qk_norm: bool


@functools.lru_cache(maxsize=None)
def _all() -> tuple[ModelShape, ...]:
    from fastvit.presets import get_config, list_models

    shapes = []
    for name in list_models():
        cfg = get_config(name)
        shapes.append(ModelShape(name, cfg.embed_dim, cfg.mlp_hidden_dim, cfg.num_heads, cfg.embed_dim // cfg.num_heads,
                                 cfg.seq_len, bool(cfg.qk_norm)))  # fmt: skip
    return tuple(shapes)


def _check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")


def model_shapes(tier: str = "wide") -> tuple[ModelShape, ...]:
    """Every preset's shapes (``"wide"``), or those of :data:`CORE_PRESETS` (``"core"``), in that order."""
    _check_tier(tier)
    if tier == "wide":
        return _all()
    by_name = {s.preset: s for s in _all()}
    return tuple(by_name[name] for name in CORE_PRESETS)


def widths(tier: str = "wide") -> tuple[int, ...]:
    """The embed dims (LayerNorm widths), ascending."""
    return tuple(sorted({s.width for s in model_shapes(tier)}))


def mlp_shapes(tier: str = "wide") -> tuple[tuple[int, int], ...]:
    """``(width, mlp_width)`` of the MLPs (fc1: width -> mlp_width, fc2 back), ascending."""
    return tuple(sorted({(s.width, s.mlp_width) for s in model_shapes(tier)}))


def head_dims(tier: str = "wide") -> tuple[int, ...]:
    """The attention head dims, ascending."""
    return tuple(sorted({s.head_dim for s in model_shapes(tier)}))


def token_counts(tier: str = "wide", head_dim: int | None = None) -> tuple[int, ...]:
    """The sequence lengths the models attend over (at ``head_dim`` when given), ascending."""
    return tuple(sorted({s.tokens for s in model_shapes(tier) if head_dim in (None, s.head_dim)}))


def attention_shapes(tier: str = "wide") -> tuple[tuple[int, int, int], ...]:
    """``(head_dim, heads, tokens)`` per head dim, from the first preset of the tier with that
    head dim: its heads and its length, one more when that is a multiple of 16 -- the launch
    whose last key block is masked and whose lengths carry no divisibility (what a class
    token gives); a multiple of 16 compiles to a subset of that code."""
    found = {}
    for s in model_shapes(tier):
        found.setdefault(s.head_dim, (s.heads, s.tokens if s.tokens % 16 else s.tokens + 1))
    return tuple((head_dim, heads, tokens) for head_dim, (heads, tokens) in sorted(found.items()))


def qk_norm_layouts(tier: str = "wide") -> dict[int, int]:
    """``head_dim -> heads`` of the per-head q / k slices qk-norm normalizes in place
    (rows of ``head_dim`` at strides ``(3 * heads * head_dim, head_dim)``), one per head dim."""
    return {head_dim: heads for head_dim, heads, _ in attention_shapes(tier)}


# -- rotary attention (the eva family: EVA-02, DINOv3, PE, RoPE-ViT, ...) -------------------------

# The rotary presets whose shapes make the core tier: DINOv3-B/L (4 registers, DINOv3's half pairs)
# and EVA-02-B (a class token, EVA's interleaved pairs).
CORE_ROPE_PRESETS = ("vit_base_patch16_dinov3", "vit_large_patch16_dinov3", "eva02_base_patch14_224")


@dataclass(frozen=True)
class RopeShape:
    """One rotary preset's attention: ``heads``, ``head_dim``, ``tokens`` at its native size (prefix
    included), ``num_prefix`` unrotated tokens (class, registers), ``rotate_half`` (DINOv3's pair
    layout, else EVA's interleaved one) and ``per_head`` tables (mixed, learned-frequency RoPE)."""

    preset: str
    heads: int
    head_dim: int
    tokens: int
    num_prefix: int
    rotate_half: bool
    per_head: bool


@functools.lru_cache(maxsize=None)
def _rope_all() -> tuple[RopeShape, ...]:
    from fastvit.presets_eva import get_eva_config, list_eva_models

    found = []
    for name in list_eva_models():
        cfg = get_eva_config(name)
        if cfg.use_rot_pos_emb:
            grid = cfg.grid_size
            found.append(RopeShape(name, cfg.num_heads, cfg.embed_dim // cfg.num_heads,
                                   cfg.num_prefix_tokens + grid[0] * grid[1], cfg.num_prefix_tokens,
                                   bool(cfg.rope_rotate_half), cfg.rope_type == "mixed"))  # fmt: skip
    return tuple(found)


def rope_shapes(tier: str = "wide") -> tuple[RopeShape, ...]:
    """Every rotary eva preset's attention shape (``"wide"``), or those of :data:`CORE_ROPE_PRESETS`."""
    _check_tier(tier)
    if tier == "wide":
        return _rope_all()
    by_name = {s.preset: s for s in _rope_all()}
    return tuple(by_name[name] for name in CORE_ROPE_PRESETS)
