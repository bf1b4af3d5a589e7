"""The parts of timm's AIMv2 layout (``proj_bias=False``, ``mlp_layer=SwiGLU``, ``embed_norm_layer``):
projections without bias, the unpacked SwiGLU MLP (``fc1_g``, ``fc1_x``, ``fc2``) and a patch
embedding with a norm after it. Same contracts as the layers they stand in for."""

from __future__ import annotations

import torch
from torch import nn

from .drop import DropPath
from .embed import PatchEmbed
from .glu import FusedGate
from .linear import ResidualLinear


class BiasFreeResidualLinear(ResidualLinear):
    """:class:`~fastvit.layers.linear.ResidualLinear` without a bias (``residual + drop_path(gamma * drop(x W^T))``)."""

    def __init__(self, in_features: int, out_features: int, drop: float = 0.0, drop_path: float = 0.0):
        nn.Linear.__init__(self, in_features, out_features, bias=False)
        self.drop = nn.Dropout(drop)
        self.drop_path = DropPath(drop_path)


class SwiGLU(FusedGate, nn.Module):
    """``residual + fc2(norm(act(fc1_g(x)) * fc1_x(x)))``: timm's unpacked SwiGLU (``SwiGLU``), each
    fc1 D -> H; ``bias`` for all three projections; ``forward(x, residual, gamma=None)`` as ``Mlp``;
    ``gate_impl``: how the gate runs (:class:`~fastvit.layers.glu.FusedGate`)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0, *, act_layer=nn.SiLU,
                 bias: bool = True, gate_impl: str = "torch"):
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc1_x = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        fc2 = ResidualLinear if bias else BiasFreeResidualLinear
        self.fc2 = fc2(hidden_dim, dim, drop=drop, drop_path=drop_path)
        self.init_gate(gate_impl, self.act)

    def fc1_weights(self):
        return self.fc1_g.weight, self.fc1_g.bias, self.fc1_x.weight, self.fc1_x.bias

    def torch_gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc1_g(x)) * self.fc1_x(x)

    def forward(self, x: torch.Tensor, residual: torch.Tensor, gamma=None) -> torch.Tensor:
        return self.fc2(self.norm(self.drop1(self.gate(x))), residual, gamma)


class NormedPatchEmbed(PatchEmbed):
    """:class:`~fastvit.layers.embed.PatchEmbed` followed by ``norm`` over the tokens."""

    def __init__(self, *args, norm_layer, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm_layer(self.proj.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))
