"""timm's "scale norms" (``scale_attn_norm`` / ``scale_mlp_norm``, BEiT-3's Magneto layout): a
norm on the attention output before its projection (``attn.norm``) and on the MLP's hidden layer
before ``fc2`` (``mlp.norm``). The branches keep fastvit's contract, ``forward(x, residual,
gamma=None)`` with the residual added in the last projection."""

from __future__ import annotations

from .attention import Attention
from .mlp import Mlp


class ScaleNormAttention(Attention):
    """:class:`~fastvit.layers.attention.Attention` with ``norm`` (width ``dim``) before ``proj``."""

    def __init__(self, dim: int, *args, norm_layer, **kwargs):
        super().__init__(dim, *args, **kwargs)
        self.norm = norm_layer(dim)

    def forward(self, x, residual, gamma=None):
        out = self.norm(self.attend(x))
        return self.proj(out, residual) if gamma is None else self.proj(out, residual, gamma)


class ScaleNormMlp(Mlp):
    """:class:`~fastvit.layers.mlp.Mlp` with ``norm`` (the hidden width) between the activation and ``fc2``."""

    def __init__(self, dim: int, hidden_dim: int, *args, norm_layer, **kwargs):
        super().__init__(dim, hidden_dim, *args, **kwargs)
        self.norm = norm_layer(hidden_dim)

    def forward(self, x, residual, gamma=None):
        return self.fc2(self.norm(self.drop(self.act(self.fc1(x)))), residual, gamma)
