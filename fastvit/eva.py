"""timm's ``Eva`` family in fastvit: EVA / EVA-02, DINOv3, Perception Encoder, Naver's RoPE-ViT,
timm's SBB RoPE ViTs. Parameter names are timm's (``gamma_1``, ``q_bias`` / ``v_bias``,
``mlp.fc1_g`` / ``fc1_x``, ``attn.norm``, ``rope.freqs``...), so state dicts load strictly both ways.

:class:`EvaConfig` holds timm's ``Eva`` keyword arguments (``norm_eps`` for its ``norm_layer``)
plus fastvit's ``attn_impl`` / ``norm_impl`` / ``linear_impl``; :class:`Eva` resolves every
option once, at construction (:mod:`fastvit.layers.eva_block`, :mod:`fastvit.layers.rope`).
Named presets: :mod:`fastvit.presets_eva`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import to_2tuple
from .features import feature_take_indices
from .layers.attention import BACKENDS
from .layers.embed import PatchEmbed, resample_pos_embed
from .layers.eva_block import EvaAttention, EvaBlock, EvaBlockPostNorm, eva_mlp_layer
from .layers.impls import LINEAR_IMPLS, NORM_IMPLS
from .layers.linear import ResidualLinear
from .layers.pool import AttentionPoolLatent
from .layers.rope import ROPE_TYPES, TABLE_HALF, create_rope

EVA_POOLS = ("", "avg", "avgmax", "max", "token", "map")


@dataclass
class EvaConfig:
    """timm's ``Eva`` arguments (same names and defaults), ``norm_eps`` standing for ``norm_layer``."""

    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    global_pool: str = "avg"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    qkv_bias: bool = True
    qkv_fused: bool = True
    mlp_ratio: float = 4.0
    swiglu_mlp: bool = False
    swiglu_align_to: int = 0
    scale_mlp: bool = False
    scale_attn_inner: bool = False
    attn_type: str = "eva"
    drop_rate: float = 0.0
    pos_drop_rate: float = 0.0
    patch_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    init_values: float | None = None
    class_token: bool = True
    num_reg_tokens: int = 0
    no_embed_class: bool = False
    use_abs_pos_emb: bool = True
    use_rot_pos_emb: bool = False
    rope_type: str = "cat"
    rope_grid_offset: float = 0.0
    rope_grid_indexing: str = "ij"
    rope_temperature: float = 10000.0
    rope_rotate_half: bool = False
    use_post_norm: bool = False
    use_pre_transformer_norm: bool = False
    use_post_transformer_norm: bool | None = None
    use_fc_norm: bool | None = None
    attn_pool_num_heads: int | None = None
    attn_pool_mlp_ratio: float | None = None
    dynamic_img_size: bool = False
    dynamic_img_pad: bool = False
    ref_feat_shape: int | tuple[int, int] | None = None
    head_init_scale: float = 0.001
    attn_impl: str = "auto"
    norm_impl: str = "auto"
    linear_impl: str = "auto"

    def __post_init__(self):
        self.img_size = to_2tuple(self.img_size)
        if self.ref_feat_shape is not None:
            self.ref_feat_shape = to_2tuple(self.ref_feat_shape, "ref_feat_shape")
        for name in ("patch_size", "embed_dim", "depth", "num_heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        choices = (("global_pool", EVA_POOLS), ("attn_type", ("eva", "rope")), ("rope_type", ROPE_TYPES),
                   ("rope_grid_indexing", ("ij", "xy")), ("attn_impl", tuple(BACKENDS)),
                   ("norm_impl", tuple(NORM_IMPLS)), ("linear_impl", tuple(LINEAR_IMPLS)))
        for name, valid in choices:
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        if self.num_classes < 0 or self.num_reg_tokens < 0:
            raise ValueError(f"num_classes and num_reg_tokens must be >= 0, got {self.num_classes}, {self.num_reg_tokens}")
        if self.patch_drop_rate:
            raise ValueError("patch_drop_rate > 0 (timm's PatchDropout with rotary indices) is not supported by fastvit's Eva")
        if self.use_rot_pos_emb and self.rope_type == "mixed" and (self.embed_dim // self.num_heads) % 4:
            raise ValueError(f"mixed RoPE needs a head dim divisible by 4, got {self.embed_dim // self.num_heads}")

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.num_reg_tokens

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def fc_norm(self) -> bool:
        return self.use_fc_norm if self.use_fc_norm is not None else self.global_pool == "avg"

    @property
    def final_norm(self) -> bool:
        return self.use_post_transformer_norm if self.use_post_transformer_norm is not None else not self.fc_norm

    def replace(self, **changes) -> "EvaConfig":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown Eva option(s) {unknown}; valid: {sorted(names)}")
        return dataclasses.replace(self, **changes)


def _per_block(rope, depth):
    """Mixed RoPE: one table per block (entry i of (depth, heads, N, 2D))."""
    return rope.unbind(0)


def _shared(rope, depth):
    return (rope,) * depth


class Eva(nn.Module):
    """timm's ``Eva``: patch embedding, optional class / register tokens and absolute position
    embedding, rotary attention blocks, then timm's pooling ("avg", "token", "max", "avgmax",
    the PE attention pool "map", or "") and head. ``forward_features`` returns all tokens
    after the final norm; ``forward_intermediates`` has timm's signature."""

    def __init__(self, cfg: EvaConfig | None = None, **overrides):
        super().__init__()
        if cfg is not None and not isinstance(cfg, EvaConfig):
            raise TypeError(f"cfg must be a fastvit.eva.EvaConfig (or None), got {type(cfg).__name__}")
        cfg = (cfg or EvaConfig()).replace(**overrides)
        self.cfg = cfg
        d = cfg.embed_dim
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.no_embed_class = cfg.no_embed_class
        self.grad_checkpointing = False
        norm_cls = NORM_IMPLS[cfg.norm_impl][0]
        norm = functools.partial(norm_cls, eps=cfg.norm_eps)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, d, cfg.img_size, cfg.dynamic_img_size,
                                      bias=not cfg.use_pre_transformer_norm, dynamic_img_pad=cfg.dynamic_img_pad)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.num_reg_tokens, d)) if cfg.num_reg_tokens else None
        num_pos = cfg.grid_size[0] * cfg.grid_size[1] + (0 if cfg.no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, d)) if cfg.use_abs_pos_emb else None
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)
        self.rope = None
        if cfg.use_rot_pos_emb:
            self.rope = create_rope(cfg.rope_type, d, cfg.num_heads, cfg.depth,
                                    None if cfg.dynamic_img_size else cfg.grid_size, cfg.rope_temperature,
                                    cfg.rope_grid_indexing, cfg.rope_grid_offset, cfg.ref_feat_shape)
        self._block_ropes = _per_block if cfg.use_rot_pos_emb and cfg.rope_type == "mixed" else _shared
        self.norm_pre = norm(d) if cfg.use_pre_transformer_norm else nn.Identity()
        fc1_cls, act_cls, residual_cls, mlp_cls = LINEAR_IMPLS[cfg.linear_impl]
        if cfg.use_post_norm:  # the branch's norm follows its projection: no fused residual
            residual_cls = ResidualLinear
        if act_cls is nn.Identity:  # fc1 computes GELU in its epilogue
            fc1_cls = functools.partial(fc1_cls, approximate="none")
        else:
            fc1_cls, act_cls, mlp_cls = nn.Linear, nn.GELU, LINEAR_IMPLS["torch"][3]
        attn = functools.partial(
            EvaAttention, num_heads=cfg.num_heads, qkv_bias=cfg.qkv_bias, qkv_fused=cfg.qkv_fused,
            attn_type=cfg.attn_type, num_prefix_tokens=self.num_prefix_tokens, rotate=cfg.use_rot_pos_emb,
            rotate_half=cfg.rope_rotate_half, table_half=TABLE_HALF[cfg.rope_type], inner_norm=norm if cfg.scale_attn_inner else None,
            attn_drop=cfg.attn_drop_rate, proj_drop=cfg.proj_drop_rate, attn_impl=cfg.attn_impl, proj_layer=residual_cls,
        )
        mlp = eva_mlp_layer(d, cfg.mlp_ratio, swiglu=cfg.swiglu_mlp, align_to=cfg.swiglu_align_to,
                            scale_mlp=cfg.scale_mlp, norm_layer=norm, mlp_cls=mlp_cls, fc1_layer=fc1_cls,
                            act_layer=act_cls, fc2_layer=residual_cls, drop=cfg.proj_drop_rate, gate_impl=cfg.linear_impl)
        block_cls = EvaBlockPostNorm if cfg.use_post_norm else EvaBlock
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(
            block_cls(d, norm_layer=norm, attn_layer=attn, mlp_layer=mlp, drop_path=r, init_values=cfg.init_values)
            for r in rates
        )
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=d, reduction=cfg.patch_size) for i in range(cfg.depth)]
        self.norm = norm(d) if cfg.final_norm else nn.Identity()
        self.attn_pool = None
        if cfg.global_pool == "map":
            self.attn_pool = AttentionPoolLatent(d, cfg.attn_pool_num_heads or cfg.num_heads,
                                                 cfg.attn_pool_mlp_ratio or cfg.mlp_ratio, norm_eps=cfg.norm_eps)
        self.fc_norm = norm(d) if cfg.fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(d, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.pretrained_cfg = self.default_cfg = default_pretrained_cfg(cfg)
        self.init_weights()

    # -- timm's attributes ----------------------------------------------------------------

    num_features = embed_dim = head_hidden_size = property(lambda self: self.cfg.embed_dim)
    num_classes = property(lambda self: self.cfg.num_classes)
    global_pool = property(lambda self: self.cfg.global_pool)
    in_chans = property(lambda self: self.cfg.in_chans)
    dynamic_img_size = property(lambda self: self.cfg.dynamic_img_size)
    num_reg_tokens = property(lambda self: self.cfg.num_reg_tokens)
    has_class_token = property(lambda self: self.cfg.class_token)
    rope_mixed = property(lambda self: self._block_ropes is _per_block)

    def init_weights(self):
        """timm's Eva init: trunc-normal(0.02) Linear weights and tokens, zero biases, the
        residual projections divided by sqrt(2 * (block + 1)), the head scaled by ``head_init_scale``."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for t in (self.pos_embed, self.cls_token, self.reg_token):
            if t is not None:
                nn.init.trunc_normal_(t, std=0.02)
        with torch.no_grad():
            for i, blk in enumerate(self.blocks):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
            if self.cfg.head_init_scale and isinstance(self.head, nn.Linear):
                self.head.weight.mul_(self.cfg.head_init_scale)
        if self.attn_pool is not None:
            self.attn_pool.init_weights()

    def no_weight_decay(self) -> set[str]:
        nwd = {"pos_embed", "cls_token", "reg_token"}
        if self.rope is not None and hasattr(self.rope, "no_weight_decay"):
            nwd |= {f"rope.{p}" for p in self.rope.no_weight_decay()}
        return nwd

    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^cls_token|reg_token|pos_embed|patch_embed",
                    blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        """A fresh head for ``num_classes`` (0: none); ``global_pool`` changes the pooling (as timm's
        Eva: an attention pool, where built, keeps pooling)."""
        changes = dict(num_classes=num_classes)
        if global_pool is not None:
            changes["global_pool"] = global_pool
        cfg = self.cfg.replace(**changes)
        # the norms built stay what they are
        self.cfg = cfg.replace(use_fc_norm=self.cfg.fc_norm, use_post_transformer_norm=self.cfg.final_norm)
        w = self.patch_embed.proj.weight
        head = nn.Linear(self.cfg.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head = head.to(device=w.device, dtype=w.dtype).train(self.training)

    def set_input_size(self, img_size=None, patch_size=None):
        """A new native image size: the position embedding resampled (timm's bicubic, antialiased)
        and a fixed-size RoPE recomputed for the new grid, as timm's ``set_input_size``."""
        if patch_size is not None and to_2tuple(patch_size, "patch_size") != self.patch_embed.patch_size:
            raise ValueError(f"set_input_size: patch_size {patch_size} differs from the model's "
                             f"{self.patch_embed.patch_size}; fastvit does not resample the patch-embedding kernel")
        if img_size is None:
            return
        old = self.cfg.grid_size
        self.cfg = self.cfg.replace(img_size=img_size)
        self.patch_embed.set_input_size(self.cfg.img_size)
        if self.pos_embed is not None:
            prefix = 0 if self.no_embed_class else self.num_prefix_tokens
            with torch.no_grad():
                pos = resample_pos_embed(self.pos_embed.data, self.cfg.grid_size, old, prefix)
            self.pos_embed = nn.Parameter(pos, requires_grad=self.pos_embed.requires_grad)
        if self.rope is not None:
            self.rope.set_grid(self.cfg.grid_size)

    # -- embedding ------------------------------------------------------------------------

    def _check_input(self, x):
        cfg = self.cfg
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != cfg.in_chans:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected an image batch (B, {cfg.in_chans}, H, W), got {shape}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point image tensor, got dtype {x.dtype}")
        h, w = x.shape[-2:]
        p = cfg.patch_size
        if not cfg.dynamic_img_size and (h, w) != cfg.img_size:
            raise ValueError(f"expected image size {cfg.img_size[0]}x{cfg.img_size[1]}, got {h}x{w}; build the "
                             "model with dynamic_img_size=True (or img_size=...) for other sizes")
        if not cfg.dynamic_img_pad and (h, w) != cfg.img_size and (h % p or w % p or h < p or w < p):
            raise ValueError(f"image size {h}x{w} is not a whole number of {p}x{p} patches "
                             "(dynamic_img_pad=True pads it)")

    def _embed(self, x):
        """Image -> (tokens entering the first block, one RoPE table per block (None without RoPE), grid)."""
        self._check_input(x)
        grid = tuple(self.patch_embed.dynamic_feat_size((x.shape[-2], x.shape[-1])))
        x = self.patch_embed(x)
        pos = self.pos_embed
        if pos is not None and grid != self.cfg.grid_size:
            prefix = 0 if self.no_embed_class else self.num_prefix_tokens
            pos = resample_pos_embed(pos, grid, self.cfg.grid_size, prefix)
        prefix_tokens = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.no_embed_class and pos is not None:
            x = x + pos
        if prefix_tokens:
            x = torch.cat(prefix_tokens + [x], dim=1)
        if not self.no_embed_class and pos is not None:
            x = x + pos
        x = self.norm_pre(self.pos_drop(x))
        if self.rope is None:
            return x, (None,) * len(self.blocks), grid
        rope = self.rope(grid if self.cfg.dynamic_img_size else None)
        return x, self._block_ropes(rope, len(self.blocks)), grid

    def _run_block(self, block, x, rope):
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, rope, use_reentrant=False)
        return block(x, rope)

    # -- forward API ----------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, ropes, _ = self._embed(x)
        for block, rope in zip(self.blocks, ropes):
            x = self._run_block(block, x, rope)
        return self.norm(x)

    def pool(self, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
        if self.attn_pool is not None:  # timm's Eva: the attention pool reads every token
            return self.attn_pool(x)
        pool_type = self.cfg.global_pool if pool_type is None else pool_type
        if not pool_type:
            return x
        if pool_type == "token":
            return x[:, 0]
        patches = x[:, self.num_prefix_tokens:]
        if pool_type == "avg":
            return patches.mean(dim=1)
        if pool_type == "max":
            return patches.amax(dim=1)
        if pool_type == "avgmax":
            return 0.5 * (patches.amax(dim=1) + patches.mean(dim=1))
        if pool_type == "map":
            raise ValueError("pool_type 'map' needs the attention pool of a model built with global_pool='map'")
        raise ValueError(f"pool_type must be one of {EVA_POOLS}, got {pool_type!r}")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False,
                              attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        """timm's: outputs of the blocks in ``indices`` (an int n: the last n; None: all), as (B, D, h, w)
        maps ("NCHW") or patch tokens ("NLC"), each ``(features, prefix)`` with ``return_prefix_tokens``;
        returns ``(final tokens, list)``, or the list alone with ``intermediates_only``."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        if attn_mask is not None or is_causal:
            raise ValueError("attn_mask / is_causal are not supported: fastvit's Eva attends over all tokens")
        take, last = feature_take_indices(len(self.blocks), indices)
        wanted = set(take)
        b = x.shape[0]
        x, ropes, (gh, gw) = self._embed(x)
        blocks = self.blocks[: last + 1] if stop_early else self.blocks
        found = []
        for i, (block, rope) in enumerate(zip(blocks, ropes)):
            x = self._run_block(block, x, rope)
            if i in wanted:
                found.append(self.norm(x) if norm else x)
        n = self.num_prefix_tokens
        prefixes = [y[:, :n] for y in found]
        feats = [y[:, n:] for y in found]
        if output_fmt == "NCHW":
            feats = [y.reshape(b, gh, gw, -1).permute(0, 3, 1, 2).contiguous() for y in feats]
        if return_prefix_tokens and n:
            feats = list(zip(feats, prefixes))
        if intermediates_only:
            return feats
        return self.norm(x), feats

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        take, last = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.attn_pool = None
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, "")
        return take


def default_pretrained_cfg(cfg: EvaConfig) -> dict:
    """timm's data defaults (ImageNet mean / std, crop 0.875) at ``cfg``'s input size, for a model
    built without a preset name (:func:`fastvit.presets_eva.create_eva` sets the preset's)."""
    return dict(url="", architecture=None, tag=None, custom_load=False, input_size=(cfg.in_chans, *cfg.img_size),
                fixed_input_size=not cfg.dynamic_img_size, interpolation="bicubic", crop_pct=0.875,
                crop_mode="center", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), num_classes=cfg.num_classes,
                pool_size=None, first_conv="patch_embed.proj", classifier="head")
