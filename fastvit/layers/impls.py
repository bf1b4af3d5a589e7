"""Every implementation of each part, in one table per switch (``norm_impl``, ``linear_impl``).

:func:`fastvit.parts.resolve_parts` reads these tables and
:class:`fastvit.ViTConfig` validates the switches against them; attention's
backends (``attn_impl``) are :data:`fastvit.layers.attention.BACKENDS`.

- ``torch``: PyTorch's ops (the reference the others are held to);
- ``triton``: fastvit's kernels (CUDA, or the CPU under ``TRITON_INTERPRET=1``);
- ``auto`` (the default): per op and shape, whichever of the two is faster on
  this GPU, measured once and cached (:mod:`fastvit.layers.auto`,
  :mod:`fastvit.dispatch`); PyTorch's ops off CUDA.
"""

from __future__ import annotations

from torch import nn

from .auto import AutoLayerNorm, AutoLinearGELU, AutoBlockNorm, AutoResidualLinear
from .linear import ResidualLinear, TritonLinearGELU, TritonResidualLinear
from .mlp import Mlp, TritonMlp
from .norm import AutoBlockRMSNorm, AutoRMSNorm, TritonBlockNorm, TritonBlockRMSNorm, TritonLayerNorm, TritonRMSNorm

# norm_impl -> (LayerNorm class, class for a block's norms, whose output only feeds a GEMM; the
# Triton and auto ones also have fork(x) -> (normed, residual), see fastvit.layers.norm)
NORM_IMPLS = {
    "auto": (AutoLayerNorm, AutoBlockNorm),
    "torch": (nn.LayerNorm, nn.LayerNorm),
    "triton": (TritonLayerNorm, TritonBlockNorm),
}

# norm_impl -> (RMSNorm class, class for a block's RMS norms), for ``norm_layer="rmsnorm"`` (as NORM_IMPLS)
RMS_NORM_IMPLS = {
    "auto": (AutoRMSNorm, AutoBlockRMSNorm),
    "torch": (nn.RMSNorm, nn.RMSNorm),
    "triton": (TritonRMSNorm, TritonBlockRMSNorm),
}

# linear_impl -> (fc1 class, activation after fc1, residual-projection class, MLP branch class).
# An Identity activation means fc1 computes it in its epilogue (approximate= picks the GELU form).
LINEAR_IMPLS = {
    "auto": (AutoLinearGELU, nn.Identity, AutoResidualLinear, Mlp),
    "torch": (nn.Linear, nn.GELU, ResidualLinear, Mlp),
    "triton": (TritonLinearGELU, nn.Identity, TritonResidualLinear, TritonMlp),
}


def norm_layer(impl: str, *, pre_gemm: bool = False) -> type[nn.LayerNorm]:
    """The LayerNorm class for ``norm_impl``; ``pre_gemm`` for a block's norms, whose output only feeds a GEMM."""
    if impl not in NORM_IMPLS:
        raise ValueError(f"unknown norm_impl {impl!r}; valid: {sorted(NORM_IMPLS)}")
    return NORM_IMPLS[impl][1 if pre_gemm else 0]


def mlp_layer(linear_impl: str) -> type[Mlp]:
    """The MLP class for ``linear_impl``: the fused branch for "triton", separate ops otherwise."""
    if linear_impl not in LINEAR_IMPLS:
        raise ValueError(f"unknown linear_impl {linear_impl!r}; valid: {sorted(LINEAR_IMPLS)}")
    return LINEAR_IMPLS[linear_impl][3]
