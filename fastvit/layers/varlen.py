"""Attention over packed variable-length sequences (NaFlex): many images' tokens back to back,
sequence ``s`` being rows ``cu_seqlens[s]:cu_seqlens[s + 1]``; no token attends across images.

:func:`varlen_attention` is the one entry point the models call, ``impl`` chosen once by the
caller. (The contract; the Triton kernel and ``auto`` plug in behind it.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

VARLEN_IMPLS = ("torch",)


def _torch_varlen(q, k, v, cu_seqlens, max_seqlen, scale):
    """PyTorch's SDPA, one call per sequence (no padding, no mask)."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            seg = [t[lo:hi].transpose(0, 1).unsqueeze(0) for t in (q, k, v)]  # (1, H, n, D)
            out[lo:hi] = F.scaled_dot_product_attention(*seg, scale=scale)[0].transpose(0, 1)
    return out


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int | None = None, scale: float | None = None, impl: str = "torch") -> torch.Tensor:
    """softmax(q k^T * scale) v within each sequence. q, k, v (T, H, D); ``cu_seqlens`` (S + 1,) int32
    offsets from 0 to T; ``max_seqlen`` the longest sequence (computed when None). Returns (T, H, D)."""
    if impl not in VARLEN_IMPLS:
        raise ValueError(f"unknown varlen attention impl {impl!r}; valid: {', '.join(VARLEN_IMPLS)}")
    if q.dim() != 3 or k.shape != q.shape[:2] + k.shape[2:] or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"q, k, v must be (T, H, D) with the same T and H, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D with at least 2 entries, got shape {tuple(cu_seqlens.shape)}")
    return _torch_varlen(q, k, v, cu_seqlens, max_seqlen, scale)
