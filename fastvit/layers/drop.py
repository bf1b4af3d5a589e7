"""Stochastic depth."""

from __future__ import annotations

import torch
from torch import nn


def drop_path_scale(batch: int, p: float, *, dtype: torch.dtype, device) -> torch.Tensor:
    """Per-sample factors of stochastic depth: 0 with probability ``p``, else 1/(1-p). Shape (batch,)."""
    keep = 1.0 - p
    return torch.empty(batch, dtype=dtype, device=device).bernoulli_(keep).div_(keep)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``p``, scaling survivors by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    scale = drop_path_scale(x.shape[0], p, dtype=x.dtype, device=x.device)
    return x * scale.view((-1,) + (1,) * (x.ndim - 1))


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        return drop_path(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
