"""The SwiGLU MLP branch (timm's ``SwiGLUPacked``, DINOv2 giant): one packed fc1, a gated product, fc2."""

from __future__ import annotations

import torch
from torch import nn

from .activations import create_activation
from .linear import linear_parts


class GluMlp(nn.Module):
    """``residual + fc2(act(x1) * x2)`` where ``x1, x2`` are the two halves of ``fc1(x)``.

    timm's parameter names (``fc1`` D -> H, ``fc2`` H/2 -> D, ``norm`` an Identity as in
    timm's ``GluMlp`` without ``scale_mlp_norm``) and the same ``forward(x, residual)``
    contract as :class:`fastvit.layers.mlp.Mlp`: the branch owns the residual add, in
    fc2 (a residual linear of ``linear_impl``), with dropout and stochastic depth.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0,
                 linear_impl: str = "torch", act_layer: str = "silu"):
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"a gated MLP splits fc1's outputs in two halves: hidden_dim must be even, got {hidden_dim}")
        fc2_cls = linear_parts(linear_impl)[2]
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = create_activation(act_layer)
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = fc2_cls(hidden_dim // 2, dim, drop=drop, drop_path=drop_path)

    def gated(self, x: torch.Tensor) -> torch.Tensor:
        """fc2's input: ``act(first half) * second half`` of fc1's output, after dropout."""
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.norm(self.drop1(self.act(gate) * value))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + MLP(x)``; x is the normalized input."""
        return self.fc2(self.gated(x), residual)
