"""Resizing a position-embedding grid as two small matrix products, ``Wh @ grid @ Ww.T``.

``F.interpolate`` computes the same thing, but its antialiased bicubic backward has no
meta kernel that takes symbolic sizes (torch 2.13/2.14: ``aten._upsample_bicubic2d_aa_backward``,
"Expected IntList but got GenericList"), so a model compiled with ``dynamic=True`` could
not train at a new image size. The matrices here are built with ordinary tensor ops
from the output size, so they compile with symbolic sizes, and a matmul's backward is a
matmul. Each row reproduces PyTorch's own weights (``aten/src/ATen/native/UpSample.h``,
``UpSampleKernel.cpp``):

- ``bicubic``: Keys' cubic convolution with A = -0.75, 4 taps, edge indices clamped;
- ``bilinear``: 2 taps, the source index clamped at 0 (``align_corners=False``);
- ``antialias=True``: PIL-style filtering (bicubic A = -0.5, or the triangle) whose support
  widens by the scale when shrinking, weights normalised to sum to 1 per output.

``align_corners=True`` maps corner centres onto each other (scale (in-1)/(out-1)).
:func:`resize_2d` is what :func:`fastvit.layers.resample_pos_embed` calls.
"""

from __future__ import annotations

import torch

MATRIX_MODES = ("bilinear", "bicubic")


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel at |x| (support 2)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _triangle(x: torch.Tensor) -> torch.Tensor:
    return (1 - x.abs()).clamp(min=0)


def _scale(in_size: int, out_size, align_corners: bool):
    if align_corners:
        return (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return in_size / out_size


def interp_matrix(in_size: int, out_size, mode: str = "bicubic", antialias: bool = False,
                  align_corners: bool = False, dtype=torch.float32, device=None) -> torch.Tensor:
    """(out_size, in_size) matrix ``W`` with ``W @ v`` = ``F.interpolate`` of ``v`` along one axis.

    ``out_size`` may be a symbolic int (``torch.compile(dynamic=True)``)."""
    if mode not in MATRIX_MODES:
        raise ValueError(f"interp_matrix: mode must be one of {MATRIX_MODES}, got {mode!r}")
    f64 = torch.float64
    scale = _scale(in_size, out_size, align_corners)
    i = torch.arange(out_size, dtype=f64, device=device)
    j = torch.arange(in_size, dtype=f64, device=device)
    if antialias:
        taps = 4 if mode == "bicubic" else 2
        support = taps / 2 * scale if scale >= 1.0 else taps / 2
        invscale = 1.0 / scale if scale >= 1.0 else 1.0
        center = (i + 0.5) * scale
        lo = torch.floor(center - support + 0.5).clamp(min=0)
        hi = torch.floor(center + support + 0.5).clamp(max=in_size)
        x = (j[None, :] - center[:, None] + 0.5) * invscale
        w = _cubic(x, -0.5) if mode == "bicubic" else _triangle(x)
        w = torch.where((j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None]), w, torch.zeros_like(w))
        total = w.sum(1, keepdim=True)
        w = torch.where(total != 0, w / torch.where(total != 0, total, torch.ones_like(total)), w)
        return w.to(dtype)
    src = i * scale if align_corners else (i + 0.5) * scale - 0.5
    cols = torch.arange(in_size, device=device)
    if mode == "bilinear":
        if not align_corners:
            src = src.clamp(min=0)
        i0 = torch.floor(src)
        lam = (src - i0).clamp(0, 1)
        i0 = i0.long()
        i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
        w = (1 - lam)[:, None] * (cols[None, :] == i0[:, None]) + lam[:, None] * (cols[None, :] == i1[:, None])
        return w.to(dtype)
    f = torch.floor(src)
    t = src - f
    a = -0.75
    coeffs = torch.stack([_cubic(t + 1, a), _cubic(t, a), _cubic(1 - t, a), _cubic(2 - t, a)], dim=1)  # (out, 4)
    idx = (f.long()[:, None] + torch.arange(-1, 3, device=device)[None, :]).clamp(0, in_size - 1)
    w = (coeffs[:, :, None] * (idx[:, :, None] == cols[None, None, :])).sum(1)
    return w.to(dtype)


def resize_2d(grid: torch.Tensor, size, mode: str = "bicubic", antialias: bool = False,
              align_corners: bool = False) -> torch.Tensor:
    """``F.interpolate(grid, size, mode, antialias=..., align_corners=...)`` for a (N, C, H, W)
    grid and mode bilinear or bicubic, as ``Wh @ grid @ Ww.T``."""
    h, w = grid.shape[-2:]
    wh = interp_matrix(h, size[0], mode, antialias, align_corners, grid.dtype, grid.device)
    ww = interp_matrix(w, size[1], mode, antialias, align_corners, grid.dtype, grid.device)
    return torch.matmul(torch.matmul(wh, grid), ww.transpose(0, 1))


__all__ = ["MATRIX_MODES", "interp_matrix", "resize_2d"]
