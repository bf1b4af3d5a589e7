"""LayerNorm at a pre-norm block's residual junction: ``(LN(x), x)``, joined again in one backward pass.

A pre-norm block reads its input twice: ``x1 = x0 + attn(LN1(x0))``. In the
backward, ``x0``'s gradient is the sum of the residual path's (``d x1``, which
the branch's residual GEMM passes straight through) and LN1's input gradient.
Left to autograd that sum is its own pass over two ``(M, D)`` tensors (read
both, write one) at each of a block's two junctions.

``layer_norm_fork(x, weight, bias, eps, *, out_dtype=None)`` returns
``(LN(x), x_residual)`` where ``x_residual`` is ``x`` itself (a view, no copy)
and hands both gradients to the LayerNorm backward kernel at once:
``dx = dLN(d_out) + d_residual`` from ONE launch of the kernel that
:func:`fastvit.kernels.add_layer_norm` already uses (``HAS_DS``), plus
dweight / dbias. The separate add is gone: about ``2 M D`` elements of
reads and writes fewer per junction (the kernel reads ``d_residual`` where it
would otherwise have nothing to add; the add pass read ``d_residual`` and
``dLN`` and wrote their sum). Nothing here was timed on a GPU.

A torch.library op may not return an alias of its input, so this is a
:class:`torch.autograd.Function` around the registered ops
``fastvit::layer_norm_fwd`` (forward), ``fastvit::add_layer_norm_bwd``
(backward with both gradients) and ``fastvit::layer_norm_bwd`` (only the
normalized output was used). Dynamo traces it (``torch.compile``), the ops
stay opaque with their fake implementations. Gradients are not materialized:
a residual that was never used (``None``) costs no zeros tensor and the
plain backward runs; a normalized output that was never used passes the
residual gradient through untouched.

Inputs are :func:`fastvit.kernels.layer_norm`'s (dtypes, widths, layouts,
``out_dtype``); reference :func:`fastvit.kernels.reference.layer_norm_fork_ref`.
:func:`layer_norm_fork` is part of the ``layer_norm`` contract (it launches
the same kernels), so :mod:`fastvit.kernels.norm` also answers for it (lazily:
this module imports that one).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastvit.kernels.norm import add_layer_norm_bwd_op, layer_norm_bwd_op, layer_norm_fwd_op
from fastvit.kernels.norm_args import _check_inputs, _check_out_dtype


class LayerNormFork(torch.autograd.Function):
    """``(LN(x), x)`` forward; ``dx = dLN(d_out) + d_residual`` in one backward launch."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        out, mean, rstd = layer_norm_fwd_op(x, weight, bias, eps, out_dtype)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.set_materialize_grads(False)
        return out, x  # autograd returns x as a view whose grad_fn is this Function

    @staticmethod
    def backward(ctx, dout, dresidual):
        x, weight, mean, rstd = ctx.saved_tensors
        if dout is None:  # only the residual was used: its gradient is x's
            return dresidual, None, None, None, None
        if dresidual is None:
            dx, dweight, dbias = layer_norm_bwd_op(dout, x, weight, mean, rstd)
        else:
            dx, dweight, dbias = add_layer_norm_bwd_op(dout, dresidual, x, weight, mean, rstd)
        return dx, dweight, dbias, None, None


def layer_norm_fork(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-6, *, out_dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """``(LN(x), x)``: the normalized input of a block's branch and the residual it keeps.

    The output has ``out_dtype`` (default ``x``'s); the residual is ``x``
    (same storage). Backward: ``x``'s gradient is LayerNorm's input gradient
    plus the residual's, from one kernel launch, in ``x``'s dtype.
    """
    _check_inputs(x, weight, bias)
    out_dtype = _check_out_dtype(out_dtype, x)
    return LayerNormFork.apply(x, weight, bias, eps, out_dtype)
