"""The MLP activations by timm's names (``ViTConfig.act_layer``): gelu, gelu_tanh, quick_gelu, silu."""

from __future__ import annotations

import torch
from torch import nn


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


class QuickGELU(nn.Module):
    """:func:`quick_gelu` as a module (OpenAI CLIP's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quick_gelu(x)


class GELUTanh(nn.GELU):
    """GELU with the tanh approximation (timm's ``gelu_tanh``, Hugging Face's ``gelu_pytorch_tanh``)."""

    def __init__(self):
        super().__init__(approximate="tanh")


# name -> module class (built with no arguments)
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "gelu_tanh": GELUTanh, "quick_gelu": QuickGELU, "silu": nn.SiLU}

# The `approximate=` argument of fastvit's fused GELU epilogues for each activation that has one.
GELU_APPROXIMATE = {"gelu": "none", "gelu_tanh": "tanh", "quick_gelu": "quick"}


def gelu_approximate(act_layer: str) -> str:
    """The fused epilogue's ``approximate`` for an ``act_layer`` name, or a ValueError naming the choices."""
    if act_layer not in GELU_APPROXIMATE:
        raise ValueError(f"act_layer {act_layer!r} has no fused GELU epilogue; expected one of {sorted(GELU_APPROXIMATE)}")
    return GELU_APPROXIMATE[act_layer]


def activation_class(name: str) -> type[nn.Module]:
    """The module class of activation ``name`` (one of :data:`ACTIVATIONS`)."""
    if not isinstance(name, str):
        raise TypeError(f"act_layer must be a string, one of {list(ACTIVATIONS)}; got {name!r}")
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown act_layer {name!r}; valid: {list(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def create_activation(name: str) -> nn.Module:
    """A fresh module for activation ``name``."""
    return activation_class(name)()
