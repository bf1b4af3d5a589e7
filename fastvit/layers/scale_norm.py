"""timm's "scale norms" (``scale_attn_norm`` / ``scale_mlp_norm``, BEiT-3's Magneto layout): a
norm on the attention output before its projection (``attn.norm``) and on the MLP's hidden layer
before ``fc2`` (``mlp.norm``). The branches keep fastvit's contract, ``forward(x, residual,
gamma=None)`` with the residual added in the last projection."""

from __future__ import annotations

from .attention import Attention, unpack_qkv
from .mlp import Mlp


class ScaleNormAttention(Attention):
    """:class:`~fastvit.layers.attention.Attention` with ``norm`` (width ``dim``) before ``proj``."""

    def __init__(self, dim: int, *args, norm_layer, **kwargs):
        super().__init__(dim, *args, **kwargs)
        self.norm = norm_layer(dim)

    def forward(self, x, residual, gamma=None):
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim)
        dropout_p = self.attn_drop if self.training else 0.0
        if self.qk_norm:
            q, k, v = unpack_qkv(qkv)
            out = self.unpacked_attn_fn(self.q_norm(q), self.k_norm(k), v, dropout_p=dropout_p, scale=self.scale)
        else:
            out = self.attn_fn(qkv, dropout_p=dropout_p, scale=self.scale)
        out = self.norm(out.transpose(1, 2).reshape(b, n, c))
        return self.proj(out, residual) if gamma is None else self.proj(out, residual, gamma)


class ScaleNormMlp(Mlp):
    """:class:`~fastvit.layers.mlp.Mlp` with ``norm`` (the hidden width) between the activation and ``fc2``."""

    def __init__(self, dim: int, hidden_dim: int, *args, norm_layer, **kwargs):
        super().__init__(dim, hidden_dim, *args, **kwargs)
        self.norm = norm_layer(hidden_dim)

    def forward(self, x, residual, gamma=None):
        return self.fc2(self.norm(self.drop(self.act(self.fc1(x)))), residual, gamma)
