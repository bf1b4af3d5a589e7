"""How the LayerNorm ops (:mod:`fastvit.kernels.norm`) read their arguments: row layouts and input checks.

Plain PyTorch (no Triton): the launchers flatten every input to rows the
kernels read through row strides -- one stride for any layout whose leading
dims merge, two for the per-head q / k slices of a packed qkv (qk-norm) --
and the public functions check their arguments here before anything runs.
"""

from __future__ import annotations

import math

import torch

from fastvit.kernels.contract import device_reason
from fastvit.kernels.norm_support import DTYPES as _DTYPES, MAX_HIDDEN  # noqa: F401 - re-exported


def _as_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """(rows, n) view of ``t``, read by the kernels through its row stride (which may
    be 0 for a row broadcast with ``expand``); a copy if the leading dims do not
    merge or the last dim is not unit-stride (transposed, expanded along it)."""
    t2 = t.reshape(math.prod(t.shape[:-1]), n)
    return t2 if t2.stride(1) == 1 or n <= 1 else t2.contiguous()


def _as_two_level_rows(t: torch.Tensor, n: int) -> tuple[torch.Tensor, int, int, int]:
    """``(base, rows_inner, stride_outer, stride_inner)``: ``t``'s rows without a copy where possible.

    Row ``r`` of ``t`` (leading dims flattened) starts at element
    ``(r // rows_inner) * stride_outer + (r % rows_inner) * stride_inner`` of
    ``base``. Layouts whose leading dims merge into one stride give
    ``rows_inner = 1`` (exactly :func:`_as_rows`). Those that merge into two --
    the (B, N, H, head_dim) q or k slice of a packed (B, N, 3, H, head_dim)
    qkv projection, normalized per head by qk-norm -- are read in place:
    ``rows_inner = H``, strides ``(3 H head_dim, head_dim)``. Anything else
    (or a last dim that is not unit-stride) is copied to contiguous rows.
    """
    rows = math.prod(t.shape[:-1])
    if n > 1 and t.dim() >= 3 and t.stride(-1) == 1 and rows > 0:
        try:
            t2 = t.view(rows, n)
        except RuntimeError:
            t2 = None
        if t2 is None:
            lead = [(size, stride) for size, stride in zip(t.shape[:-1], t.stride()[:-1]) if size != 1]
            # merge the leading dims from the innermost outwards into at most two (size, stride) groups
            groups = []
            for size, stride in reversed(lead):
                if groups and groups[-1][1] * groups[-1][0] == stride:
                    groups[-1] = (groups[-1][0] * size, groups[-1][1])
                else:
                    groups.append((size, stride))
            if len(groups) == 2:
                (inner, stride_inner), (_, stride_outer) = groups
                return t, inner, stride_outer, stride_inner
    t2 = _as_rows(t, n)
    return t2, 1, t2.stride(0), t2.stride(0)


def _vector(t: torch.Tensor) -> torch.Tensor:
    """A 1-d parameter or statistic as the kernels read it: unit-stride (a strided
    or expanded view is copied; N elements, negligible beside the activations)."""
    return t if t.stride(0) == 1 or t.numel() <= 1 else t.contiguous()


def _check_inputs(x, weight, bias, y=None):
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        got = "a 0-dim tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x: expected a tensor with at least 1 dim, got {got}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"x: expected float32, float16 or bfloat16, got {x.dtype}")
    n = x.shape[-1]
    if not 0 <= n <= MAX_HIDDEN:
        raise ValueError(f"x: expected hidden size (last dim) in 0..{MAX_HIDDEN}, got {n}")
    if device_reason(x.device) is not None:
        raise ValueError(f"x: expected a CUDA tensor (or TRITON_INTERPRET=1 for CPU), got device {x.device}")
    if y is not None:
        if not isinstance(y, torch.Tensor) or y.dtype != x.dtype:
            got = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
            raise TypeError(f"y: expected a {x.dtype} tensor like x, got {got}")
        if y.shape != x.shape:
            raise ValueError(f"y: expected shape {tuple(x.shape)} like x, got {tuple(y.shape)}")
        if y.device != x.device:
            raise ValueError(f"y: expected device {x.device} like x, got {y.device}")
    for name, p in (("weight", weight), ("bias", bias)):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor of shape ({n},), got {type(p).__name__}")
        if p.shape != (n,):
            raise ValueError(f"{name}: expected shape ({n},) to match x's last dim, got {tuple(p.shape)}")
        if p.dtype not in (x.dtype, torch.float32):
            raise TypeError(f"{name}: expected {x.dtype} (x's dtype) or torch.float32, got {p.dtype}")
        if p.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} like x, got {p.device}")
    if bias.dtype != weight.dtype:
        raise TypeError(f"bias: expected weight's dtype {weight.dtype}, got {bias.dtype}")


def _check_out_dtype(out_dtype, x):
    """``layer_norm``'s ``out_dtype``: None (x's dtype) or a float dtype the kernels store; x's own dtype is None."""
    if out_dtype is not None and out_dtype not in _DTYPES:
        raise TypeError(f"out_dtype: expected None, torch.float32, torch.float16 or torch.bfloat16, got {out_dtype}")
    return None if out_dtype == x.dtype else out_dtype
