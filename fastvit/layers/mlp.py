"""The transformer MLP branch: fc1 -> activation -> dropout -> fc2 (+ residual).

The branch's layers are given to it (``fc1_layer``, ``act_layer``, ``fc2_layer``);
:func:`fastvit.parts.resolve_parts` picks them from ``linear_impl``.
"""

from __future__ import annotations

from torch import nn

from .kernel_ops import kernel_op
from .activations import GELU_APPROXIMATE
from .linear import ResidualLinear, TritonLinearGELU, TritonResidualLinear, triton_mlp_forward


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0, *,
                 fc1_layer=nn.Linear, act_layer=nn.GELU, fc2_layer=ResidualLinear):
        super().__init__()
        self.fc1 = fc1_layer(dim, hidden_dim)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = fc2_layer(hidden_dim, dim, drop=drop, drop_path=drop_path)

    def forward(self, x, residual, gamma=None):
        """``residual + gamma * MLP(x)``; x is the normalized input, ``gamma`` an optional LayerScale."""
        return self.fc2(self.drop(self.act(self.fc1(x))), residual, gamma)


class TritonMlp(Mlp):
    """The same branch as one fused op (:func:`fastvit.kernels.mlp_residual`): its backward
    applies GELU's derivative in fc2's input-gradient GEMM instead of a separate pass.
    ``approximate`` ("none", "tanh", "quick") is fc1's GELU form; ``forward`` takes an optional
    LayerScale ``gamma`` applied in fc2's epilogue."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0, *,
                 fc1_layer=TritonLinearGELU, act_layer=nn.Identity, fc2_layer=TritonResidualLinear,
                 approximate: str | None = None):  # fmt: skip
        if approximate is not None and approximate not in GELU_APPROXIMATE.values():
            raise ValueError(f"approximate must be one of {sorted(GELU_APPROXIMATE.values())}, got {approximate!r}")
        super().__init__(dim, hidden_dim, drop=drop, drop_path=drop_path, fc1_layer=fc1_layer, act_layer=act_layer,
                         fc2_layer=fc2_layer)
        if approximate is not None:  # else fc1's own (TritonLinearGELU's approximate=)
            self.fc1.approximate = approximate
        self.mlp_residual = kernel_op("mlp_residual")

    def forward(self, x, residual, gamma=None):
        return triton_mlp_forward(self.mlp_residual, self.fc1, self.drop, self.fc2, x, residual, gamma,
                                  self.fc1.approximate)
