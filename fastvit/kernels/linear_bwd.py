"""Backward of the epilogue-fused GEMMs (:mod:`linear`, :mod:`linear_tma`, :mod:`mlp`).

Kept apart from the forward kernels so each file reads top to bottom: the
elementwise GELU-backward kernel and its launcher, its registered op, then the
autograd functions the forward ops register.

- ``linear_gelu``: the forward saved ``x``, ``W`` and the pre-activation
  ``h``; ``dh = dout * gelu'(h)`` is one elementwise Triton kernel
  (:func:`linear_gelu_bwd`), then ``dx = dh @ W``, ``dW = dh^T @ x`` with
  ``torch.matmul`` (cuBLAS on a GPU) and ``db = dh.sum(0)`` in fp32.
- ``linear_residual`` (and fc2 of ``mlp_residual``): ``d_residual = dout``;
  with ``d = scale * dout`` (the per-sample stochastic-depth factor),
  :func:`branch_grads` gives the branch's gradients.

LayerScale (``gamma``, one factor per output channel) costs the backward no
extra GEMM and no saved activation. With ``G = d^T @ x`` (N, K):

- ``dW = gamma[:, None] * G`` and ``db = gamma * sum_rows(d)`` -- the same
  GEMM the plain backward runs, scaled afterwards (an N x K elementwise pass);
- ``dgamma[n] = sum_rows(d * (x W^T + b))[n] = sum_k G[n, k] W[n, k] + b[n] sum_rows(d)[n]``:
  the branch output ``x W^T + b`` is never recomputed nor saved (saving it
  would cost an M x N tensor per block, recomputing it a third GEMM);
- ``dx = (gamma * d) @ W``.

Nothing uses atomics, so gradients are deterministic. Launchers follow the
naming scheme of docs/kernels.md: the kernel
``_linear_gelu_bwd_kernel``, its launcher :func:`linear_gelu_bwd`, the op
``fastvit::linear_gelu_bwd``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastvit.kernels.gemm_epilogue import gelu_grad
from fastvit.kernels.linear_checks import out_buffer

# The elementwise GELU backward: one program per BLOCK elements.
GELU_BWD_CONFIG = dict(BLOCK=4096, num_warps=8)


@triton.jit
def _linear_gelu_bwd_kernel(
    DOUT, PRE, DH,
    numel,
    APPROXIMATE: tl.constexpr,  # "none" (erf) | "tanh" | "quick"
    BLOCK: tl.constexpr,
):  # fmt: skip
    """DH = DOUT * gelu'(PRE) over contiguous flat tensors, computed in fp32."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    h = tl.load(PRE + offs, mask=mask, other=0.0).to(tl.float32)
    dout = tl.load(DOUT + offs, mask=mask, other=0.0).to(tl.float32)
    grad = gelu_grad(h, APPROXIMATE)
    tl.store(DH + offs, (dout * grad).to(DH.dtype.element_ty), mask=mask)


def linear_gelu_bwd(grad, pre, approximate="none", *, out=None):
    """``grad * gelu'(pre)`` elementwise, in ``pre``'s dtype; ``out`` may be preallocated."""
    grad = grad.contiguous()
    pre = pre.contiguous()
    dh = out_buffer(out, pre, tuple(pre.shape), "out")
    numel = pre.numel()
    if numel > 0:
        block = GELU_BWD_CONFIG["BLOCK"]
        _linear_gelu_bwd_kernel[(triton.cdiv(numel, block),)](
            grad, pre, dh, numel, APPROXIMATE=approximate, BLOCK=block, num_warps=GELU_BWD_CONFIG["num_warps"]
        )
    return dh


@torch.library.custom_op("fastvit::linear_gelu_bwd", mutates_args=())
def _linear_gelu_bwd_op(grad: torch.Tensor, pre: torch.Tensor, approximate: str) -> torch.Tensor:
    """``grad * gelu'(pre)``, contiguous, in ``pre``'s dtype."""
    return linear_gelu_bwd(grad, pre, approximate)


@_linear_gelu_bwd_op.register_fake
def _(grad, pre, approximate):
    return torch.empty_like(pre, memory_format=torch.contiguous_format)


# ---------------------------------------------------------------------------
# Gradients of a GEMM branch
# ---------------------------------------------------------------------------


def scaled(grad_out: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``scale[row // rows_per_sample] * grad_out`` (the stochastic-depth factor); ``grad_out`` without one."""
    if scale is None or scale.shape[0] == 0:
        return grad_out
    rows, n = grad_out.shape
    return (grad_out.reshape(scale.shape[0], rows // scale.shape[0], n) * scale[:, None, None]).reshape(rows, n)


def linear_grads(need, dh, x, weight):
    """(dx, dW, db) of ``h = x @ W^T + b`` given ``dh``; torch.matmul, fp32 bias sum. ``need``: 3 flags."""
    dx = dh @ weight if need[0] else None
    dw = dh.t() @ x if need[1] else None
    db = dh.sum(0, dtype=torch.float32).to(dh.dtype) if need[2] else None
    return dx, dw, db


def branch_grads(need, d, x, weight, bias, gamma):
    """Gradients of ``gamma * (x @ W^T + b)`` given ``d``, the gradient of that product.

    ``need``: flags for (x, W, b, gamma). Returns ``(dg, dx, dW, db, dgamma)``
    where ``dg = gamma * d`` in x's dtype is the gradient reaching
    ``x @ W^T + b`` (fc2's input gradient GEMM in :mod:`mlp` takes it). Without
    gamma this is the plain backward; with it see the module docstring.
    """
    if gamma is None:
        dg = d.to(x.dtype)
        dx, dw, db = linear_grads(need, dg, x, weight)
        return dg, dx, dw, db, None
    gamma32 = gamma.to(torch.float32)
    dg = (d.to(torch.float32) * gamma32).to(x.dtype)
    dx = dg @ weight if need[0] else None
    dw = db = dgamma = None
    if need[1] or need[3]:
        g = (d.to(x.dtype).t() @ x).to(torch.float32)  # (N, K): G = d^T x
        if need[1]:
            dw = (g * gamma32[:, None]).to(weight.dtype)
        if need[3]:
            dgamma = (g * weight.to(torch.float32)).sum(1)
    if need[2] or need[3]:
        d_sum = d.sum(0, dtype=torch.float32)
        if need[2]:
            db = (d_sum * gamma32).to(bias.dtype)
        if need[3]:
            dgamma = (dgamma + bias.to(torch.float32) * d_sum).to(gamma.dtype)
    return dg, dx, dw, db, dgamma


# ---------------------------------------------------------------------------
# Autograd of the forward ops (registered by linear.py and linear_tma.py)
# ---------------------------------------------------------------------------


def linear_gelu_setup(ctx, inputs, output):
    x, weight, _, approximate, save_pre, _ = inputs
    _, pre = output
    ctx.mark_non_differentiable(pre)
    ctx.set_materialize_grads(False)
    ctx.approximate = approximate
    ctx.save_pre = save_pre
    ctx.save_for_backward(x, weight, pre)


def linear_gelu_backward(ctx, grad_out, _grad_pre):
    if grad_out is None:
        return None, None, None, None, None, None
    if not ctx.save_pre:
        raise RuntimeError(
            "fastvit::linear_gelu_fwd was called with save_pre=False, so its backward has no pre-activation; "
            "call fastvit.kernels.linear_gelu, which saves it whenever a gradient is needed"
        )
    x, weight, pre = ctx.saved_tensors
    dh = torch.ops.fastvit.linear_gelu_bwd(grad_out, pre, ctx.approximate)
    return (*linear_grads(ctx.needs_input_grad, dh, x, weight), None, None, None)


def linear_residual_setup(ctx, inputs, output):
    x, weight, bias, _, scale, gamma, _ = inputs
    ctx.save_for_backward(x, weight, bias if gamma is not None else None, scale, gamma)


def linear_residual_backward(ctx, grad_out):
    x, weight, bias, scale, gamma = ctx.saved_tensors
    need = ctx.needs_input_grad
    _, dx, dw, db, dgamma = branch_grads((need[0], need[1], need[2], need[5]), scaled(grad_out, scale), x, weight,
                                         bias, gamma)  # fmt: skip
    return dx, dw, db, grad_out if need[3] else None, None, dgamma, None


KERNELS = {"bwd": _linear_gelu_bwd_kernel}
