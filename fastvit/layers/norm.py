"""LayerNorm implementations, chosen by ``norm_impl``. Same parameters (weight, bias) in each.

A block's norms (the second class of each :data:`~fastvit.layers.impls.NORM_IMPLS`
entry) also have ``fork(x) -> (normed, residual)``: the branch's input and the
residual the branch adds back (``x`` itself). A fork can join the two
gradients at ``x`` inside its own backward: the Triton one does
(:func:`fastvit.kernels.layer_norm_fork`, one LayerNorm backward launch with
the residual's gradient added, no separate add pass); the torch one leaves
the sum to autograd. :func:`fork_function` gives :class:`~fastvit.model.Block`
the fork of any norm it is built with, once: a norm without ``fork`` (a plain
``nn.LayerNorm`` passed in custom parts) gets :func:`plain_fork`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .kernel_ops import kernel_op
from .linear import autocast_dtype


class TritonLayerNorm(nn.LayerNorm):
    """nn.LayerNorm computed by fastvit's Triton kernel (fp32 statistics)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_norm = kernel_op("layer_norm")

    def out_dtype(self, x):
        """Output dtype; None keeps x's, as nn.LayerNorm does (fp32 even under autocast)."""
        return None

    def forward(self, x):
        return self.layer_norm(x, self.weight, self.bias, self.eps, out_dtype=self.out_dtype(x))


class TorchPreNorm(nn.LayerNorm):
    """A block's LayerNorm for ``norm_impl="torch"``: ``nn.LayerNorm`` (same forward and state dict) with
    ``fork(x) = (LN(x), x)``; autograd adds the two gradients at ``x`` as a separate op."""

    def fork(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps), x


class TritonPreNorm(TritonLayerNorm):
    """A block's LayerNorm, whose output only feeds a GEMM.

    Under autocast it stores its output straight in the autocast dtype -- the
    values the GEMM's input cast would produce from nn.LayerNorm's fp32 output
    -- so an fp32 residual stream costs no separate cast pass. Outside autocast
    it is TritonLayerNorm. ``fork(x)`` returns ``(LN(x), x)`` from
    :func:`fastvit.kernels.layer_norm_fork`: the backward adds the residual's
    gradient inside the LayerNorm backward kernel.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_norm_fork = kernel_op("layer_norm_fork")

    def out_dtype(self, x):
        return autocast_dtype(x)

    def fork(self, x):
        return self.layer_norm_fork(x, self.weight, self.bias, self.eps, out_dtype=self.out_dtype(x))


def plain_fork(norm: nn.Module, x):
    """The fork of a norm that has none: ``(norm(x), x)`` (autograd sums the gradients at ``x``)."""
    return norm(x), x


def fork_function(norm: nn.Module):
    """``f(norm, x) -> (normed, residual)`` for ``norm``: its class's ``fork``, else :func:`plain_fork`.

    A plain function (not bound to ``norm``), so a module keeping it pickles and deep-copies as before.
    """
    fork = getattr(type(norm), "fork", None)
    return fork if callable(fork) else plain_fork


def norm_layer(impl: str, *, pre_gemm: bool = False) -> type[nn.LayerNorm]:
    """The LayerNorm class for ``norm_impl``; ``pre_gemm`` for a block's norms, whose output only feeds a GEMM."""
    from .impls import NORM_IMPLS

    if impl not in NORM_IMPLS:
        raise ValueError(f"unknown norm_impl {impl!r}; valid: {sorted(NORM_IMPLS)}")
    return NORM_IMPLS[impl][1 if pre_gemm else 0]
