"""Differential attention (Ye et al. 2024, "Differential Transformer"), timm's ``DiffAttention``.

Each head splits in two half-width query/key heads; the output is the difference of their two
softmax attentions over the same (full-width) values, the second scaled by a learned lambda,
then an RMS norm over the head (``sub_norm``) and a fixed ``1 - lambda_init``:

    out_h = RMSNorm(softmax(q1 k1^T s) v - lambda * softmax(q2 k2^T s) v) * (1 - lambda_init)
    lambda = exp(lambda_q1 . lambda_k1) - exp(lambda_q2 . lambda_k2) + lambda_init
    lambda_init = 0.8 - 0.6 exp(-0.3 depth)         (depth: the block's index)

Head ``h`` takes the query/key heads ``2h`` and ``2h + 1`` of the projection, as timm lays them
out, so timm's weights load as they are. The two attentions run through PyTorch's SDPA (the
value width is twice the query width, which fastvit's kernel does not take).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .linear import ResidualLinear

SUB_NORM_EPS = 1e-5


def lambda_init_at(depth: int) -> float:
    """The paper's depth-dependent initial lambda (and output scale ``1 - lambda_init``)."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


class Differential(nn.Module):
    """The attention between the projections, q, k, v (B, N, D) -> (B, N, D): the parameters of
    that part live on the module itself under timm's names (``q_norm`` / ``k_norm`` over the
    half-width heads, ``lambda_q1 / k1 / q2 / k2``, ``sub_norm``: an RMS norm over a full head,
    eps 1e-5). :class:`DiffAttention` and the differential parallel block
    (:mod:`fastvit.layers.block_layouts`) subclass it and add their projections.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, qk_norm_layer=None, depth: int = 0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads // 2  # the half-width q/k heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.q_norm = qk_norm_layer(self.head_dim) if qk_norm_layer is not None else nn.Identity()
        self.k_norm = qk_norm_layer(self.head_dim) if qk_norm_layer is not None else nn.Identity()
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.empty(self.head_dim)) for _ in range(4))
        self.sub_norm = nn.RMSNorm(2 * self.head_dim, eps=SUB_NORM_EPS)
        self.set_depth(depth)
        self.reset_lambdas()

    def set_depth(self, depth: int):
        """The block index fixes ``lambda_init`` (a constant, not a parameter)."""
        self.lambda_init = lambda_init_at(depth)

    def reset_lambdas(self):
        for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(p, mean=0.0, std=0.1)

    def lambda_full(self) -> torch.Tensor:
        l1 = torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1, dim=-1).float())
        l2 = torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2, dim=-1).float())
        return l1 - l2 + self.lambda_init

    def differential(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        h, hd = self.num_heads, self.head_dim
        q = self.q_norm(q.reshape(b, n, 2 * h, hd).transpose(1, 2)).reshape(b, h, 2, n, hd)
        k = self.k_norm(k.reshape(b, n, 2 * h, hd).transpose(1, 2)).reshape(b, h, 2, n, hd)
        v = v.reshape(b, n, h, 2 * hd).transpose(1, 2)
        p = self.attn_drop if self.training else 0.0
        first = F.scaled_dot_product_attention(q[:, :, 0], k[:, :, 0], v, dropout_p=p, scale=self.scale)
        second = F.scaled_dot_product_attention(q[:, :, 1], k[:, :, 1], v, dropout_p=p, scale=self.scale)
        out = self.sub_norm(first - self.lambda_full().type_as(q) * second) * (1 - self.lambda_init)
        return out.transpose(1, 2).reshape(b, n, c)


class DiffAttention(Differential):
    """qkv projection -> differential attention -> output projection (+ residual).

    The same contract as :class:`fastvit.layers.attention.Attention`: ``forward(x, residual,
    gamma=None)`` returns ``residual + drop_path(gamma * proj(attn(x)))``, ``proj_layer`` being the
    residual projection that ``linear_impl`` resolves to. timm's names: ``qkv``, ``q_norm``,
    ``k_norm``, ``lambda_*``, ``sub_norm``, ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 drop_path: float = 0.0, *, proj_layer=ResidualLinear, qk_norm_layer=None, depth: int = 0):
        super().__init__(dim, num_heads, attn_drop, qk_norm_layer, depth)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = proj_layer(dim, dim, drop=proj_drop, drop_path=drop_path)

    def forward(self, x, residual, gamma=None):
        out = self.differential(*self.qkv(x).chunk(3, dim=-1))
        return self.proj(out, residual) if gamma is None else self.proj(out, residual, gamma)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, lambda_init={self.lambda_init:.4f}"
