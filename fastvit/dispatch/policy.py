"""What a dispatch decision is made of: the policy switch, a candidate, the key helpers.

Imports neither triton nor :mod:`fastvit.kernels`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

ENV_POLICY = "FASTVIT_DISPATCH"
POLICIES = ("measure", "kernel", "torch")
DEFAULT_POLICY = "measure"
KINDS = ("kernel", "torch")

# A kernel candidate replaces the fastest torch candidate only when it is
# faster by more than this fraction of the torch time (3%): timing noise on a
# GPU is about 1-2% at these budgets, and a wrong "win" inside the noise would
# trade PyTorch's well-tested path for nothing.
MARGIN = 0.03


def policy(value: str | None = None) -> str:
    """The dispatch policy: ``value``, else ``$FASTVIT_DISPATCH``, else "measure".

    - ``measure``: time the supported candidates on the first call for a key, keep the fastest;
    - ``kernel``: fastvit's kernel wherever it supports the call (no timing);
    - ``torch``: PyTorch's ops everywhere (no timing).
    """
    raw = os.environ.get(ENV_POLICY, "") if value is None else value
    if not isinstance(raw, str):
        raise TypeError(f"dispatch policy: expected a string, one of {', '.join(POLICIES)}; got {type(raw).__name__}")
    name = raw.strip().lower() or DEFAULT_POLICY
    if name not in POLICIES:
        source = f"{ENV_POLICY}={raw!r}" if value is None else repr(raw)
        raise ValueError(f"unknown dispatch policy {source}; valid: {', '.join(POLICIES)}")
    return name


@dataclass(frozen=True)
class Candidate:
    """One implementation of an op.

    ``fn(*args)`` computes the op; ``kind`` is "kernel" (fastvit's) or "torch"
    (PyTorch's ops); ``supports(*args)`` returns None when the candidate can
    take the call, else the reason it cannot (None: it takes every call).
    Candidates are compared by name, so give them module-level functions.

    The correctness gate (:mod:`fastvit.dispatch.gate`) reads two more fields of
    a kernel candidate, both optional, both meant to come from the op's declaration:

    - ``reference(*args)``: the op in float64 (args already promoted); None: the
      first torch candidate run on float64 copies of the args;
    - ``bound``: the error a kernel may have: a float (a fraction of the
      reference's magnitude), or ``bound(dtype, torch_error, scale) -> allowed``
      (a declaration's ``Tolerance.bound``); None: the flash-attention rule (at
      most twice PyTorch's own error, plus a small floor; see the gate).
    """

    name: str
    fn: Callable
    kind: str = "torch"
    supports: Callable[..., str | None] | None = None
    reference: Callable | None = None
    bound: float | Callable | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Candidate.name: expected a non-empty string, got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"Candidate {self.name!r}: fn must be callable, got {type(self.fn).__name__}")
        if self.kind not in KINDS:
            raise ValueError(f"Candidate {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.supports is not None and not callable(self.supports):
            raise TypeError(f"Candidate {self.name!r}: supports must be callable or None, got {type(self.supports).__name__}")
        if self.reference is not None and not callable(self.reference):
            raise TypeError(f"Candidate {self.name!r}: reference must be callable or None, got {type(self.reference).__name__}")
        bound_ok = self.bound is None or callable(self.bound) or (isinstance(self.bound, (int, float)) and self.bound >= 0)
        if not bound_ok or isinstance(self.bound, bool):
            raise TypeError(f"Candidate {self.name!r}: bound must be a float >= 0, a callable(dtype, torch_error, scale) "
                            f"-> float, or None; got {self.bound!r}")


MODES = ("inference", "training")


def mode_of(args) -> str:
    """"training" when autograd records the call (grad mode on and a tensor argument requires grad), else "inference".

    The mode is part of every choice's key: a training call is timed forward + backward.
    """
    if torch.is_grad_enabled():
        for a in args:
            if isinstance(a, torch.Tensor) and a.requires_grad:
                return "training"
    return "inference"


def bucket(n):
    """The row/batch count as it enters a key: rounded up to a power of two.

    So 197 * 33 ... 197 * 64 rows share one entry (measured at the first size
    seen, applied within a factor of two of it) while 8 and 256 images never
    do. A size that is not a plain int (a symbolic size while tracing) gives
    None, which no measured key contains.
    """
    if not isinstance(n, int) or isinstance(n, bool):
        return None
    size = 1
    while size < n:
        size *= 2
    return size


_DTYPE_NAMES: dict = {}


def dtype_name(dtype) -> str:
    """"bfloat16" for torch.bfloat16 (keys hold strings, so they serialise)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = str(dtype).replace("torch.", "")
        _DTYPE_NAMES[dtype] = name
    return name


def normalize_key(key) -> tuple:
    """``key`` as a tuple of JSON scalars (dtypes and devices as strings, nested sequences as tuples)."""
    if not isinstance(key, (tuple, list)):
        raise TypeError(f"dispatch key: expected a tuple, got {type(key).__name__}")
    return tuple(_normalize_item(item) for item in key)


def _normalize_item(item):
    if item is None or isinstance(item, (str, bool, int, float)):
        return item
    if isinstance(item, (tuple, list)):
        return tuple(_normalize_item(i) for i in item)
    if isinstance(item, torch.dtype):
        return dtype_name(item)
    if isinstance(item, torch.device):
        return str(item)
    raise TypeError(f"dispatch key: items must be str, int, float, bool, None, a dtype or a tuple of them; got {type(item).__name__}")
