"""A whole ViT MLP branch as one op: ``residual + scale * gamma * fc2(gelu(fc1(x)))``.

Forward: the two epilogue-fused GEMMs of :mod:`fastvit.kernels.linear` (fc1
with bias + GELU -- erf, tanh or quick -- writing the pre-activation ``h`` when
a gradient is needed; fc2 with bias, per-channel LayerScale ``gamma``,
per-sample scale and residual).

Backward, with ``d = scale * dout``:

- ``d_residual = dout``; fc2's weight, bias and ``gamma`` gradients from
  ``G2 = d^T @ a`` (``a = gelu(h)``, fc2's input, saved by the forward) as in
  :func:`fastvit.kernels.linear_bwd.branch_grads`: ``dW2 = gamma * G2``,
  ``db2 = gamma * sum(d)``, ``dgamma = rowsum(G2 * W2) + b2 * sum(d)``;
- ``dh = ((gamma * d) @ W2) * gelu'(h)`` in **one** Triton GEMM whose epilogue
  applies GELU's derivative (:func:`mlp_residual_bwd_dh`): the gradient of
  GELU's output, an (M, 4D) tensor, is never written or read back, which saves
  two passes over it (about 620 MB per ViT-B block per training step at batch
  256 in bf16) and one launch against the separate GELU-backward kernel that
  ``linear_gelu`` + ``linear_residual`` run;
- ``dx = dh @ W1``, ``dW1 = dh^T @ x``, ``db1 = sum(dh)`` (torch.matmul;
  bias sums in fp32). No atomics: gradients are deterministic.

Names (the scheme of docs/kernels.md): launchers :func:`mlp_residual_fwd`,
:func:`mlp_residual_bwd_dh`; ops ``fastvit::mlp_residual_fwd``,
``fastvit::mlp_residual_bwd_dh``; public :func:`mlp_residual`. Plain PyTorch
twin: :func:`fastvit.kernels.reference.mlp_residual_ref`.
"""

from __future__ import annotations

import torch

from fastvit.kernels import linear
from fastvit.kernels.gemm_epilogue import GELU_GRAD_EPILOGUE, check_approximate
from fastvit.kernels.linear_bwd import branch_grads, linear_grads, scaled
from fastvit.kernels.linear_checks import (
    check_gamma, check_linear_args, check_residual, check_scale, needs_grad, out_buffer, rows,
)  # fmt: skip



# ---------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------


def mlp_residual_fwd(x, w1, b1, w2, b2, residual, scale=None, gamma=None, approximate="none", *, save=False,
                     allow_tf32=False):  # fmt: skip
    """``(out, a, h)``: fc1 + GELU, then fc2 + LayerScale + scale + residual, on 2-D tensors.

    ``a = gelu(h)`` and ``h`` are written only when ``save`` (empty tensors otherwise).
    """
    a, h = linear.linear_gelu_fwd(x, w1, b1, approximate, save_pre=save, allow_tf32=allow_tf32)
    out = linear.linear_residual_fwd(a, w2, b2, residual, scale, gamma, allow_tf32=allow_tf32)
    return out, a if save else x.new_empty((0,)), h


def mlp_residual_bwd_dh(grad, weight, pre, approximate="none", *, allow_tf32=False, out=None):
    """``(grad @ weight) * gelu'(pre)`` in one GEMM, in ``pre``'s dtype.

    The backward of ``fc2(gelu(h))`` with respect to ``h``: ``grad`` (M, N) is
    the gradient of fc2's output (after any per-sample scale and LayerScale),
    ``weight`` fc2's (N, H) weight, ``pre`` the saved (M, H) pre-activation.
    The derivative is applied to the fp32 product before its one rounding, so
    the (M, H) gradient of GELU's output is never written.
    """
    M, H = grad.shape[0], weight.shape[1]
    dh = out_buffer(out, pre, (M, H), "out")
    if dh.numel() > 0:
        epilogue = GELU_GRAD_EPILOGUE[approximate]
        linear.launch_gemm(grad, weight.t(), None, epilogue, residual=pre, y=dh, pre=None, allow_tf32=allow_tf32)
    return dh


# ---------------------------------------------------------------------------
# torch.library ops and autograd
# ---------------------------------------------------------------------------


@torch.library.custom_op("fastvit::mlp_residual_bwd_dh", mutates_args=())
def _mlp_residual_bwd_dh_op(
    grad: torch.Tensor, weight: torch.Tensor, pre: torch.Tensor, approximate: str
) -> torch.Tensor:
    """``(grad @ weight) * gelu'(pre)`` in one GEMM; see :func:`mlp_residual_bwd_dh`."""
    return mlp_residual_bwd_dh(grad, weight, pre, approximate)


@_mlp_residual_bwd_dh_op.register_fake
def _(grad, weight, pre, approximate):
    return pre.new_empty((grad.shape[0], weight.shape[1]))


@torch.library.custom_op("fastvit::mlp_residual_fwd", mutates_args=())
def _mlp_residual_fwd_op(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    residual: torch.Tensor,
    scale: torch.Tensor | None,
    gamma: torch.Tensor | None,
    approximate: str,
    save: bool,
    allow_tf32: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(out, a, h)`` for 2-D ``x`` and ``residual``; ``a = gelu(h)`` and ``h`` are empty unless ``save``."""
    return mlp_residual_fwd(x, w1, b1, w2, b2, residual, scale, gamma, approximate, save=save, allow_tf32=allow_tf32)


@_mlp_residual_fwd_op.register_fake
def _(x, w1, b1, w2, b2, residual, scale, gamma, approximate, save, allow_tf32):
    saved = (x.shape[0], w1.shape[0]) if save else (0,)
    return residual.new_empty((x.shape[0], w2.shape[0])), x.new_empty(saved), x.new_empty(saved)


def _setup(ctx, inputs, output):
    x, w1, _, w2, b2, _, scale, gamma, approximate, save, _ = inputs
    _, a, h = output
    ctx.mark_non_differentiable(a, h)
    ctx.set_materialize_grads(False)
    ctx.approximate = approximate
    ctx.save = save
    ctx.save_for_backward(x, w1, w2, b2 if gamma is not None else None, a, h, scale, gamma)


def _backward(ctx, grad_out, _grad_a, _grad_h):
    if grad_out is None:
        return (None,) * 11
    if not ctx.save:
        raise RuntimeError(
            "fastvit::mlp_residual_fwd was called with save=False, so its backward has nothing saved; "
            "call fastvit.kernels.mlp_residual, which saves whenever a gradient is needed"
        )
    x, w1, w2, b2, a, h, scale, gamma = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_fc1 = need[0] or need[1] or need[2]
    # fc2's gradients; fc2's input gradient itself is fused into the dh GEMM below (need_x False here)
    dg, _, dw2, db2, dgamma = branch_grads((False, need[3], need[4], need[7]), scaled(grad_out, scale), a, w2, b2,
                                           gamma)  # fmt: skip
    dx = dw1 = db1 = None
    if need_fc1:
        dh = torch.ops.fastvit.mlp_residual_bwd_dh(dg, w2, h, ctx.approximate)
        dx, dw1, db1 = linear_grads(need[:3], dh, x, w1)
    return dx, dw1, db1, dw2, db2, grad_out if need[5] else None, None, dgamma, None, None, None


_mlp_residual_fwd_op.register_autograd(_backward, setup_context=_setup)


# ---------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------


def mlp_residual(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, *, approximate="none", scale=None,
                 gamma=None, allow_tf32=False):  # fmt: skip
    """``residual + scale[i] * gamma * (gelu(x @ W1^T + b1) @ W2^T + b2)``: a ViT MLP branch and its residual add.

    Weights in nn.Linear layout: ``fc1_weight`` (H, D), ``fc2_weight`` (D_out, H).
    ``x`` is (..., D); ``residual`` has the output's shape and x's dtype or fp32
    (the output takes the residual's dtype); ``approximate`` is "none", "tanh"
    or "quick" (CLIP's ``h * sigmoid(1.702 h)``); ``scale`` is the optional
    per-sample stochastic-depth factor and ``gamma`` the optional (D_out,)
    LayerScale of :func:`fastvit.kernels.linear_residual` (gamma gets a
    gradient). Any strides are accepted (expanded, sliced, transposed). When a
    gradient is needed, ``h`` and ``gelu(h)`` are saved, as the two separate
    ops save them; the backward fuses GELU's derivative into fc2's
    input-gradient GEMM.
    """
    check_linear_args("mlp_residual (fc1)", x, fc1_weight, fc1_bias)
    check_approximate("mlp_residual", approximate)
    # fc2 sees an (..., H) input of x's dtype and device: check it against a stand-in of that shape
    hidden = torch.empty((1,), dtype=x.dtype, device=x.device).expand(*x.shape[:-1], fc1_weight.shape[0])
    check_linear_args("mlp_residual (fc2)", hidden, fc2_weight, fc2_bias)
    out_shape = check_residual("mlp_residual", hidden, fc2_weight, residual)
    if scale is not None:
        scale = check_scale("mlp_residual", scale, x)
    if gamma is not None:
        gamma = check_gamma("mlp_residual", gamma, x, fc2_weight)
    save = needs_grad(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, gamma)
    out, _, _ = _mlp_residual_fwd_op(
        rows(x), fc1_weight, fc1_bias, fc2_weight, fc2_bias, rows(residual), scale, gamma, approximate, save,
        allow_tf32,
    )  # fmt: skip
    return out.reshape(out_shape)
