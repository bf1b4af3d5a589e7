"""Plain PyTorch references for every fused op in :mod:`fastvit.kernels`.

Each function computes exactly what its kernel computes. With ``upcast=True``
the inputs are promoted to float64 first and the float64 result is returned:
that is the ground truth the parity tests measure errors against. With
``upcast=False`` the computation runs in the inputs' own dtype, which is the
"eager PyTorch in the same precision" half of the flash-attention error rule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _maybe_upcast(upcast: bool, *tensors):
    if not upcast:
        return tensors
    return tuple(None if t is None else t.double() for t in tensors)


def attention_ref(q, k, v, scale=None, upcast=True):
    """softmax(q @ k^T * scale) @ v over (B, H, N, D) tensors, non-causal."""
    q, k, v = _maybe_upcast(upcast, q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    probs = torch.softmax(scores.float() if not upcast else scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v)


def layer_norm_ref(x, weight, bias, eps=1e-6, upcast=True):
    x, weight, bias = _maybe_upcast(upcast, x, weight, bias)
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def add_layer_norm_ref(x, y, weight, bias, eps=1e-6, upcast=True):
    """Returns ``(s, LN(s))`` with ``s = x + y``."""
    x, y, weight, bias = _maybe_upcast(upcast, x, y, weight, bias)
    s = x + y
    return s, F.layer_norm(s, (s.shape[-1],), weight, bias, eps)


def gelu_ref(h, approximate="none"):
    """``F.gelu(h, approximate)``, plus ``approximate="quick"``: ``h * sigmoid(1.702 h)`` (CLIP's quick GELU)."""
    if approximate == "quick":
        return h * torch.sigmoid(1.702 * h)
    return F.gelu(h, approximate=approximate)


def linear_gelu_ref(x, weight, bias, approximate="none", upcast=True):
    x, weight, bias = _maybe_upcast(upcast, x, weight, bias)
    return gelu_ref(F.linear(x, weight, bias), approximate)


def linear_residual_ref(x, weight, bias, residual, scale=None, upcast=True, gamma=None):
    """``residual + scale[i] * gamma * (x[i] @ weight^T + bias)``; no scale / gamma means 1.

    ``gamma`` (LayerScale) multiplies in its own dtype, as ``x * gamma`` does
    in eager timm (an fp32 gamma promotes a bf16 branch to fp32).
    """
    x, weight, bias, residual, scale, gamma = _maybe_upcast(upcast, x, weight, bias, residual, scale, gamma)
    branch = F.linear(x, weight, bias)
    if gamma is not None:
        branch = branch * gamma
    if scale is not None:
        branch = branch * scale.to(branch.dtype).view((-1,) + (1,) * (branch.ndim - 1))
    return residual + branch
