"""timm's ``NaFlexVit`` in fastvit: every input becomes one packed batch of rows.

``model(x)`` takes what timm's takes, an image batch (B, C, H, W) or the padded dict
``{"patches", "patch_coord", "patch_valid"}`` of timm's NaFlex pipeline, and also a
:class:`~fastvit.naflex.Packed` batch from :func:`~fastvit.naflex.pack`. Whatever the input,
the model runs on its valid patches only, packed back to back with each image's prefix tokens
at the head of its sequence; attention goes through ``varlen_attention`` with the sequence
offsets. Outputs come back in the input's layout (padding rows of a dict batch are zeros).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..features import feature_take_indices
from ..layers.activations import GELU_APPROXIMATE, activation_class
from ..layers.impls import LINEAR_IMPLS, NORM_IMPLS
from ..layers.layer_scale import LayerScale
from ..layers.mlp import Mlp
from ..layers.pool import AttentionPoolLatent
from .blocks import NaFlexBlock, VarlenAttention, attention_pool_packed, pool_patches
from .config import NaFlexConfig
from .embeds import NaFlexEmbeds, TokenLayout, token_layout
from .inputs import as_packed, from_tokens, to_tokens


def _mlp_layer(cfg: NaFlexConfig):
    fc1_cls, act_cls, residual_cls, mlp_cls = LINEAR_IMPLS[cfg.linear_impl]
    kind = dict(hidden_dim=int(cfg.embed_dim * cfg.mlp_ratio), drop=cfg.proj_drop_rate, fc2_layer=residual_cls)
    if act_cls is nn.Identity and cfg.act_layer in GELU_APPROXIMATE:  # GELU in fc1's epilogue
        fc1 = functools.partial(fc1_cls, approximate=GELU_APPROXIMATE[cfg.act_layer])
        return functools.partial(mlp_cls, fc1_layer=fc1, act_layer=act_cls, **kind)
    return functools.partial(Mlp, fc1_layer=nn.Linear, act_layer=activation_class(cfg.act_layer), **kind)


class NaFlexVit(nn.Module):
    """timm's ``NaFlexVit`` (its parameter names; strict state-dict loads both ways)."""

    def __init__(self, cfg: NaFlexConfig | None = None, **overrides):
        super().__init__()
        if cfg is not None and not isinstance(cfg, NaFlexConfig):
            raise TypeError(f"cfg must be a fastvit.naflex.NaFlexConfig (or None), got {type(cfg).__name__}")
        cfg = (cfg or NaFlexConfig()).replace(**overrides)
        if cfg.attn_drop_rate:
            raise ValueError("attn_drop_rate > 0 is not supported: packed attention has no dropout")
        self.cfg = cfg
        d = cfg.embed_dim
        self.num_classes, self.in_chans, self.global_pool = cfg.num_classes, cfg.in_chans, cfg.global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = d
        self.num_prefix_tokens, self.num_reg_tokens = cfg.num_prefix_tokens, cfg.reg_tokens
        self.has_class_token = cfg.class_token
        self.patch_size = cfg.patch_size
        self.grad_checkpointing = False
        norm_cls, block_norm_cls = NORM_IMPLS[cfg.norm_impl]
        norm = functools.partial(norm_cls, eps=cfg.norm_eps)
        self.embeds = NaFlexEmbeds(cfg.patch_size, cfg.in_chans, d, class_token=cfg.class_token,
                                   reg_tokens=cfg.reg_tokens, pos_embed=cfg.pos_embed, grid_size=cfg.pos_embed_grid_size,
                                   interp_mode=cfg.pos_embed_interp_mode, ar_preserving=cfg.pos_embed_ar_preserving)
        residual_cls = LINEAR_IMPLS[cfg.linear_impl][2]
        attn = functools.partial(VarlenAttention, num_heads=cfg.num_heads, qkv_bias=cfg.qkv_bias,
                                 proj_drop=cfg.proj_drop_rate, varlen_impl=cfg.varlen_impl, proj_layer=residual_cls)
        scale = functools.partial(LayerScale, init_values=cfg.init_values) if cfg.init_values is not None else None
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.Sequential(*[
            NaFlexBlock(d, norm_layer=functools.partial(block_norm_cls, eps=cfg.norm_eps), attn_layer=attn,
                        mlp_layer=_mlp_layer(cfg), drop_path=r, layer_scale=scale, depth=i)
            for i, r in enumerate(rates)
        ])
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=d, reduction=cfg.patch_size) for i in range(cfg.depth)]
        self.norm = norm(d) if cfg.final_norm and not cfg.use_fc_norm else nn.Identity()
        self.attn_pool = None
        if cfg.global_pool == "map":
            self.attn_pool = AttentionPoolLatent(d, num_heads=cfg.attn_pool_num_heads or cfg.num_heads,
                                                 mlp_ratio=cfg.attn_pool_mlp_ratio or cfg.mlp_ratio,
                                                 norm_eps=cfg.norm_eps, act_layer=cfg.act_layer)
        self.fc_norm = norm(d) if cfg.final_norm and cfg.use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(d, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self):
        """timm's default init: truncated-normal (0.02) Linear weights, zero biases, the block
        projections scaled by 1/sqrt(2 * layer) (timm's ``fix_init``), embeddings as timm's."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.embeds.reset_parameters()
        if self.attn_pool is not None:
            self.attn_pool.init_weights()
        with torch.no_grad():
            for i, blk in enumerate(self.blocks):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"embeds.pos_embed", "embeds.pos_embed_y", "embeds.pos_embed_x", "embeds.cls_token", "embeds.reg_token"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None and global_pool != self.global_pool:
            raise ValueError(f"fastvit's NaFlexVit keeps its pooling ({self.global_pool!r}) in reset_classifier")
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """timm's: keep the blocks up to the last of ``indices``; drop the final norm and / or the head
        (a pruned head pools by average: only ``forward_intermediates`` is meant to run)."""
        take, last = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: last + 1]
        self.feature_info = self.feature_info[: last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.attn_pool, self.global_pool = None, "avg"
            self.fc_norm, self.head, self.num_classes = nn.Identity(), nn.Identity(), 0
        return take

    # --- the packed core -------------------------------------------------------------------
    def _run(self, packed, indices=None, stop_early=False):
        """Embeds and blocks over packed rows: (rows (T', D) before the final norm, layout, taken)."""
        layout = token_layout(packed.grid_sizes, self.num_prefix_tokens, packed.patches.device, packed.seqlens)
        x = self.embeds(packed, layout).unsqueeze(0)
        take, last = (set(), len(self.blocks) - 1) if indices is None else indices
        taken = []
        for i, blk in enumerate(self.blocks):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, layout, use_reentrant=False)
            else:
                x = blk(x, layout)
            if i in take:
                taken.append(x[0])
            if stop_early and i >= last:
                break
        return x[0], layout, taken

    def _pool_rows(self, rows: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        patches = rows[layout.patch_rows]
        if self.attn_pool is not None:
            return attention_pool_packed(self.attn_pool, patches, layout)
        # (B, prefix, D); reshape with D given: no prefix (a converted SigLIP 2 without its pool) is (B, 0, D)
        prefix = rows[layout.prefix_rows].reshape(layout.num_images, self.num_prefix_tokens, rows.shape[-1])
        return pool_patches(self.global_pool, patches, layout, prefix)

    def _head(self, pooled: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        x = self.head_drop(self.fc_norm(pooled))
        return x if pre_logits else self.head(x)

    # --- timm's API ---------------------------------------------------------------------------
    def forward_features(self, x, patch_coord=None, patch_valid=None):
        """Image batch -> tokens (B, prefix + N, D); timm's padded form (dict, or patches with
        ``patch_coord`` / ``patch_valid``) -> ``{"patches": (B, prefix + L, D), "patch_valid"}`` (padding
        rows zero); a :class:`Packed` batch -> rows (T + S * prefix, D), image ``s`` at
        ``cu_seqlens[s] + s * prefix`` with its prefix tokens first."""
        packed, form = as_packed(self, x, patch_coord, patch_valid)
        rows, layout, _ = self._run(packed)
        return from_tokens(self.norm(rows), layout, form)

    def forward_head(self, x, pre_logits: bool = False, patch_valid=None, packed=None):
        """Tokens as ``forward_features`` returns them (timm's (B, N, D), its dict, or packed rows with
        their ``packed`` batch) -> logits (or the pooled features with ``pre_logits``)."""
        rows, layout = to_tokens(self, x, patch_valid, packed)
        return self._head(self._pool_rows(rows, layout), pre_logits)

    def forward(self, x, patch_coord=None, patch_valid=None):
        """Logits (B, classes): one row per image of the batch, dict batch or packed batch, in order."""
        packed, _ = as_packed(self, x, patch_coord, patch_valid)
        rows, layout, _ = self._run(packed)
        return self._head(self._pool_rows(self.norm(rows), layout), False)

    def forward_intermediates(self, x, indices=None, return_prefix_tokens: bool = False, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              output_dict: bool = False, patch_coord=None, patch_valid=None):
        """timm's ``forward_intermediates``: block outputs without their prefix tokens, NCHW (image
        batches) or NLC; dict / packed inputs are NLC only (a packed batch gives (T, D) rows)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        packed, form = as_packed(self, x, patch_coord, patch_valid)
        if form.kind != "images" and output_fmt == "NCHW":
            raise ValueError('output_fmt="NCHW" needs an image batch; use "NLC" for NaFlex dict or packed inputs')
        take, last = feature_take_indices(len(self.blocks), indices)
        rows, layout, taken = self._run(packed, (set(take), last), stop_early)
        taken = [self.norm(t) if norm else t for t in taken]  # in block order, as timm's
        spatial, prefixes = [], []
        for t in taken:
            out = from_tokens(t, layout, form, split_prefix=True, nchw=output_fmt == "NCHW")
            spatial.append(out[0])
            prefixes.append(out[1])
        result = from_tokens(self.norm(rows), layout, form)
        if output_dict:
            d = {"image_intermediates": spatial}
            if return_prefix_tokens and self.num_prefix_tokens:
                d["image_intermediates_prefix"] = prefixes
            if form.kind == "padded":
                d["patch_valid"] = form.patch_valid
            if not intermediates_only:
                d["image_features"] = result["patches"] if isinstance(result, dict) else result
            return d
        if return_prefix_tokens and self.num_prefix_tokens:
            spatial = list(zip(spatial, prefixes))
        if intermediates_only:
            return spatial
        return (result["patches"] if isinstance(result, dict) else result), spatial
