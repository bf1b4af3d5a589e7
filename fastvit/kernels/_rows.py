"""Row layouts of the row-wise kernels (LayerNorm, RMSNorm): how a tensor of any strides is read as rows,
and their output buffers.

Plain PyTorch (no Triton), imports no op file. The launchers flatten every input to
rows the kernels read through row strides: one stride for any layout whose leading dims
merge, two for the per-head q / k slices of a packed qkv (qk-norm).
"""

from __future__ import annotations

import contextlib
import math

import torch


def as_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """(rows, n) view of ``t``, read by the kernels through its row stride (which may
    be 0 for a row broadcast with ``expand``); a copy if the leading dims do not
    merge or the last dim is not unit-stride (transposed, expanded along it)."""
    t2 = t.reshape(math.prod(t.shape[:-1]), n)
    return t2 if t2.stride(1) == 1 or n <= 1 else t2.contiguous()


def as_two_level_rows(t: torch.Tensor, n: int) -> tuple[torch.Tensor, int, int, int]:
    """``(base, rows_inner, stride_outer, stride_inner)``: ``t``'s rows without a copy where possible.

    Row ``r`` of ``t`` (leading dims flattened) starts at element
    ``(r // rows_inner) * stride_outer + (r % rows_inner) * stride_inner`` of
    ``base``. Layouts whose leading dims merge into one stride give
    ``rows_inner = 1`` (exactly :func:`as_rows`). Those that merge into two --
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
    t2 = as_rows(t, n)
    return t2, 1, t2.stride(0), t2.stride(0)


def vector(t: torch.Tensor) -> torch.Tensor:
    """A 1-d parameter or statistic as the kernels read it: unit-stride (a strided
    or expanded view is copied; N elements, negligible beside the activations)."""
    return t if t.stride(0) == 1 or t.numel() <= 1 else t.contiguous()


def device_of(t: torch.Tensor):
    """The context a launch on ``t`` runs in: its CUDA device, or nothing."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def out_buffer(t, shape, dtype, device):
    """Allocate an output, or check the caller's preallocated one."""
    if t is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if t.shape != shape or t.dtype != dtype or t.device != device or not t.is_contiguous():
        raise ValueError(
            f"output buffer: expected contiguous {dtype} of shape {tuple(shape)} on {device}, "
            f"got {t.dtype} {tuple(t.shape)} on {t.device}{'' if t.is_contiguous() else ' (strided)'}"
        )
    return t
