"""The transformer MLP branch: fc1 -> GELU -> dropout -> fc2 (+ residual)."""

from __future__ import annotations

from torch import nn

from .linear import GELU_APPROXIMATE, linear_parts, triton_mlp_forward


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0, linear_impl: str = "torch"):
        super().__init__()
        fc1_cls, act_cls, fc2_cls = linear_parts(linear_impl)
        self.fc1 = fc1_cls(dim, hidden_dim)
        self.act = act_cls()
        self.drop = nn.Dropout(drop)
        self.fc2 = fc2_cls(hidden_dim, dim, drop=drop, drop_path=drop_path)

    def forward(self, x, residual, gamma=None):
        """``residual + gamma * MLP(x)``; x is the normalized input, ``gamma`` an optional LayerScale."""
        return self.fc2(self.drop(self.act(self.fc1(x))), residual, gamma)


class TritonMlp(Mlp):
    """The same branch as one fused op (:func:`fastvit.kernels.mlp_residual`): its backward
    applies GELU's derivative in fc2's input-gradient GEMM instead of a separate pass.
    ``approximate`` ("none", "tanh", "quick") is fc1's GELU form; ``forward`` takes an optional
    LayerScale ``gamma`` applied in fc2's epilogue."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0, linear_impl: str = "triton",
                 approximate: str = "none"):  # fmt: skip
        super().__init__(dim, hidden_dim, drop=drop, drop_path=drop_path, linear_impl=linear_impl)
        if approximate not in GELU_APPROXIMATE.values():
            raise ValueError(f"approximate must be one of {sorted(GELU_APPROXIMATE.values())}, got {approximate!r}")
        self.fc1.approximate = approximate

    def forward(self, x, residual, gamma=None):
        return triton_mlp_forward(self.fc1, self.drop, self.fc2, x, residual, gamma)


def mlp_layer(linear_impl: str) -> type[Mlp]:
    """The MLP class for ``linear_impl``: the fused branch for "triton", separate ops otherwise."""
    return TritonMlp if linear_impl == "triton" else Mlp
