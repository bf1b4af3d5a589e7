"""The Vision Transformer (Dosovitskiy et al. 2020), pre-norm, timm's parameter names."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import GLOBAL_POOLS, ViTConfig
from .presets import pretrained_cfg_for
from .layers import resample_options, resample_pos_embed
from .layers.linear import autocast_dtype
from .layers.norm import fork_function
from .layers.pool import AttentionPoolLatent
from .parts import Parts, resolve_parts


@torch.fx.wrap
def check_image(x, weight: torch.Tensor, in_chans: int, img_size: tuple[int, int], patch: int,
                dynamic_size: bool, dynamic_pad: bool) -> torch.Tensor:
    """The image batch a VisionTransformer takes, or a clear error; returns ``x``. A leaf for
    ``torch.fx`` (as timm's ``_assert``): traced as one call, it checks the real input at run time."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor image batch (B, {in_chans}, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D image batch (B, {in_chans}, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if b == 0:
        raise ValueError(f"expected a non-empty batch, got shape {tuple(x.shape)}")
    if c != in_chans:
        raise ValueError(f"expected {in_chans} input channels, got {c} (input shape {tuple(x.shape)})")
    if x.layout != torch.strided or x.is_nested:
        raise TypeError(f"expected a dense (strided) image tensor, got a {'nested' if x.is_nested else x.layout} one; use x.to_dense()")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point image tensor, got dtype {x.dtype}; convert with x.float() (and scale to the model's normalization)")
    # sizes other than the native one (timm's rule) come in whole patches, unless dynamic_img_pad
    # pads them up; the native size may leave pixels out (floor(img_size / patch_size) patches)
    if not dynamic_pad and (h, w) != img_size:
        if h < patch or w < patch:
            raise ValueError(f"image size {h}x{w} is smaller than one {patch}x{patch} patch")
        if h % patch or w % patch:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {patch} "
                             "(dynamic_img_pad=True pads it to whole patches)")
    if not dynamic_size and (h, w) != img_size:
        raise ValueError(
            f"expected image size {img_size[0]}x{img_size[1]}, got {h}x{w}; "
            "build the model with dynamic_img_size=True (or img_size=...) for other sizes"
        )
    if x.device != weight.device:
        raise ValueError(f"input is on {x.device} but the model is on {weight.device}; move one of them (x.to(device))")
    if x.dtype != weight.dtype and autocast_dtype(x) is None:
        raise TypeError(f"input dtype {x.dtype} does not match the model's {weight.dtype}; cast the input or the model, or run under torch.autocast")
    return x


@torch.fx.wrap
def check_tokens(x, dim: int, prefix: int, needed: int) -> torch.Tensor:
    """Tokens (B, prefix + N, D) as ``forward_features`` returns them, or a clear error; an ``fx`` leaf."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a token tensor (B, tokens, {dim}), got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f"expected tokens of shape (B, tokens, {dim}) as forward_features returns them, got {tuple(x.shape)}")
    if x.shape[1] < needed:
        raise ValueError(f"expected at least {needed} token(s) ({prefix} prefix + patches to pool), got {x.shape[1]}")
    return x


@torch.fx.wrap
def patch_grid(x: torch.Tensor, patch: int, pad: bool) -> tuple[int, int]:
    """The token grid of image batch ``x`` (rounded up when padding); an ``fx`` leaf."""
    h, w = x.shape[-2], x.shape[-1]
    return (-(-h // patch), -(-w // patch)) if pad else (h // patch, w // patch)


@torch.fx.wrap
def pos_embed_for_grid(pos: torch.Tensor, grid, native: tuple[int, int], prefix: int, options: dict) -> torch.Tensor:
    """``pos`` resampled from the native grid to ``grid`` (itself when they agree); an ``fx`` leaf."""
    grid = (int(grid[0]), int(grid[1])) if not isinstance(grid[0], torch.SymInt) else tuple(grid)
    if grid == tuple(native):
        return pos
    return resample_pos_embed(pos, grid, native, prefix, **options)


class Block(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)). The branches own their residual add
    so a fused implementation can put it in the GEMM epilogue.

    The block is given its layers, as timm's ``Block(norm_layer=, attn_layer=,
    mlp_layer=)``: factories taking the width (and ``drop_path`` for the
    branches), such as :func:`fastvit.parts.resolve_parts` returns.

    Each norm is used through its fork, ``(LN(x), x)``: the branch's input and
    the residual it adds back, so a fused norm can add the residual's gradient
    to its own in its backward (:mod:`fastvit.layers.norm`). The fork of a norm
    is looked up when the norm is set (:func:`~fastvit.layers.norm.fork_function`;
    a norm without ``fork`` normalizes and passes ``x`` on), not per forward.
    """

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name in ("norm1", "norm2"):  # set or replaced: its fork goes with it
            super().__setattr__(f"_{name}_fork", fork_function(value))

    def __setstate__(self, state):  # unpickled or deep-copied (a pickle from before the forks included)
        super().__setstate__(state)
        for name in ("norm1", "norm2"):
            if name in self._modules:
                super().__setattr__(f"_{name}_fork", fork_function(self._modules[name]))

    def __init__(self, dim: int, *, norm_layer, attn_layer, mlp_layer, drop_path: float = 0.0, layer_scale=None,
                 depth: int = 0):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, drop_path=drop_path)
        if hasattr(self.attn, "set_depth"):  # differential attention's lambda_init depends on the block index
            self.attn.set_depth(depth)
        # LayerScale (timm's ls1 / ls2): the branches apply its gamma before their residual add
        self.ls1 = layer_scale(dim) if layer_scale is not None else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, drop_path=drop_path)
        self.ls2 = layer_scale(dim) if layer_scale is not None else nn.Identity()
        self.has_layer_scale = layer_scale is not None

    def forward(self, x):
        h, x = self._norm1_fork(self.norm1, x)
        if self.has_layer_scale:
            x = self.attn(h, x, gamma=self.ls1.gamma)
            h, x = self._norm2_fork(self.norm2, x)
            return self.mlp(h, x, gamma=self.ls2.gamma)
        x = self.attn(h, x)
        h, x = self._norm2_fork(self.norm2, x)
        return self.mlp(h, x)


class VisionTransformer(nn.Module):
    """ViT image classifier and backbone.

    ``forward(x)`` returns logits (or pooled features when ``num_classes=0``);
    ``forward_features`` the normalized tokens (B, prefix + N, D);
    ``forward_head`` pools and classifies them; ``forward_intermediates`` gives
    per-block outputs for detection and segmentation necks. The attributes and
    methods timm's helpers use (``pretrained_cfg``, ``group_matcher``,
    ``feature_info``, ``prune_intermediate_layers``, ...) behave as timm's.

    The layers come from ``parts`` (:class:`fastvit.parts.Parts`), by default
    :func:`fastvit.parts.resolve_parts` of the config: the model itself never
    reads an implementation name.
    """

    def __init__(self, cfg: ViTConfig | None = None, *, parts: Parts | None = None, **overrides):
        super().__init__()
        if cfg is not None and not isinstance(cfg, ViTConfig):
            raise TypeError(f"cfg must be a fastvit.ViTConfig (or None), got {type(cfg).__name__}; "
                            "pass fields as keywords: VisionTransformer(embed_dim=..., ...)")
        cfg = (cfg or ViTConfig()).replace(**overrides) if overrides else (cfg or ViTConfig())
        if parts is not None and not isinstance(parts, Parts):
            raise TypeError(f"parts must be a fastvit.parts.Parts (or None), got {type(parts).__name__}")
        self.parts = parts = resolve_parts(cfg) if parts is None else parts
        self.cfg = cfg
        d = cfg.embed_dim
        self.num_prefix_tokens = cfg.num_prefix_tokens
        # parameters in timm's order (cls_token, reg_token, pos_embed, then DeiT's dist_token), so
        # that timm's optimizer factory lists them as it does for timm's model
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, d)) if cfg.reg_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.distilled else None
        self.patch_embed = parts.embed_layer()
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.patch_drop = nn.Identity()
        self.norm_pre = parts.norm_layer(d) if cfg.pre_norm else nn.Identity()
        # stochastic depth grows linearly from 0 at the first block to drop_path_rate at the last
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        block_layer = parts.block_layer or Block  # fastvit.layers.block_layouts for timm's other blocks
        self.blocks = nn.Sequential(*(
            block_layer(d, norm_layer=parts.block_norm_layer, attn_layer=parts.attn_layer, mlp_layer=parts.mlp_layer,
                        drop_path=r, layer_scale=parts.layer_scale, depth=i)
            for i, r in enumerate(rates)
        ))
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=d, reduction=cfg.patch_size) for i in range(cfg.depth)]
        self.distilled_training = False
        self.pretrained_cfg = self.default_cfg = pretrained_cfg_for(None, cfg)
        self.norm = parts.norm_layer(d) if cfg.use_final_norm else nn.Identity()
        self.attn_pool = None
        if cfg.global_pool == "map":  # timm's: heads and MLP ratio of the blocks, no q/k norm
            self.attn_pool = AttentionPoolLatent(d, cfg.num_heads, cfg.mlp_ratio, norm_eps=cfg.norm_eps, act_layer=cfg.act_layer)
        self.fc_norm = parts.norm_layer(d) if cfg.use_fc_norm else nn.Identity()
        self.grad_checkpointing = False
        self._build_head(cfg.num_classes)
        self.init_weights()

    # -- construction ---------------------------------------------------------------

    def _build_head(self, num_classes: int):
        cfg, d = self.cfg, self.cfg.embed_dim
        if cfg.representation_size:
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(d, cfg.representation_size))
            self.pre_logits.add_module("act", nn.Tanh())
            d = cfg.representation_size
        else:
            self.pre_logits = nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(d, num_classes) if num_classes else nn.Identity()
        if cfg.distilled:
            self.head_dist = nn.Linear(d, num_classes) if num_classes else nn.Identity()

    def init_weights(self):
        """timm/Google init: trunc-normal(0.02) for tokens, position embedding and Linear weights, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for token in (self.cls_token, self.dist_token):
            if token is not None:
                nn.init.trunc_normal_(token, std=0.02)
        if self.reg_token is not None:  # timm's: registers start near zero
            nn.init.normal_(self.reg_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias) if m.bias is not None else None
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # patch embedding: LeCun normal on the flattened kernel, as in the Google release (a stem
        # without a projection, MobileCLIP's, keeps its convolutions' init)
        w = getattr(self.patch_embed.proj, "weight", None)
        if w is not None:
            nn.init.trunc_normal_(w, std=math.sqrt(1.0 / w[0].numel()) / 0.87962566103423978)
        if getattr(self.patch_embed.proj, "bias", None) is not None:
            nn.init.zeros_(self.patch_embed.proj.bias)
        for m in self.modules():  # blocks whose own init differs from the above (residual post-norm's norms)
            if hasattr(m, "init_block_weights"):
                m.init_block_weights()
        if self.attn_pool is not None:
            self.attn_pool.init_weights()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        """Replace the head (and its distillation twin) with a fresh one for ``num_classes`` (0: none);
        ``global_pool`` (timm's: "token", "avg", "max", "avgmax", "map", "") changes the pooling, not the
        norms. As timm: another pool than "map" removes the attention pool, and none can be added."""
        changes = dict(num_classes=num_classes)
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
            if global_pool == "map" and self.attn_pool is None:  # as timm: the pool's weights would be untrained
                raise ValueError("reset_classifier cannot add attention pooling (global_pool='map') to a model built "
                                 "without it; build the model with global_pool='map'")
            if not self.cfg.distilled:  # DeiT always pools its class and distillation tokens (timm ignores it too)
                # the final norm stays where it is: pin fc_norm so cfg keeps describing the norms built
                changes.update(global_pool=global_pool, fc_norm=self.cfg.use_fc_norm)
        self.cfg = self.cfg.replace(**changes)  # validates everything before anything changes
        if self.cfg.global_pool != "map":
            self.attn_pool = None
        device, dtype = self.pos_embed.device, self.pos_embed.dtype
        feat = self.cfg.representation_size or self.cfg.embed_dim
        for name in ("head", "head_dist") if self.cfg.distilled else ("head",):
            head = nn.Linear(feat, num_classes) if num_classes else nn.Identity()
            if num_classes:
                nn.init.trunc_normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)
            setattr(self, name, head.to(device=device, dtype=dtype).train(self.training))

    def get_classifier(self):
        """The classifier head; for a distilled model (head, head_dist), as timm."""
        return (self.head, self.head_dist) if self.cfg.distilled else self.head

    def set_distilled_training(self, enable: bool = True):
        """DeiT: with this on, a distilled model in training returns (class, distillation) logits."""
        self.distilled_training = enable

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (stem, one per block, final norm with the last): its layer-wise
        learning-rate decay builds the same groups as for timm's model."""
        stem = r"^cls_token|pos_embed|patch_embed|dist_token" if self.cfg.distilled else r"^cls_token|reg_token|pos_embed|patch_embed"
        return dict(stem=stem, blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    def no_weight_decay(self) -> set[str]:
        return {name for name in ("pos_embed", "cls_token", "reg_token", "dist_token") if getattr(self, name) is not None}

    def set_grad_checkpointing(self, enable: bool = True):
        """Recompute each block's activations in the backward instead of storing them."""
        self.grad_checkpointing = enable

    # timm's attribute names, read from the config so they cannot drift from it
    num_features = embed_dim = head_hidden_size = property(lambda self: self.cfg.embed_dim)
    num_classes = property(lambda self: self.cfg.num_classes)
    global_pool = property(lambda self: self.cfg.global_pool)
    in_chans = property(lambda self: self.cfg.in_chans)
    has_class_token = property(lambda self: self.cfg.class_token)
    dynamic_img_size = property(lambda self: self.cfg.dynamic_img_size)
    dynamic_img_pad = property(lambda self: self.cfg.dynamic_img_pad)
    num_reg_tokens = property(lambda self: self.cfg.reg_tokens)
    no_embed_class = property(lambda self: self.cfg.no_embed_class)
    pool_include_prefix = property(lambda self: self.cfg.pool_include_prefix)

    # -- input checks and embeddings --------------------------------------------------

    def _check_input(self, x: torch.Tensor):
        """:func:`check_image` with this model's expectations."""
        cfg = self.cfg
        check_image(x, self.pos_embed, cfg.in_chans, cfg.img_size, cfg.patch_size,
                    cfg.dynamic_img_size, cfg.dynamic_img_pad)

    def _check_tokens(self, x):
        """forward_head's input: tokens (B, prefix + N, D) as forward_features returns them."""
        needed = self.num_prefix_tokens + (self.cfg.global_pool in ("avg", "max", "avgmax", "map"))
        return check_tokens(x, self.cfg.embed_dim, self.num_prefix_tokens, needed)

    @property
    def _pos_prefix(self) -> int:
        """Rows of pos_embed before the grid: the prefix tokens, none with ``no_embed_class``."""
        return 0 if self.cfg.no_embed_class else self.num_prefix_tokens

    def _pos_embed(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Prefix tokens (class, registers, distillation) before the patches, and the position
        embedding: on all tokens, or (``no_embed_class``) on the patches before the prefix joins."""
        pos = self.pos_embed
        if self.cfg.dynamic_img_size:
            pos = pos_embed_for_grid(pos, grid, self.cfg.grid_size, self._pos_prefix,
                                     resample_options(self.cfg.pos_embed_resample))
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token, self.dist_token) if t is not None]
        if self.cfg.no_embed_class:
            x = x + pos
            return self.pos_drop(torch.cat(prefix + [x], dim=1) if prefix else x)
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        return self.pos_drop(x + pos)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image -> the tokens entering the first block (after ``norm_pre``), and their patch grid."""
        cfg = self.cfg
        x = check_image(x, self.pos_embed, cfg.in_chans, cfg.img_size, cfg.patch_size,
                        cfg.dynamic_img_size, cfg.dynamic_img_pad)  # x itself: the check stays in traced graphs
        grid = patch_grid(x, cfg.patch_size, cfg.dynamic_img_pad) if cfg.dynamic_img_size else cfg.grid_size
        return self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x), grid))), grid

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    # -- forward API --------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (B, C, H, W) -> tokens after the final norm, (B, prefix + N, D)."""
        x, _ = self._embed(x)
        for block in self.blocks:
            x = self._run_block(block, x)
        return self.norm(x)

    def pool(self, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
        """timm's pooling of tokens (B, prefix + N, D): "token" (class token), "avg", "max",
        "avgmax" (of the patch tokens), "map" (the attention pool ``attn_pool`` over the patch
        tokens) or "" (none: all tokens)."""
        pool_type = self.cfg.global_pool if pool_type is None else pool_type
        if not pool_type:
            return x
        start = 0 if self.cfg.pool_include_prefix else self.num_prefix_tokens
        if pool_type == "map":
            if self.attn_pool is None:
                raise ValueError("pool_type='map' needs the attention pool of a model built with global_pool='map'")
            return self.attn_pool(x[:, start:])
        if pool_type == "token":
            return x[:, 0]
        patches = x[:, start:]
        if pool_type == "avg":
            return patches.mean(dim=1)
        if pool_type == "max":
            return patches.amax(dim=1)
        if pool_type == "avgmax":
            return 0.5 * (patches.amax(dim=1) + patches.mean(dim=1))
        raise ValueError(f"pool_type must be one of {GLOBAL_POOLS}, got {pool_type!r}")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        """Pool tokens (B, prefix + N, D) and classify. A distilled model gives the mean of its
        class and distillation heads (of their features with ``pre_logits``), and both logits
        only in training after ``set_distilled_training(True)``, as timm's DeiT."""
        x = self._check_tokens(x)
        if self.cfg.distilled:
            cls, dist = (self.pre_logits(self.fc_norm(t)) for t in (x[:, 0], x[:, 1]))
            if pre_logits:
                return (cls + dist) / 2
            logits, dist_logits = self.head(cls), self.head_dist(dist)
            if self.distilled_training and self.training:
                return logits, dist_logits
            return (logits + dist_logits) / 2
        x = self.head_drop(self.pre_logits(self.fc_norm(self.pool(x))))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ):
        """Outputs of selected blocks, for feature-pyramid necks (timm's signature and semantics).

        ``indices``: an int n takes the last n blocks; a sequence takes those blocks
        (negative ones count from the end; results come in block order, each block
        once); None takes all. ``output_fmt``: "NCHW" gives (B, D, gh, gw) maps, "NLC"
        (B, gh*gw, D) patch tokens. ``norm`` applies the final norm to each;
        ``return_prefix_tokens`` makes each entry ``(features, prefix_tokens)``;
        ``stop_early`` skips the blocks after the last one taken. Returns
        ``(final_tokens, list)``, the list alone with ``intermediates_only``, or with
        ``output_dict`` a dict with "image_intermediates" (and "image_features",
        "image_intermediates_prefix").
        """
        from .features import forward_intermediates

        return forward_intermediates(self, x, indices, return_prefix_tokens, norm, stop_early, output_fmt,
                                     intermediates_only, output_dict, attn_mask, is_causal)

    def get_intermediate_layers(self, x, n=1, reshape: bool = False, return_prefix_tokens: bool = False,
                                norm: bool = False, attn_mask=None):
        """timm's DINO-style wrapper around :meth:`forward_intermediates`."""
        return self.forward_intermediates(x, n, return_prefix_tokens=return_prefix_tokens, norm=norm,
                                          output_fmt="NCHW" if reshape else "NLC", intermediates_only=True,
                                          attn_mask=attn_mask)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last of ``indices`` (and the final norm / the head);
        returns the absolute indices, as timm."""
        from .features import prune_intermediate_layers

        return prune_intermediate_layers(self, indices, prune_norm, prune_head)

    # -- resolution ---------------------------------------------------------------------

    def set_img_size(self, img_size):
        """Change the native image size, resampling the position embedding to the new grid."""
        new_cfg = self.cfg.replace(img_size=img_size)
        with torch.no_grad():
            pos = resample_pos_embed(self.pos_embed.data, new_cfg.grid_size, self.cfg.grid_size, self._pos_prefix,
                                     **resample_options(self.cfg.pos_embed_resample))
        self.pos_embed = nn.Parameter(pos, requires_grad=self.pos_embed.requires_grad)
        self.cfg = new_cfg
        self.patch_embed.set_input_size(new_cfg.img_size)

    def set_input_size(self, img_size=None, patch_size=None):
        """timm's name for :meth:`set_img_size`: a new native image size (None keeps it), the
        position embedding resampled by the model's ``pos_embed_resample`` convention.
        The patch size cannot change (that would resample the patch-embedding kernel)."""
        if patch_size is not None:
            p = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
            if p != self.patch_embed.patch_size:
                raise ValueError(f"set_input_size: patch_size {p} differs from the model's {self.patch_embed.patch_size}; "
                                 "fastvit does not resample the patch-embedding kernel")
        if img_size is not None:
            self.set_img_size(img_size)
