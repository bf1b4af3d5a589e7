"""The NaFlex transformer block over packed rows, and pooling per image.

Tokens travel as one (1, T, D) batch of rows (all images back to back), so LayerNorms, GEMMs
and their fused epilogues run on the packed rows as they are; only attention needs the image
boundaries, and gets them as sequence offsets (:func:`fastvit.layers.varlen.varlen_attention`):
no padding token and no mask.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers.linear import ResidualLinear
from ..layers.varlen import varlen_attention
from ..model import Block
from .embeds import TokenLayout


class VarlenAttention(nn.Module):
    """timm's ``Attention`` names (``qkv``, ``q_norm``, ``k_norm``, ``proj``) over packed rows."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.0,
                 drop_path: float = 0.0, *, varlen_impl: str = "torch", proj_layer=ResidualLinear):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.varlen_impl = varlen_impl
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
        self.proj = proj_layer(dim, dim, drop=proj_drop, drop_path=drop_path)

    def forward(self, x, residual, layout: TokenLayout, gamma=None):
        """``residual + proj(attn(x))`` within each image; x (1, T, D) normalized rows."""
        t, d = x.shape[-2], x.shape[-1]
        q, k, v = self.qkv(x).view(t, 3, self.num_heads, self.head_dim).unbind(1)
        out = varlen_attention(q, k, v, layout.cu_tokens, layout.max_tokens, self.scale, impl=self.varlen_impl)
        out = out.reshape(x.shape[:-1] + (d,))
        return self.proj(out, residual) if gamma is None else self.proj(out, residual, gamma)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, varlen_impl={self.varlen_impl!r}"


class NaFlexBlock(Block):
    """fastvit's pre-norm :class:`~fastvit.model.Block` whose attention works within each image."""

    def forward(self, x, layout: TokenLayout):
        h, x = self._norm1_fork(self.norm1, x)
        if self.has_layer_scale:
            x = self.attn(h, x, layout, gamma=self.ls1.gamma)
            h, x = self._norm2_fork(self.norm2, x)
            return self.mlp(h, x, gamma=self.ls2.gamma)
        x = self.attn(h, x, layout)
        h, x = self._norm2_fork(self.norm2, x)
        return self.mlp(h, x)


def _segment_max(values: torch.Tensor, seg: torch.Tensor, num: int) -> torch.Tensor:
    index = seg.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
    out = values.new_full((num,) + values.shape[1:], float("-inf"))
    return out.scatter_reduce(0, index, values, "amax", include_self=True)


def _segment_mean(values: torch.Tensor, seg: torch.Tensor, lens: torch.Tensor, num: int) -> torch.Tensor:
    sums = values.new_zeros((num,) + values.shape[1:]).index_add(0, seg, values)
    return sums / lens.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))


def pool_patches(kind: str, patches: torch.Tensor, layout: TokenLayout, prefix: torch.Tensor | None) -> torch.Tensor:
    """timm's ``avg`` / ``max`` / ``avgmax`` / ``token`` pooling of each image's patch tokens
    (``patches`` (T, D) in packed order; ``prefix`` (S, prefix, D)) -> (S, D)."""
    s = layout.num_images
    if kind == "token":
        return prefix[:, 0]
    if kind == "avg":
        return _segment_mean(patches, layout.seg, layout.lens, s)
    if kind == "max":
        return _segment_max(patches, layout.seg, s)
    return 0.5 * (_segment_mean(patches, layout.seg, layout.lens, s) + _segment_max(patches, layout.seg, s))


def attention_pool_packed(pool: nn.Module, patches: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """fastvit's :class:`~fastvit.layers.pool.AttentionPoolLatent` (timm's MAP head) applied to each
    image's patch tokens alone: the latent's softmax runs per image over packed rows, (S, D)."""
    s, d = layout.num_images, patches.shape[-1]
    h, hd = pool.num_heads, pool.head_dim
    q = pool.q_norm(pool.q(pool.latent[0, 0]).view(h, hd))
    k, v = pool.kv(patches).view(-1, 2, h, hd).unbind(1)
    scores = (pool.k_norm(k).float() * q.float()).sum(-1) * hd ** -0.5  # (T, h), softmax statistics in fp32
    peak = _segment_max(scores.detach(), layout.seg, s)  # softmax is shift-invariant: no gradient needed
    e = torch.exp(scores - peak[layout.seg])
    den = e.new_zeros(s, h).index_add(0, layout.seg, e)
    out = e.new_zeros(s, h, hd).index_add(0, layout.seg, e[..., None] * v.float()) / den[..., None]
    y = pool.proj_drop(pool.proj(out.to(v.dtype).reshape(s, d)))
    return y + pool.mlp(pool.norm(y))
