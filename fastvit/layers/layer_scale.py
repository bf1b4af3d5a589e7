"""LayerScale (Touvron et al. 2021, CaiT / DeiT III): a learned per-channel scale on a residual branch."""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """``x * gamma`` over the last dimension; ``gamma`` (dim,) starts at ``init_values`` (timm's names).

    In a block the branch owns its residual add, so the block hands ``gamma`` to the
    branch's last projection, which computes ``residual + drop_path(gamma * y)``; calling
    the module itself gives the plain product.
    """

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.constant_(self.gamma, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"{self.gamma.shape[0]}, init_values={self.init_values}"
