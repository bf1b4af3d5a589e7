"""LayerNorm implementations, chosen by ``norm_impl``. Same parameters (weight, bias) in each."""

from __future__ import annotations

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


class TritonPreNorm(TritonLayerNorm):
    """A block's LayerNorm, whose output only feeds a GEMM.

    Under autocast it stores its output straight in the autocast dtype -- the
    values the GEMM's input cast would produce from nn.LayerNorm's fp32 output
    -- so an fp32 residual stream costs no separate cast pass. Outside autocast
    it is TritonLayerNorm.
    """

    def out_dtype(self, x):
        return autocast_dtype(x)


def norm_layer(impl: str, *, pre_gemm: bool = False) -> type[nn.LayerNorm]:
    """The LayerNorm class for ``norm_impl``; ``pre_gemm`` for a block's norms, whose output only feeds a GEMM."""
    from .impls import NORM_IMPLS

    if impl not in NORM_IMPLS:
        raise ValueError(f"unknown norm_impl {impl!r}; valid: {sorted(NORM_IMPLS)}")
    return NORM_IMPLS[impl][1 if pre_gemm else 0]
