"""LayerScale folded into the projection before it, for inference.

A block branch ending in ``gamma * (x @ W^T + b)`` (timm's ``ls1`` / ``ls2``
after ``attn.proj`` / ``mlp.fc2``) equals ``x @ (gamma[:, None] * W)^T + gamma * b``:
with frozen weights the factor can be folded once, and the residual GEMM then
runs without its ``gamma`` epilogue load. Training keeps ``gamma`` separate
(:func:`fastvit.kernels.linear_residual` with ``gamma=`` gives its gradient).

The product is formed in fp32 and rounded once to the weight's dtype, so a
bf16 weight folded with an fp32 gamma differs from the unfolded bf16 GEMM only
by that one rounding of each weight. Pure PyTorch: importing this module does
not import Triton.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_layer_scale(weight: torch.Tensor, bias: torch.Tensor | None, gamma: torch.Tensor):
    """``(gamma[:, None] * weight, gamma * bias)`` in the weight's / bias's dtypes (no gradient)."""
    for name, t in (("weight", weight), ("gamma", gamma)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"fold_layer_scale: {name} must be a torch.Tensor, got {type(t).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"fold_layer_scale: weight must be 2-D (out_features, in_features), got {tuple(weight.shape)}")
    if gamma.shape != (weight.shape[0],):
        raise ValueError(f"fold_layer_scale: gamma must have shape ({weight.shape[0]},), got {tuple(gamma.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"fold_layer_scale: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    with torch.no_grad():
        g = gamma.to(device=weight.device, dtype=torch.float32)
        folded_w = (weight.to(torch.float32) * g[:, None]).to(weight.dtype)
        folded_b = None if bias is None else (bias.to(torch.float32) * g).to(bias.dtype)
    return folded_w, folded_b


@torch.no_grad()
def fold_layer_scale_(linear: nn.Linear, gamma: torch.Tensor) -> nn.Linear:
    """Fold ``gamma`` into ``linear``'s weight and bias in place; returns ``linear``.

    Afterwards ``linear(x) == gamma * old_linear(x)`` up to one rounding per
    weight; the caller then drops the LayerScale (e.g. replaces ``ls2`` by an
    identity or passes ``gamma=None``). The state dict changes, so fold only a
    model used for inference.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"fold_layer_scale_: expected an nn.Linear, got {type(linear).__name__}")
    weight, bias = fold_layer_scale(linear.weight, linear.bias, gamma)
    linear.weight.copy_(weight)
    if bias is not None:
        linear.bias.copy_(bias)
    return linear
