"""Rotary attention for the Eva family: how q and k are rotated and attended, resolved once per layer.

A *runner* is ``(q, k, v, rope, num_prefix, half, dropout_p, scale) -> out`` over (B, H, N, D)
tensors, ``rope`` being the block's full table (N - num_prefix, 2D) or (H, N - num_prefix, 2D) of
:mod:`fastvit.layers.rope`. :func:`resolve_rotary` gives an :class:`~fastvit.layers.eva_block.EvaAttention`
its runner at construction, from ``attn_impl``:

- ``"triton"``: :func:`fastvit.kernels.rope_attention`, which rotates q and k as it loads them (no
  rotated q or k in memory, forward or backward), fed the per-pair tables
  (:func:`~fastvit.layers.rope.rope_pairs`). Where it cannot run, the layer rotates in PyTorch and
  runs fastvit's attention kernel, and says why: at construction (the op is missing, the head dim
  is outside its limits, the table's layout differs from the rotation's) in the layer's
  ``rotary_reason``; per call, the two things only a call knows: attention dropout in training,
  and tables that need their gradient (RoPE-Mixed's learned frequencies under autograd).
- ``"auto"``: a choice bound per layer key between the fused op and timm's way (rotate in PyTorch,
  then SDPA), through :mod:`fastvit.dispatch`: the first eager call per key checks the fused op
  against the float64 reference within the op's declared tolerance and times both (forward +
  backward for a training call); off CUDA it is timm's way. Dropout runs timm's way.
- any other ``attn_impl``: rotate in PyTorch, then that backend (timm's way with another attention).

A layer that does not rotate (no rotary embedding) runs its backend on q, k, v as they are.
"""

from __future__ import annotations

import functools

import torch

from fastvit.dispatch import OFF_CUDA, Bindings, Candidate, bucket, dtype_name, lookup
from fastvit.kernels import ops

from .attention import get_attention_backend, sdpa_attention
from .auto import declared
from .kernel_ops import kernel_op
from .rope import rope_pairs, rope_prefix

OP = "rope_attention"
_FUSED: dict[str, object] = {}  # the op function, looked up on the first fused call (import fastvit stays Triton-free)


def fused_op():
    """``fastvit.kernels.rope_attention`` (imports Triton on first use)."""
    fn = _FUSED.get(OP)
    if fn is None:
        fn = _FUSED[OP] = kernel_op(OP)
    return fn


def fused_attention(q, k, v, rope, num_prefix, half, scale):
    """The fused op over the block's full table (converted to per-pair fp32 tables: a bf16 or fp16
    model's table widens exactly, and the kernel rotates in fp32)."""
    sin, cos = rope_pairs(rope.float(), half)
    return fused_op()(q, k, v, sin, cos, num_prefix=num_prefix, rotate_half=half, scale=scale)


# ------------------------------------------------------------------------------------------- runners


def rotate_then(attn_fn, q, k, v, rope, num_prefix, half, dropout_p=0.0, scale=None):
    """timm's way: q and k rotated in PyTorch (cast to v's dtype), then the backend ``attn_fn``."""
    q = rope_prefix(q, rope, num_prefix, half, v.dtype)
    k = rope_prefix(k, rope, num_prefix, half, v.dtype)
    return attn_fn(q, k, v, dropout_p=dropout_p, scale=scale)


def no_rotation(attn_fn, q, k, v, rope, num_prefix, half, dropout_p=0.0, scale=None):
    return attn_fn(q, k, v, dropout_p=dropout_p, scale=scale)


def call_reason(rope: torch.Tensor, dropout_p: float) -> str | None:
    """Why this call cannot take the fused op whatever the shapes (None: it can)."""
    if dropout_p > 0:
        return "attention dropout is active (the fused op has none)"
    if rope.requires_grad and torch.is_grad_enabled():
        return "the rotary tables need their gradient (learned RoPE-Mixed frequencies under autograd)"
    return None


def fused_rotary(fallback, q, k, v, rope, num_prefix, half, dropout_p=0.0, scale=None):
    """``attn_impl="triton"``: the fused op, or ``fallback`` (rotate, then fastvit's attention) where
    :func:`call_reason` says the call cannot take it."""
    if call_reason(rope, dropout_p) is not None:
        return fallback(q, k, v, rope, num_prefix, half, dropout_p, scale)
    return fused_attention(q, k, v, rope, num_prefix, half, scale)


# ------------------------------------------------------------------------------------------- auto


def _rotate_sdpa(q, k, v, rope, num_prefix, half, scale):
    return rotate_then(sdpa_attention, q, k, v, rope, num_prefix, half, 0.0, scale)


def _op_reason(**query) -> str | None:
    if OP not in ops.OPS:
        return f"this fastvit declares no {OP!r} kernel"
    return ops.supports(OP, **query)


def auto_op_reason(q, rope, num_prefix) -> str | None:
    """What the op's declaration says about ``auto`` offering it for this call (q's device, dtype and
    shape, the prefix, the per-pair tables :func:`fused_attention` would pass)."""
    if OP not in ops.OPS:
        return f"this fastvit declares no {OP!r} kernel"
    _, h, n, d = q.shape
    return declared(OP, device=q.device, dtype=q.dtype, head_dim=d, seq_len=n, num_prefix=num_prefix, heads=h,
                    table_shape=(*rope.shape[:-1], rope.shape[-1] // 4), table_dtype=torch.float32,
                    tables_require_grad=bool(rope.requires_grad and torch.is_grad_enabled()))  # fmt: skip


def _fused_supports(q, k, v, rope, num_prefix, half, scale):
    return call_reason(rope, 0.0) or auto_op_reason(q, rope, num_prefix)


def _bound():
    return ops.declaration(OP).tolerance.bound if OP in ops.OPS else None


# the gate's reference: the torch candidate on float64 copies (all fp64); the bound: the op's declared tolerance
ROPE_ATTENTION_CANDIDATES = (
    Candidate("sdpa-rotate", _rotate_sdpa, "torch"),
    Candidate("triton", fused_attention, "kernel", _fused_supports, bound=_bound()),
)
ROPE_ATTENTION_BOUND = Bindings()  # the auto runner is a function: its choices are bound here, per key


def rope_key(q, rope, num_prefix, half) -> tuple:
    """What the choice depends on: dtypes, the batch's bucket, heads, tokens, head dim, the prefix,
    the pairing, whether the table is per head and whether it needs its gradient."""
    b, h, n, d = q.shape
    learned = bool(rope.requires_grad and torch.is_grad_enabled())
    return (dtype_name(q.dtype), dtype_name(rope.dtype), bucket(b), h, n, d, num_prefix, bool(half), rope.dim() == 3, learned)


def auto_rotary(q, k, v, rope, num_prefix, half, dropout_p=0.0, scale=None):
    """``attn_impl="auto"``: the fused op or timm's way, as bound for the call's key."""
    if dropout_p > 0 or not isinstance(q, torch.Tensor):  # dropout, or a torch.fx proxy: timm's way
        return rotate_then(sdpa_attention, q, k, v, rope, num_prefix, half, dropout_p, scale)
    args = (q, k, v, rope, num_prefix, half, scale)
    impl = lookup(ROPE_ATTENTION_BOUND, OP, rope_key(q, rope, num_prefix, half), ROPE_ATTENTION_CANDIDATES, args)
    return _rotate_sdpa(*args) if impl is OFF_CUDA else impl.fn(*args)


# ------------------------------------------------------------------------------------------- resolution


def static_reason(head_dim: int, half: bool, table_half: bool) -> str | None:
    """Why no call of such a layer can take the fused op (None: calls may)."""
    if half != table_half:
        return ("the rotary table's layout differs from the rotation's pairs "
                f"({'half' if table_half else 'interleaved'} table, {'half' if half else 'interleaved'} rotation)")
    if head_dim % 2:
        return f"head dim {head_dim} is odd"
    return _op_reason(device="cuda", dtype=torch.float16, head_dim=head_dim, interpret=False)


def resolve_rotary(attn_impl: str, rotate: bool, head_dim: int, half: bool = False, table_half: bool | None = None):
    """``(runner, reason, dispatches)`` for a layer: its runner (see the module notes), why it does not
    take the fused op where ``attn_impl`` asks for it (else None), and whether it dispatches (``auto``)."""
    table_half = half if table_half is None else table_half
    backend = get_attention_backend(attn_impl)
    if not rotate:
        return functools.partial(no_rotation, backend), None, attn_impl == "auto"
    if attn_impl not in ("triton", "auto"):
        return functools.partial(rotate_then, backend), None, False
    reason = static_reason(head_dim, half, table_half)
    if reason is not None:
        return functools.partial(rotate_then, backend), reason, attn_impl == "auto"
    if attn_impl == "auto":
        return auto_rotary, None, True
    return functools.partial(fused_rotary, functools.partial(rotate_then, backend)), None, False


def runner_name(runner) -> str:
    """A short label of a runner (``extra_repr``)."""
    if runner is auto_rotary:
        return "auto(fused | sdpa-rotate)"
    fn = runner.func if isinstance(runner, functools.partial) else runner
    if fn is fused_rotary:
        return "fused"
    backend = runner.args[0] if isinstance(runner, functools.partial) and runner.args else None
    label = getattr(backend, "__name__", None) or getattr(getattr(backend, "func", None), "__name__", "attention")
    return f"{'rotate, then ' if fn is rotate_then else ''}{label}"
