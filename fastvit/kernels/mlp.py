"""A whole ViT MLP branch as one op: ``residual + scale * fc2(gelu(fc1(x)))``.

Forward: the two epilogue-fused GEMMs of :mod:`fastvit.kernels.linear` (fc1
with bias + GELU, writing the pre-activation ``h`` when a gradient is needed;
fc2 with bias, per-sample scale and residual).

Backward, with ``d = scale * dout`` in the GEMM dtype:

- ``d_residual = dout``; ``dW2 = d^T @ a``, ``db2 = sum(d)`` (``a = gelu(h)``,
  fc2's input, saved by the forward);
- ``dh = (d @ W2) * gelu'(h)`` in **one** Triton GEMM whose epilogue applies
  GELU's derivative (:func:`fastvit.kernels.linear.linear_gelu_grad`): the
  gradient of GELU's output, an (M, 4D) tensor, is never written or read
  back, which saves two passes over it (about 620 MB per ViT-B block per
  training step at batch 256 in bf16) and one launch against the separate
  GELU-backward kernel that ``linear_gelu`` + ``linear_residual`` run;
- ``dx = dh @ W1``, ``dW1 = dh^T @ x``, ``db1 = sum(dh)`` (torch.matmul;
  bias sums in fp32). No atomics: gradients are deterministic.

Plain PyTorch twin: :func:`fastvit.kernels.reference.mlp_residual_ref`.
"""

from __future__ import annotations

import torch

from fastvit.kernels import linear
from fastvit.kernels.gemm_epilogue import GELU_EPILOGUE
from fastvit.kernels.linear_checks import check_linear_args, check_residual, check_scale
from fastvit.kernels.reference import mlp_residual_ref  # noqa: F401  (its reference, re-exported)


@torch.library.custom_op("fastvit::mlp_residual_fwd", mutates_args=())
def mlp_residual_fwd(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    residual: torch.Tensor,
    scale: torch.Tensor | None,
    approximate: str,
    save: bool,
    allow_tf32: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(out, a, h)`` for 2-D ``x`` and ``residual``; ``a = gelu(h)`` and ``h`` are empty unless ``save``."""
    a, h = linear.linear_gelu_launch(x, w1, b1, approximate, save_pre=save, allow_tf32=allow_tf32)
    out = linear.linear_residual_launch(a, w2, b2, residual, scale, allow_tf32=allow_tf32)
    return out, a if save else x.new_empty((0,)), h


@mlp_residual_fwd.register_fake
def _(x, w1, b1, w2, b2, residual, scale, approximate, save, allow_tf32):
    saved = (x.shape[0], w1.shape[0]) if save else (0,)
    return residual.new_empty((x.shape[0], w2.shape[0])), x.new_empty(saved), x.new_empty(saved)


def _setup(ctx, inputs, output):
    x, w1, _, w2, _, _, scale, approximate, save, _ = inputs
    _, a, h = output
    ctx.mark_non_differentiable(a, h)
    ctx.set_materialize_grads(False)
    ctx.approximate = approximate
    ctx.save = save
    ctx.save_for_backward(x, w1, w2, a, h, scale)


def _backward(ctx, grad_out, _grad_a, _grad_h):
    if grad_out is None:
        return (None,) * 10
    if not ctx.save:
        raise RuntimeError(
            "fastvit::mlp_residual_fwd was called with save=False, so its backward has nothing saved; "
            "call fastvit.kernels.mlp_residual, which saves whenever a gradient is needed"
        )
    x, w1, w2, a, h, scale = ctx.saved_tensors
    need = ctx.needs_input_grad
    d = grad_out
    if scale is not None and scale.shape[0] > 0:
        rows, n = grad_out.shape
        d = (grad_out.reshape(scale.shape[0], rows // scale.shape[0], n) * scale[:, None, None]).reshape(rows, n)
    d = d.to(x.dtype)
    dw2 = d.t() @ a if need[3] else None
    db2 = d.sum(0, dtype=torch.float32).to(x.dtype) if need[4] else None
    dx = dw1 = db1 = None
    if need[0] or need[1] or need[2]:
        dh = torch.ops.fastvit.linear_gelu_grad(d, w2, h, ctx.approximate)
        dx = dh @ w1 if need[0] else None
        dw1 = dh.t() @ x if need[1] else None
        db1 = dh.sum(0, dtype=torch.float32).to(x.dtype) if need[2] else None
    return dx, dw1, db1, dw2, db2, grad_out if need[5] else None, None, None, None, None


mlp_residual_fwd.register_autograd(_backward, setup_context=_setup)


def mlp_residual(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, *, approximate="none", scale=None,
                 allow_tf32=False):  # fmt: skip
    """``residual + scale[i] * (gelu(x @ W1^T + b1) @ W2^T + b2)``: a ViT MLP branch and its residual add.

    Weights in nn.Linear layout: ``fc1_weight`` (H, D), ``fc2_weight`` (D_out, H).
    ``x`` is (..., D); ``residual`` has the output's shape and x's dtype or fp32
    (the output takes the residual's dtype); ``scale`` is the optional
    per-sample stochastic-depth factor of :func:`fastvit.kernels.linear_residual`.
    Any strides are accepted (expanded, sliced, transposed). When a gradient is
    needed, ``h`` and ``gelu(h)`` are saved, as the two separate ops save them;
    the backward fuses GELU's derivative into fc2's input-gradient GEMM.
    """
    check_linear_args("mlp_residual (fc1)", x, fc1_weight, fc1_bias)
    if approximate not in GELU_EPILOGUE:
        raise ValueError(f"mlp_residual: approximate must be 'none' or 'tanh', got {approximate!r}")
    # fc2 sees an (..., H) input of x's dtype and device: check it against a stand-in of that shape
    hidden = torch.empty((1,), dtype=x.dtype, device=x.device).expand(*x.shape[:-1], fc1_weight.shape[0])
    check_linear_args("mlp_residual (fc2)", hidden, fc2_weight, fc2_bias)
    out_shape = check_residual("mlp_residual", hidden, fc2_weight, residual)
    if scale is not None:
        scale = check_scale("mlp_residual", scale, x)
    save = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual)
    )
    rows = linear._rows
    out, _, _ = mlp_residual_fwd(
        rows(x), fc1_weight, fc1_bias, fc2_weight, fc2_bias, rows(residual), scale, approximate, save, allow_tf32
    )
    return out.reshape(out_shape)


from fastvit.kernels import contract, linear_support  # noqa: E402

CONTRACT = contract.declare("mlp_residual", __name__, ("mlp_residual",), "fc1 + GELU + fc2 + residual, its backward "
                            "fusing GELU's derivative into fc2's input-gradient GEMM; fp16/bf16/fp32", linear_support)
