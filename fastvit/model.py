"""The Vision Transformer (Dosovitskiy et al. 2020), pre-norm, timm's parameter names."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ViTConfig, get_config
from .layers import Attention, Mlp, PatchEmbed, norm_layer, resample_pos_embed
from .layers.linear import autocast_dtype


class Block(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)). The branches own their residual add
    so a fused implementation can put it in the GEMM epilogue."""

    def __init__(self, cfg: ViTConfig, drop_path: float = 0.0):
        super().__init__()
        norm = norm_layer(cfg.norm_impl, pre_gemm=True)
        dim = cfg.embed_dim
        self.norm1 = norm(dim, eps=cfg.norm_eps)
        self.attn = Attention(
            dim, cfg.num_heads, qkv_bias=cfg.qkv_bias, attn_drop=cfg.attn_drop_rate, proj_drop=cfg.drop_rate,
            drop_path=drop_path, attn_impl=cfg.attn_impl, linear_impl=cfg.linear_impl,
        )
        self.norm2 = norm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, cfg.mlp_hidden_dim, drop=cfg.drop_rate, drop_path=drop_path, linear_impl=cfg.linear_impl)

    def forward(self, x):
        x = self.attn(self.norm1(x), x)
        return self.mlp(self.norm2(x), x)


class VisionTransformer(nn.Module):
    """ViT image classifier and backbone.

    ``forward(x)`` returns logits (or pooled features when ``num_classes=0``);
    ``forward_features`` the normalized tokens (B, prefix + N, D);
    ``forward_head`` pools and classifies them; ``forward_intermediates`` gives
    per-block outputs for detection and segmentation necks.
    """

    def __init__(self, cfg: ViTConfig | None = None, **overrides):
        super().__init__()
        if cfg is not None and not isinstance(cfg, ViTConfig):
            raise TypeError(f"cfg must be a fastvit.ViTConfig (or None), got {type(cfg).__name__}; "
                            "pass fields as keywords: VisionTransformer(embed_dim=..., ...)")
        cfg = (cfg or ViTConfig()).replace(**overrides) if overrides else (cfg or ViTConfig())
        self.cfg = cfg
        d = cfg.embed_dim
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, d))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        # stochastic depth grows linearly from 0 at the first block to drop_path_rate at the last
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        norm = norm_layer(cfg.norm_impl)
        self.norm = nn.Identity() if cfg.use_fc_norm else norm(d, eps=cfg.norm_eps)
        self.fc_norm = norm(d, eps=cfg.norm_eps) if cfg.use_fc_norm else nn.Identity()
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
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias) if m.bias is not None else None
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # patch embedding: LeCun normal on the flattened kernel, as in the Google release
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w, std=math.sqrt(1.0 / w[0].numel()) / 0.87962566103423978)
        nn.init.zeros_(self.patch_embed.proj.bias)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        """Replace the head (and its distillation twin) with a fresh one for ``num_classes`` (0: none)."""
        changes = dict(num_classes=num_classes)
        if global_pool is not None:
            # pooling changes, the norms built for the old one stay: pin fc_norm so cfg keeps describing them
            changes.update(global_pool=global_pool, fc_norm=self.cfg.use_fc_norm)
        self.cfg = self.cfg.replace(**changes)  # validates everything before anything changes
        device, dtype = self.pos_embed.device, self.pos_embed.dtype
        feat = self.cfg.representation_size or self.cfg.embed_dim
        for name in ("head", "head_dist") if self.cfg.distilled else ("head",):
            head = nn.Linear(feat, num_classes) if num_classes else nn.Identity()
            if num_classes:
                nn.init.trunc_normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)
            setattr(self, name, head.to(device=device, dtype=dtype))

    def no_weight_decay(self) -> set[str]:
        return {name for name in ("pos_embed", "cls_token", "dist_token") if getattr(self, name) is not None}

    def set_grad_checkpointing(self, enable: bool = True):
        """Recompute each block's activations in the backward instead of storing them."""
        self.grad_checkpointing = enable

    @property
    def num_features(self) -> int:
        return self.cfg.embed_dim

    # -- input checks and embeddings --------------------------------------------------

    def _check_input(self, x: torch.Tensor):
        cfg = self.cfg
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor image batch (B, {cfg.in_chans}, H, W), got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"expected a 4-D image batch (B, {cfg.in_chans}, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        if b == 0:
            raise ValueError(f"expected a non-empty batch, got shape {tuple(x.shape)}")
        if c != cfg.in_chans:
            raise ValueError(f"expected {cfg.in_chans} input channels, got {c} (input shape {tuple(x.shape)})")
        if x.layout != torch.strided or x.is_nested:
            raise TypeError(f"expected a dense (strided) image tensor, got a {'nested' if x.is_nested else x.layout} one; use x.to_dense()")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point image tensor, got dtype {x.dtype}; convert with x.float() (and scale to the model's normalization)")
        p = cfg.patch_size
        if h < p or w < p:
            raise ValueError(f"image size {h}x{w} is smaller than one {p}x{p} patch")
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
        if not cfg.dynamic_img_size and (h, w) != cfg.img_size:
            raise ValueError(
                f"expected image size {cfg.img_size[0]}x{cfg.img_size[1]}, got {h}x{w}; "
                "build the model with dynamic_img_size=True (or img_size=...) for other sizes"
            )
        weight = self.patch_embed.proj.weight
        if x.device != weight.device:
            raise ValueError(f"input is on {x.device} but the model is on {weight.device}; move one of them (x.to(device))")
        if x.dtype != weight.dtype and autocast_dtype(x) is None:
            raise TypeError(f"input dtype {x.dtype} does not match the model's {weight.dtype}; cast the input or the model, or run under torch.autocast")

    def _check_tokens(self, x):
        """forward_head's input: tokens (B, prefix + N, D) as forward_features returns them."""
        d, prefix = self.cfg.embed_dim, self.num_prefix_tokens
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a token tensor (B, tokens, {d}), got {type(x).__name__}")
        if x.ndim != 3 or x.shape[-1] != d:
            raise ValueError(f"expected tokens of shape (B, tokens, {d}) as forward_features returns them, got {tuple(x.shape)}")
        needed = prefix + (self.cfg.global_pool == "avg")
        if x.shape[1] < needed:
            raise ValueError(f"expected at least {needed} token(s) ({prefix} prefix + patches to pool), got {x.shape[1]}")

    def _pos_embed(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        pos = self.pos_embed
        if grid != self.cfg.grid_size:
            pos = resample_pos_embed(pos, grid, self.cfg.grid_size, self.num_prefix_tokens)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token) if t is not None]
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        return self.pos_drop(x + pos)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        self._check_input(x)
        grid = (x.shape[-2] // self.cfg.patch_size, x.shape[-1] // self.cfg.patch_size)
        return self._pos_embed(self.patch_embed(x), grid), grid

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

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        """Pool tokens (B, prefix + N, D) and classify. In training a distilled
        model returns (class logits, distillation logits); in eval their mean."""
        self._check_tokens(x)
        if self.cfg.global_pool == "avg":
            pooled = x[:, self.num_prefix_tokens :].mean(dim=1)
        else:
            pooled = x[:, 0]
        pooled = self.pre_logits(self.fc_norm(pooled))
        if self.cfg.distilled:
            dist = self.pre_logits(self.fc_norm(x[:, 1]))
            if pre_logits:
                return pooled, dist
            logits, dist_logits = self.head(self.head_drop(pooled)), self.head_dist(self.head_drop(dist))
            return (logits, dist_logits) if self.training else (logits + dist_logits) / 2
        return pooled if pre_logits else self.head(self.head_drop(pooled))

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        output_fmt: str = "NCHW",
        norm: bool = False,
        return_prefix_tokens: bool = False,
        intermediates_only: bool = False,
    ):
        """Outputs of selected blocks, for feature-pyramid necks.

        ``indices``: an int n takes the last n blocks; a sequence takes those
        block indices (negative ones count from the end); None takes all.
        ``output_fmt``: "NCHW" gives (B, D, gh, gw) feature maps, "NLC" gives
        (B, gh*gw, D) patch tokens. ``norm`` applies the final norm to each.
        Returns the list, or ``(final_tokens, list)`` unless ``intermediates_only``.
        With ``return_prefix_tokens`` each entry is ``(features, prefix_tokens)``.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        depth = len(self.blocks)
        if indices is None:
            take = list(range(depth))
        elif isinstance(indices, int):
            if not 0 < indices <= depth:
                raise ValueError(f"indices={indices} must be in 1..{depth} (the last n blocks)")
            take = list(range(depth - indices, depth))
        else:
            take = []
            for i in indices:
                if not -depth <= i < depth:
                    raise ValueError(f"block index {i} out of range for a model with {depth} blocks")
                take.append(i % depth)
        wanted = set(take)
        x, (gh, gw) = self._embed(x)
        found = {}
        # without the final output, blocks after the last one asked for need not run
        blocks = self.blocks[: max(wanted) + 1] if intermediates_only else self.blocks
        for i, block in enumerate(blocks):
            x = self._run_block(block, x)
            if i in wanted:
                found[i] = self.norm(x) if norm else x
        outputs = []
        for i in take:
            y = found[i]
            prefix, tokens = y[:, : self.num_prefix_tokens], y[:, self.num_prefix_tokens :]
            if output_fmt == "NCHW":
                tokens = tokens.reshape(tokens.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous()
            outputs.append((tokens, prefix) if return_prefix_tokens else tokens)
        if intermediates_only:
            return outputs
        return self.norm(x), outputs

    # -- resolution ---------------------------------------------------------------------

    def set_img_size(self, img_size):
        """Change the native image size, resampling the position embedding to the new grid."""
        new_cfg = self.cfg.replace(img_size=img_size)
        with torch.no_grad():
            pos = resample_pos_embed(self.pos_embed.data, new_cfg.grid_size, self.cfg.grid_size, self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(pos, requires_grad=self.pos_embed.requires_grad)
        self.cfg = new_cfg


def create_model(name: str, pretrained: str | None = None, **overrides) -> VisionTransformer:
    """Build a preset by name (``fastvit.list_models()``), with config fields overridden by keyword.

    ``pretrained`` is a path to a local checkpoint (timm, torchvision, Hugging
    Face or big_vision layout); see :func:`fastvit.load_checkpoint`.
    """
    model = VisionTransformer(get_config(name, **overrides))
    if pretrained is not None:
        from .checkpoints import load_checkpoint

        load_checkpoint(model, pretrained)
    return model
