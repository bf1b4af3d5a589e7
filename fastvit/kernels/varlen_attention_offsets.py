"""The sequence offsets of packed variable-length attention: the one check of ``cu_seqlens``.

Imports no Triton: both the kernel's op (:mod:`fastvit.kernels.varlen_attention_op`) and the layer
entry point (:mod:`fastvit.layers.varlen`) call :func:`longest_sequence`. Checking reads the offsets
on the host, a device-to-host copy that waits for the GPU; a model passes the same ``cu_seqlens``
tensor to every layer of a forward, so the result is remembered per tensor (by identity, while it
lives, and its version counter: an in-place write checks again). One copy per forward, not per layer.
"""

from __future__ import annotations

import weakref

import torch

# id(cu_seqlens) -> (weak reference, its _version when checked, total, longest sequence)
_CHECKED: dict[int, tuple] = {}


def host_offsets(cu_seqlens: torch.Tensor) -> list[int]:
    """The offsets as Python integers (the host copy)."""
    return cu_seqlens.tolist()


def longest_sequence(cu_seqlens, total: int) -> int:
    """The longest sequence's length; ValueError unless ``cu_seqlens`` is a 1-D int32 tensor of at least
    2 offsets rising (non-decreasing) from 0 to ``total`` (TypeError if it is no tensor)."""
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"varlen_attention: expected cu_seqlens a tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"varlen_attention: expected cu_seqlens a 1-D int32 tensor of S + 1 >= 2 offsets, "
                         f"got {cu_seqlens.dtype} of shape {tuple(cu_seqlens.shape)}")  # fmt: skip
    key, version = id(cu_seqlens), _version(cu_seqlens)
    seen = _CHECKED.get(key)
    if seen is not None and version is not None and seen[0]() is cu_seqlens and seen[1:3] == (version, total):
        return seen[3]
    bounds = host_offsets(cu_seqlens)
    if bounds[0] != 0 or bounds[-1] != total or any(b < a for a, b in zip(bounds, bounds[1:])):
        shown = bounds if len(bounds) <= 12 else bounds[:6] + ["..."] + bounds[-3:]
        raise ValueError(f"varlen_attention: expected cu_seqlens rising (non-decreasing) from 0 to the {total} "
                         f"packed rows, got {shown}")  # fmt: skip
    longest = max(b - a for a, b in zip(bounds, bounds[1:]))
    if version is not None and not torch.compiler.is_compiling():  # no weak reference to a traced tensor
        ref = weakref.ref(cu_seqlens, lambda _, key=key: _CHECKED.pop(key, None))
        _CHECKED[key] = (ref, version, total, longest)
    return longest


def _version(t: torch.Tensor) -> int | None:
    """The tensor's version counter; None for an inference-mode tensor, which has none (checked every time)."""
    try:
        return t._version
    except RuntimeError:
        return None


def check_max_seqlen(max_seqlen, longest: int) -> None:
    """TypeError unless ``max_seqlen`` is an int (a SymInt while a compile traces a varying one),
    ValueError if it is below the longest sequence."""
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, (int, torch.SymInt)):
        raise TypeError(f"varlen_attention: expected max_seqlen an int, got {type(max_seqlen).__name__}")
    if max_seqlen < longest:
        raise ValueError(f"varlen_attention: expected max_seqlen >= the longest sequence ({longest}), got {max_seqlen}")
