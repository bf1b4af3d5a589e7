"""Argument checks of the fused-GEMM ops (:mod:`linear`, :mod:`linear_tma`, :mod:`mlp`), against
the dtypes their declarations (:mod:`fastvit.kernels.ops`) give; imports no op file.

Each raises a TypeError / ValueError naming the op, the argument and what was
expected, before anything is launched or allocated.
"""

from __future__ import annotations

import torch

from fastvit.kernels.ops import FLOATS as DTYPES, device_reason


def rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a 2-D (rows, features) matrix; a view when the strides allow."""
    return t.reshape(t.shape[:-1].numel(), t.shape[-1])


def needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _is_tensor(fn: str, name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")


def out_buffer(buf, like: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """A preallocated output ``buf`` after checking it, or a new one like ``like``."""
    if buf is None:
        return like.new_empty(shape)
    if buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device or not buf.is_contiguous():
        raise ValueError(
            f"{name}: expected a contiguous {like.dtype} tensor of shape {shape} on {like.device}, "
            f"got {buf.dtype} {tuple(buf.shape)} on {buf.device} (contiguous={buf.is_contiguous()})"
        )
    return buf


def check_linear_args(fn: str, x, weight, bias) -> None:
    """x (..., K) float on CUDA (or the interpreter), weight (N, K) and bias (N,) of x's dtype and device."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        _is_tensor(fn, name, t)
    if x.dtype not in DTYPES:
        raise TypeError(f"{fn}: x must be float16, bfloat16 or float32, got {x.dtype}")
    if device_reason(x.device) is not None:
        raise ValueError(f"{fn}: x must be a CUDA tensor (or TRITON_INTERPRET=1 on CPU), got device {x.device}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t.dtype != x.dtype:
            raise TypeError(f"{fn}: {name} must have x's dtype {x.dtype}, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{fn}: {name} must be on x's device {x.device}, got {t.device}")
    if x.dim() < 1:
        raise ValueError(f"{fn}: x must have at least one dimension (..., in_features), got a 0-d tensor")
    if weight.dim() != 2:
        raise ValueError(f"{fn}: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{fn}: x's last dimension must equal weight's in_features {weight.shape[1]}, "
            f"got x of shape {tuple(x.shape)}"
        )
    if bias.shape != (weight.shape[0],):
        raise ValueError(
            f"{fn}: bias must have shape (out_features,) = ({weight.shape[0]},), got {tuple(bias.shape)}"
        )


def check_residual(fn: str, x, weight, residual) -> tuple[int, ...]:
    """``residual`` has the output's shape and x's dtype or fp32; returns the output shape."""
    _is_tensor(fn, "residual", residual)
    out_shape = (*x.shape[:-1], weight.shape[0])
    if residual.shape != out_shape:
        raise ValueError(f"{fn}: residual must have the output's shape {out_shape}, got {tuple(residual.shape)}")
    if residual.dtype not in (x.dtype, torch.float32):
        raise TypeError(f"{fn}: residual must have x's dtype ({x.dtype}) or torch.float32, got {residual.dtype}")
    if residual.device != x.device:
        raise ValueError(f"{fn}: residual must be on x's device {x.device}, got {residual.device}")
    return out_shape


def check_scale(fn: str, scale, x) -> torch.Tensor:
    """``scale`` as a contiguous fp32 (x.shape[0],) tensor, or a clear error."""
    if not isinstance(scale, torch.Tensor):
        raise TypeError(f"{fn}: scale must be a torch.Tensor or None, got {type(scale).__name__}")
    if x.dim() < 2 or scale.shape != (x.shape[0],):
        raise ValueError(
            f"{fn}: scale must have shape (x.shape[0],) for x of shape (batch, ..., in_features), "
            f"got scale {tuple(scale.shape)} and x {tuple(x.shape)}"
        )
    if not scale.is_floating_point():
        raise TypeError(f"{fn}: scale must be a floating-point tensor, got {scale.dtype}")
    if scale.device != x.device:
        raise ValueError(f"{fn}: scale must be on x's device {x.device}, got {scale.device}")
    if scale.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{fn}: scale receives no gradient; pass scale.detach()")
    return scale.to(torch.float32).contiguous()


def check_gamma(fn: str, gamma, x, weight) -> torch.Tensor:
    """``gamma`` (LayerScale) as a contiguous (out_features,) tensor of x's dtype or fp32, or a clear error."""
    if not isinstance(gamma, torch.Tensor):
        raise TypeError(f"{fn}: gamma must be a torch.Tensor or None, got {type(gamma).__name__}")
    if gamma.shape != (weight.shape[0],):
        raise ValueError(
            f"{fn}: gamma must have shape (out_features,) = ({weight.shape[0]},), got {tuple(gamma.shape)}"
        )
    if gamma.dtype not in (x.dtype, torch.float32):
        raise TypeError(f"{fn}: gamma must have x's dtype ({x.dtype}) or torch.float32, got {gamma.dtype}")
    if gamma.device != x.device:
        raise ValueError(f"{fn}: gamma must be on x's device {x.device}, got {gamma.device}")
    return gamma.contiguous()
