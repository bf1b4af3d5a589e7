"""The SwiGLU MLP branch (timm's ``SwiGLUPacked``, DINOv2 giant): one packed fc1, a gated product, fc2."""

from __future__ import annotations

import torch
from torch import nn

from .linear import ResidualLinear


class GluMlp(nn.Module):
    """``residual + fc2(act(x1) * x2)`` where ``x1, x2`` are the two halves of ``fc1(x)``.

    timm's parameter names (``fc1`` D -> H, ``fc2`` H/2 -> D, ``norm`` an Identity as in
    timm's ``GluMlp`` without ``scale_mlp_norm``) and the same ``forward(x, residual)``
    contract as :class:`fastvit.layers.mlp.Mlp`: the branch owns the residual add, in
    ``fc2`` (a residual linear: dropout, stochastic depth, the LayerScale ``gamma``).
    The layers are given as for ``Mlp``; ``act_layer`` is the gate's activation class.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0, *,
                 fc1_layer=nn.Linear, act_layer=nn.SiLU, fc2_layer=ResidualLinear):
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"a gated MLP splits fc1's outputs in two halves: hidden_dim must be even, got {hidden_dim}")
        self.fc1 = fc1_layer(dim, hidden_dim)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = fc2_layer(hidden_dim // 2, dim, drop=drop, drop_path=drop_path)

    def gated(self, x: torch.Tensor) -> torch.Tensor:
        """fc2's input: ``act(first half) * second half`` of fc1's output, after dropout."""
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.norm(self.drop1(self.act(gate) * value))

    def forward(self, x: torch.Tensor, residual: torch.Tensor, gamma=None) -> torch.Tensor:
        """``residual + MLP(x)`` (times the LayerScale ``gamma`` if given); x is the normalized input."""
        return self.fc2(self.gated(x), residual, gamma)
