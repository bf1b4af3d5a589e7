"""When a fused residual branch runs, and with what: the one copy of the rule.

A fused residual branch is a GEMM (or a whole MLP) whose epilogue adds the
residual, optionally scaled per channel by LayerScale's ``gamma`` and per sample
by stochastic depth. :class:`~fastvit.layers.linear.TritonResidualLinear`,
:func:`~fastvit.layers.linear.triton_mlp_forward` and ``auto``'s
:class:`~fastvit.layers.auto.AutoResidualLinear` all ask :func:`fused_branch`
(called with the GEMM input already in its autocast dtype):

- element-wise dropout on the branch while training: separate ops (None);
- a residual in a third dtype (neither the GEMM's nor float32, e.g. fp16 under
  bf16 autocast): separate ops (None);
- a ``gamma`` in a third dtype is promoted to float32, as eager's
  ``branch * gamma`` promotes;
- stochastic depth while training becomes the epilogue's per-sample scale,
  drawn by :func:`branch_scale` as :class:`~fastvit.layers.drop.DropPath` draws it.
"""

from __future__ import annotations

import torch

from .drop import drop_path_scale


def fused_branch(x: torch.Tensor, residual: torch.Tensor, gamma: torch.Tensor | None, *, training: bool,
                 dropout_p: float, drop_path_p: float) -> tuple[torch.Tensor | None, bool] | None:
    """``(gamma, stochastic_depth)`` for the fused op, or None when the call must run as separate ops.

    ``gamma`` comes back promoted to float32 when its dtype is neither ``x``'s nor float32;
    ``stochastic_depth`` says whether the epilogue needs a per-sample scale (:func:`branch_scale`).
    """
    if training and dropout_p > 0:
        return None
    if residual.dtype not in (x.dtype, torch.float32):
        return None
    if gamma is not None and gamma.dtype not in (x.dtype, torch.float32):
        gamma = gamma.float()
    return gamma, bool(training and drop_path_p > 0)


def branch_scale(residual: torch.Tensor, drop_path_p: float) -> torch.Tensor:
    """Stochastic depth's per-sample factors for the epilogue: float32, (batch,)."""
    return drop_path_scale(residual.shape[0], drop_path_p, dtype=torch.float32, device=residual.device)
