"""RMSNorm (Triton), forward and backward: ``y = x * rsqrt(mean(x^2) + eps) * weight`` over the last dim.

``rms_norm(x, weight)``; ``rms_norm_fork(x, weight)`` returns ``(RMSNorm(x), x)`` for a block's norm at
its residual junction, whose backward adds the residual's gradient inside the RMSNorm backward kernel.

timm's ``RmsNorm`` / PyTorch's ``nn.RMSNorm`` with an affine weight and no bias (AIMv2). The
kernels are LayerNorm's (:mod:`fastvit.kernels.norm`) with ``IS_RMS``: the same row tiles, fp32
statistics (only ``rstd`` is kept), the same fixed-order dW reduction without atomics. Inputs of
any leading dims and strides, fp32/fp16/bf16, width 0..4096, weight in x's dtype or fp32; the
output in ``out_dtype`` (default x's, as ``F.rms_norm``). Reference:
:func:`fastvit.kernels.reference.rms_norm_ref`. In order: torch.library ops and fakes, autograd,
argument checks, the public functions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fastvit.kernels import norm
from fastvit.kernels.ops import FLOATS, MAX_HIDDEN, device_reason

# eps=None, as F.rms_norm takes it: the machine epsilon of the fp32 statistics (for every input dtype)
DEFAULT_EPS = torch.finfo(torch.float32).eps


# --------------------------------------------------------------------------- torch.library ops


@torch.library.custom_op("fastvit::rms_norm_fwd", mutates_args=())
def rms_norm_fwd_op(x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Returns ``(RMSNorm(x), rstd)``; rstd is fp32 of shape ``(rows,)``."""
    _, out, _, rstd = norm.layer_norm_fwd(x, weight, None, eps, out_dtype=out_dtype, rms=True)
    return out, rstd


@rms_norm_fwd_op.register_fake
def _(x, weight, eps, out_dtype=None):
    return x.new_empty(x.shape, dtype=out_dtype or x.dtype), x.new_empty((math.prod(x.shape[:-1]),), dtype=torch.float32)


@torch.library.custom_op("fastvit::rms_norm_bwd", mutates_args=())
def rms_norm_bwd_op(dout: Tensor, x: Tensor, weight: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    """Returns ``(dx, dweight)``."""
    dx, dweight, _ = norm.layer_norm_bwd(dout, x, weight, None, rstd)
    return dx, dweight


@rms_norm_bwd_op.register_fake
def _(dout, x, weight, rstd):
    return x.new_empty(x.shape), weight.new_empty(weight.shape)


@torch.library.custom_op("fastvit::rms_norm_fork_bwd", mutates_args=())
def rms_norm_fork_bwd_op(dout: Tensor, dresidual: Tensor, x: Tensor, weight: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    """Returns ``(dx + dresidual, dweight)`` from one launch."""
    dx, dweight, _ = norm.layer_norm_bwd(dout, x, weight, None, rstd, dresidual)
    return dx, dweight


@rms_norm_fork_bwd_op.register_fake
def _(dout, dresidual, x, weight, rstd):
    return x.new_empty(x.shape), weight.new_empty(weight.shape)


def _rms_norm_setup(ctx, inputs, output):
    x, weight, *_ = inputs
    ctx.save_for_backward(x, weight, output[1])


def _rms_norm_backward(ctx, dout, _drstd):
    dx, dweight = rms_norm_bwd_op(dout, *ctx.saved_tensors)
    return dx, dweight, None, None


rms_norm_fwd_op.register_autograd(_rms_norm_backward, setup_context=_rms_norm_setup)


class RMSNormFork(torch.autograd.Function):
    """``(RMSNorm(x), x)`` forward; ``dx = dRMSNorm(d_out) + d_residual`` in one backward launch."""

    @staticmethod
    def forward(ctx, x, weight, eps, out_dtype):
        out, rstd = rms_norm_fwd_op(x, weight, eps, out_dtype)
        ctx.save_for_backward(x, weight, rstd)
        ctx.set_materialize_grads(False)
        return out, x  # autograd returns x as a view whose grad_fn is this Function

    @staticmethod
    def backward(ctx, dout, dresidual):
        x, weight, rstd = ctx.saved_tensors
        if dout is None:  # only the residual was used: its gradient is x's
            return dresidual, None, None, None
        if dresidual is None:
            dx, dweight = rms_norm_bwd_op(dout, x, weight, rstd)
        else:
            dx, dweight = rms_norm_fork_bwd_op(dout, dresidual, x, weight, rstd)
        return dx, dweight, None, None


# --------------------------------------------------------------------------- argument checks


def _check_inputs(x, weight, eps, out_dtype):
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        got = "a 0-dim tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x: expected a tensor with at least 1 dim, got {got}")
    if x.dtype not in FLOATS:
        raise TypeError(f"x: expected float32, float16 or bfloat16, got {x.dtype}")
    n = x.shape[-1]
    if not 0 <= n <= MAX_HIDDEN:
        raise ValueError(f"x: expected hidden size (last dim) in 0..{MAX_HIDDEN}, got {n}")
    if device_reason(x.device) is not None:
        raise ValueError(f"x: expected a CUDA tensor (or TRITON_INTERPRET=1 for CPU), got device {x.device}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a tensor of shape ({n},), got {type(weight).__name__}")
    if weight.shape != (n,):
        raise ValueError(f"weight: expected shape ({n},) to match x's last dim, got {tuple(weight.shape)}")
    if weight.dtype not in (x.dtype, torch.float32):
        raise TypeError(f"weight: expected {x.dtype} (x's dtype) or torch.float32, got {weight.dtype}")
    if weight.device != x.device:
        raise ValueError(f"weight: expected device {x.device} like x, got {weight.device}")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0):
        raise TypeError(f"eps: expected None or a float >= 0, got {eps!r}")
    if out_dtype is not None and out_dtype not in FLOATS:
        raise TypeError(f"out_dtype: expected None, torch.float32, torch.float16 or torch.bfloat16, got {out_dtype}")


# --------------------------------------------------------------------------- public API


def rms_norm(x: Tensor, weight: Tensor, eps: float | None = 1e-6, *, out_dtype: torch.dtype | None = None) -> Tensor:
    """RMSNorm over the last dim of ``x``: ``x * rsqrt(mean(x^2) + eps) * weight``, statistics in fp32.

    ``eps`` None is fp32's machine epsilon, as ``F.rms_norm``. The output has ``out_dtype``
    (default ``x``'s); ``x``'s gradient comes back in ``x``'s dtype, ``weight``'s in its own.
    Saves ``x``, ``weight`` and the fp32 rstd per row for backward.
    """
    _check_inputs(x, weight, eps, out_dtype)
    eps = DEFAULT_EPS if eps is None else float(eps)
    return rms_norm_fwd_op(x, weight, eps, None if out_dtype == x.dtype else out_dtype)[0]


def rms_norm_fork(x: Tensor, weight: Tensor, eps: float | None = 1e-6, *,
                  out_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``(RMSNorm(x), x)``: the normalized input of a block's branch and the residual it keeps (``x``'s storage).
    Backward: ``x``'s gradient is RMSNorm's input gradient plus the residual's, from one kernel launch."""
    _check_inputs(x, weight, eps, out_dtype)
    eps = DEFAULT_EPS if eps is None else float(eps)
    return RMSNormFork.apply(x, weight, eps, None if out_dtype == x.dtype else out_dtype)


# The op's kernels, by pass: LayerNorm's, launched with IS_RMS (the compile check builds their RMS cases).
KERNELS = norm.KERNELS
