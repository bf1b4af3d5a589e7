"""The transformer MLP branch: fc1 -> GELU -> dropout -> fc2 (+ residual)."""

from __future__ import annotations

from torch import nn

from .linear import linear_parts


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0, linear_impl: str = "torch"):
        super().__init__()
        fc1_cls, act_cls, fc2_cls = linear_parts(linear_impl)
        self.fc1 = fc1_cls(dim, hidden_dim)
        self.act = act_cls()
        self.drop = nn.Dropout(drop)
        self.fc2 = fc2_cls(hidden_dim, dim, drop=drop, drop_path=drop_path)

    def forward(self, x, residual):
        """``residual + MLP(x)``; x is the normalized input."""
        return self.fc2(self.drop(self.act(self.fc1(x))), residual)
