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

from .auto import AutoLayerNorm, AutoLinearGELU, AutoPreNorm, AutoResidualLinear
from .linear import ResidualLinear, TritonLinearGELU, TritonResidualLinear
from .mlp import Mlp, TritonMlp
from .norm import TritonLayerNorm, TritonPreNorm

# norm_impl -> (LayerNorm class, class for a block's norms, whose output only feeds a GEMM; the
# Triton and auto ones also have fork(x) -> (normed, residual), see fastvit.layers.norm)
NORM_IMPLS = {
    "auto": (AutoLayerNorm, AutoPreNorm),
    "torch": (nn.LayerNorm, nn.LayerNorm),
    "triton": (TritonLayerNorm, TritonPreNorm),
}

# linear_impl -> (fc1 class, activation after fc1, residual-projection class, MLP branch class).
# An Identity activation means fc1 computes it in its epilogue (approximate= picks the GELU form).
LINEAR_IMPLS = {
    "auto": (AutoLinearGELU, nn.Identity, AutoResidualLinear, Mlp),
    "torch": (nn.Linear, nn.GELU, ResidualLinear, Mlp),
    "triton": (TritonLinearGELU, nn.Identity, TritonResidualLinear, TritonMlp),
}
