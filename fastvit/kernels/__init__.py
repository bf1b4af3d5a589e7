"""fastvit's fused GPU kernels (Triton).

Importing this package is cheap: Triton is imported only when one of the ops
below is first used, so ``import fastvit`` never pulls it in.

Public ops (torch-like signatures, nn.Linear weight layout):

- ``attention(q, k, v, scale=None)``: FlashAttention-style, (B, H, N, D) inputs.
- ``attention_qkvpacked(qkv, scale=None)``: the same over a packed (B, N, 3, H, D) qkv.
- ``layer_norm(x, weight, bias, eps, *, out_dtype=None)``
- ``add_layer_norm(x, y, weight, bias, eps)`` -> ``(x + y, LN(x + y))``
- ``layer_norm_fork(x, weight, bias, eps, *, out_dtype=None)`` -> ``(LN(x), x)``: a block's norm at the
  residual junction, whose backward adds the residual's gradient inside the LayerNorm backward kernel
- ``rms_norm(x, weight, eps=1e-6, *, out_dtype=None)``: RMSNorm (LayerNorm's kernels without mean and bias)
- ``rms_norm_fork(x, weight, eps=1e-6, *, out_dtype=None)`` -> ``(RMSNorm(x), x)``: as ``layer_norm_fork``
- ``linear_gelu(x, weight, bias, approximate="none")``: approximate "none" | "tanh" | "quick"
  (``x * sigmoid(1.702 x)``)
- ``linear_residual(x, weight, bias, residual, *, scale=None, gamma=None)`` ->
  ``residual + scale[:, None] * gamma * (x @ W^T + b)`` (gamma: per-channel LayerScale, with gradient)
- ``linear_swiglu(x, weight_g, bias_g, weight_x, bias_x)`` -> ``silu(x W_g^T + b_g) * (x W_x^T + b_x)``:
  SwiGLU's fc1 in one GEMM kernel (biases may both be None)
- ``linear_gelu_tma`` / ``linear_residual_tma``: the same through the Hopper TMA candidate kernel
- ``mlp_residual(x, w1, b1, w2, b2, residual, *, approximate="none", scale=None, gamma=None)``: a whole
  MLP branch, whose backward fuses GELU's derivative into fc2's input-gradient GEMM

Each is declared once in :mod:`fastvit.kernels.ops` (what it takes, its reference in
:mod:`fastvit.kernels.reference`, what ``auto`` may pick it for); this package's
names are read from that table. See docs/kernels.md.
"""

from __future__ import annotations

import importlib

from fastvit.kernels.ops import public_functions

# public name -> the op file that defines it (from the declarations)
_OPS = {name: module.rpartition(".")[2] for name, module in public_functions().items()}

__all__ = sorted(_OPS)


def __getattr__(name: str):
    if name in _OPS:
        module = importlib.import_module(f"{__name__}.{_OPS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def triton_available() -> bool:
    """True when Triton imports (it may still lack a GPU; see ``tuning.interpreting``)."""
    try:
        importlib.import_module("triton")
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True
