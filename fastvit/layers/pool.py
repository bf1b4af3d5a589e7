"""Attention pooling with a learned latent query (timm's ``AttentionPoolLatent``; SigLIP's MAP head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activations import create_activation


@torch.fx.wrap
def _check_tokens(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Tokens (B, N, dim) or a clear error; returns ``x`` (an ``fx`` leaf, so the check traces)."""
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f"expected tokens (B, N, {dim}), got {tuple(x.shape)}")
    return x


class PoolMlp(nn.Module):
    """fc1 -> activation -> fc2: the pool's MLP (timm's ``Mlp`` names; no residual inside)."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = create_activation(act_layer)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class AttentionPoolLatent(nn.Module):
    """Tokens (B, N, D) -> one pooled feature (B, D).

    A learned latent (1, 1, D) queries the tokens with multi-head attention
    (``q`` on the latent, packed ``kv`` on the tokens, optional ``q_norm``/``k_norm``
    on the heads), ``proj`` projects the result, and a pre-norm MLP adds its output:
    ``y = proj(attn); y + mlp(norm(y))``. Parameter names are timm's
    (``latent``, ``q``, ``kv``, ``q_norm``, ``k_norm``, ``proj``, ``norm``,
    ``mlp.fc1``, ``mlp.fc2``), for its defaults: one latent, ``pool_type="token"``.
    """

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_norm: bool = False, norm_eps: float = 1e-6, act_layer: str = "gelu", drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.latent_len = 1
        self.latent = nn.Parameter(torch.zeros(1, self.latent_len, dim))
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        norm = (lambda: nn.LayerNorm(self.head_dim, eps=norm_eps)) if qk_norm else nn.Identity
        self.q_norm, self.k_norm = norm(), norm()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = PoolMlp(dim, int(dim * mlp_ratio), act_layer)
        self.init_weights()

    def init_weights(self):
        """timm's: the latent trunc-normal with std dim**-0.5 (the Linear layers keep the model's init)."""
        nn.init.trunc_normal_(self.latent, std=self.latent.shape[-1] ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.latent.shape[-1]
        x = _check_tokens(x, d)
        b, n = x.shape[0], x.shape[1]
        h, hd = self.num_heads, self.head_dim
        q = self.q(self.latent.expand(b, -1, -1)).reshape(b, self.latent_len, h, hd).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, h, hd).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        y = self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, self.latent_len, d)))
        y = y + self.mlp(self.norm(y))
        return y[:, 0]
