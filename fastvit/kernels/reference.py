"""Plain PyTorch references for every fused op in :mod:`fastvit.kernels`.

One per op, named ``<op>_ref`` (each op's declaration in
:mod:`fastvit.kernels.ops` points at it); the eager layers call them too. Each
function computes exactly what its kernel computes. With ``upcast=True``
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


def attention_ref(q, k, v, scale=None, upcast=True, dropout_p=0.0):
    """softmax(q @ k^T * scale) @ v over (B, H, N, D) tensors, non-causal.

    The softmax runs in fp32 (fp64 with ``upcast``). ``dropout_p`` > 0 drops
    probabilities as ``F.dropout`` does (the eager backend's attention dropout;
    the kernel has none)."""
    q, k, v = _maybe_upcast(upcast, q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    probs = torch.softmax(scores.float() if not upcast else scores, dim=-1).to(v.dtype)
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p, training=True)
    return torch.matmul(probs, v)


def attention_probs_ref(q, k, lse, scale=None, upcast=True):
    """exp(q @ k^T * scale - lse[..., None]): the softmax of those scores, given their row
    log-sum-exp ``lse`` (B, H, N_q). fp64 with ``upcast``, else fp32 from q's dtype's product."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if upcast:
        q, k, lse = q.double(), k.double(), lse.double()
    s = torch.matmul(q, k.transpose(-2, -1)).to(lse.dtype) * scale
    return torch.exp(s - lse[..., None])


def layer_norm_ref(x, weight, bias, eps=1e-6, upcast=True):
    x, weight, bias = _maybe_upcast(upcast, x, weight, bias)
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def layer_norm_fork_ref(x, weight, bias, eps=1e-6, upcast=True):
    """Returns ``(LN(x), x)``: the branch input and the residual (autograd sums their gradients at x)."""
    x, weight, bias = _maybe_upcast(upcast, x, weight, bias)
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps), x


def add_layer_norm_ref(x, y, weight, bias, eps=1e-6, upcast=True):
    """Returns ``(s, LN(s))`` with ``s = x + y``."""
    x, y, weight, bias = _maybe_upcast(upcast, x, y, weight, bias)
    s = x + y
    return s, F.layer_norm(s, (s.shape[-1],), weight, bias, eps)


def rms_norm_ref(x, weight, eps=1e-6, upcast=True):
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last dim (timm's ``RmsNorm``, ``F.rms_norm``);
    ``eps`` None is fp32's machine epsilon, as ``F.rms_norm`` takes it for every input dtype."""
    x, weight = _maybe_upcast(upcast, x, weight)
    return F.rms_norm(x, (x.shape[-1],), weight, torch.finfo(torch.float32).eps if eps is None else eps)


def gelu_ref(h, approximate="none"):
    """``F.gelu(h, approximate)``, plus ``approximate="quick"``: ``h * sigmoid(1.702 h)`` (CLIP's quick GELU)."""
    if approximate == "quick":
        return h * torch.sigmoid(1.702 * h)
    return F.gelu(h, approximate=approximate)


def linear_gelu_ref(x, weight, bias, approximate="none", upcast=True):
    x, weight, bias = _maybe_upcast(upcast, x, weight, bias)
    return gelu_ref(F.linear(x, weight, bias), approximate)


def linear_swiglu_ref(x, weight_g, bias_g, weight_x, bias_x, upcast=True):
    """``silu(x W_g^T + b_g) * (x W_x^T + b_x)``: SwiGLU's fc1 (timm's ``fc1_g`` / ``fc1_x``); biases may be None."""
    x, weight_g, bias_g, weight_x, bias_x = _maybe_upcast(upcast, x, weight_g, bias_g, weight_x, bias_x)
    return F.silu(F.linear(x, weight_g, bias_g)) * F.linear(x, weight_x, bias_x)


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


def mlp_residual_ref(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual, approximate="none", scale=None,
                     upcast=True, gamma=None):  # fmt: skip
    """``residual + scale[i] * gamma * fc2(gelu(fc1(x[i])))``: a ViT MLP branch (LayerScale ``gamma``
    optional) and its residual add."""
    hidden = linear_gelu_ref(x, fc1_weight, fc1_bias, approximate, upcast=upcast)
    return linear_residual_ref(hidden, fc2_weight, fc2_bias, residual, scale, upcast=upcast, gamma=gamma)


def rope_rotate_ref(x, sin, cos, num_prefix=0, rotate_half=False):
    """``x`` (B, H, N, D) with its last ``N - num_prefix`` tokens turned by the 2-D rotary tables
    ``sin`` / ``cos``: (N - num_prefix, D // 2) or (H, N - num_prefix, D // 2), one angle per pair.
    The pairs are ``(2i, 2i + 1)`` (EVA's interleaved form) or, with ``rotate_half``, ``(i, i + D/2)``
    (DINOv3's). Each pair ``(a, b)`` becomes ``(a cos - b sin, b cos + a sin)``; the prefix (class,
    register tokens) is left as is. Computed in the promoted dtype of ``x`` and the tables."""
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary embedding needs an even head dim, got {d}")
    prefix, rest = x[..., :num_prefix, :], x[..., num_prefix:, :]
    a, b = (rest[..., : d // 2], rest[..., d // 2 :]) if rotate_half else (rest[..., 0::2], rest[..., 1::2])
    sin, cos = sin.to(torch.promote_types(sin.dtype, x.dtype)), cos.to(torch.promote_types(cos.dtype, x.dtype))
    ra, rb = a * cos - b * sin, b * cos + a * sin
    rotated = torch.cat([ra, rb], -1) if rotate_half else torch.stack([ra, rb], -1).flatten(-2)
    return torch.cat([prefix.to(rotated.dtype), rotated], dim=-2)


def rope_attention_ref(q, k, v, sin, cos, num_prefix=0, rotate_half=False, scale=None, upcast=True):
    """Attention over q and k rotated by :func:`rope_rotate_ref` (the fused rotary attention's twin).
    Without ``upcast`` the rotated q and k are cast back to v's dtype first, as timm does."""
    q, k, v, sin, cos = _maybe_upcast(upcast, q, k, v, sin, cos)
    q = rope_rotate_ref(q, sin, cos, num_prefix, rotate_half).to(v.dtype)
    k = rope_rotate_ref(k, sin, cos, num_prefix, rotate_half).to(v.dtype)
    return attention_ref(q, k, v, scale, upcast=upcast)  # upcast: the softmax in fp64 too


def varlen_attention_ref(q, k, v, cu_seqlens, scale=None, upcast=True):
    """Attention within each packed sequence: q, k, v (T, H, D) hold S sequences back to back,
    sequence s being rows ``cu_seqlens[s]:cu_seqlens[s + 1]`` (``cu_seqlens`` (S + 1,) integers,
    starting at 0, non-decreasing, ending at T). No row attends across sequences; an empty
    sequence has no rows. Returns (T, H, D)."""
    bounds = [int(c) for c in cu_seqlens.tolist()]
    if not bounds or bounds[0] != 0 or bounds[-1] != q.shape[0] or any(b < a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"cu_seqlens must rise from 0 to the {q.shape[0]} packed rows, got {bounds}")
    q, k, v = _maybe_upcast(upcast, q, k, v)
    out = torch.empty_like(q)
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            seg = [t[lo:hi].transpose(0, 1) for t in (q, k, v)]  # (H, n, D)
            out[lo:hi] = attention_ref(*seg, scale=scale, upcast=upcast).transpose(0, 1)
    return out
