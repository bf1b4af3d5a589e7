"""Attention over packed variable-length sequences (NaFlex): many images' tokens back to back,
sequence ``s`` being rows ``cu_seqlens[s]:cu_seqlens[s + 1]``; no token attends across images.

:func:`varlen_attention` is the one entry point the models call, ``impl`` chosen once by the
caller (a model maps its ``attn_impl`` with :func:`varlen_impl_for`):

- ``"torch"``: PyTorch's SDPA once per sequence (no padding, no mask; a host loop over sequences);
- ``"torch_varlen"``: ``torch.nn.attention.varlen.varlen_attn`` (PyTorch's flash-attention varlen
  kernel: PyTorch >= 2.10, CUDA, fp16/bf16, head dims multiple of 8 up to 256);
- ``"padded"``: every sequence padded to the longest, one SDPA call with a boolean key mask
  (the way timm's and Hugging Face's NaFlex models run);
- ``"triton"``: fastvit's packed kernel, :func:`fastvit.kernels.varlen_attention` (never reads
  across sequences, computes no padded token);
- ``"auto"``: on CUDA the fastest of those that can take the call, measured once per key by
  fastvit's dispatcher (:mod:`fastvit.dispatch`; the Triton kernel only where it agrees with
  PyTorch on the call); off CUDA ``"torch"``.

Every impl checks ``cu_seqlens`` first (int32, 1-D, rising from 0 to T; one host copy of S + 1
integers per offsets tensor, remembered while it lives unchanged: the layers of one forward share
it) and raises ValueError naming what is wrong; ``"triton"`` given ``max_seqlen`` leaves the
check to the kernel's op, which makes it inside the opaque ``torch.library`` op, so a compiled model
traces that call without a graph break. See docs/kernels.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastvit.dispatch import OFF_CUDA, Bindings, Candidate, bucket, dtype_name, lookup
from fastvit.kernels import ops, reference
from fastvit.kernels.varlen_attention_offsets import check_max_seqlen, longest_sequence

from .auto import declared
from .kernel_ops import kernel_op

VARLEN_IMPLS = ("torch", "torch_varlen", "padded", "triton", "auto")
# a model's attn_impl -> the varlen impl it runs for packed sequences (varlen_impl_for)
ATTN_IMPL_TO_VARLEN = {
    "auto": "auto",
    "triton": "triton",
    "sdpa": "torch",  # SDPA per sequence: the same math, no mask
    "eager": "torch",
    "flash_attn": "torch_varlen",  # a flash-attention varlen kernel: PyTorch's own
    "xformers": "torch",
}
TORCH_VARLEN_MAX_HEAD_DIM = 256


def varlen_impl_for(attn_impl: str) -> str:
    """The varlen impl for a model's ``attn_impl`` (:data:`ATTN_IMPL_TO_VARLEN`); a varlen impl's own
    name maps to itself. ValueError for anything else."""
    if attn_impl in VARLEN_IMPLS:
        return attn_impl
    if attn_impl not in ATTN_IMPL_TO_VARLEN:
        raise ValueError(f"no varlen attention impl for attn_impl {attn_impl!r}; "
                         f"known: {', '.join([*ATTN_IMPL_TO_VARLEN, *VARLEN_IMPLS])}")  # fmt: skip
    return ATTN_IMPL_TO_VARLEN[attn_impl]


# --------------------------------------------------------------------------- the impls
# Each takes (q, k, v, cu_seqlens, max_seqlen, scale) with checked offsets and max_seqlen an int.


def _per_sequence(q, k, v, cu_seqlens, max_seqlen, scale):
    """PyTorch's SDPA, one call per sequence (no padding, no mask); sequences all of one length
    (an image batch) are one batched call over the (S, H, n, D) view."""
    bounds = cu_seqlens.tolist()
    lengths = {hi - lo for lo, hi in zip(bounds, bounds[1:])}
    if len(lengths) == 1 and 0 not in lengths:
        n = lengths.pop()
        seqs = [t.reshape(-1, n, *t.shape[1:]).transpose(1, 2) for t in (q, k, v)]  # (S, H, n, D)
        return F.scaled_dot_product_attention(*seqs, scale=scale).transpose(1, 2).reshape(q.shape)
    out = torch.empty_like(q)
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            seg = [t[lo:hi].transpose(0, 1).unsqueeze(0) for t in (q, k, v)]  # (1, H, n, D)
            out[lo:hi] = F.scaled_dot_product_attention(*seg, scale=scale)[0].transpose(0, 1)
    return out


def _padded(q, k, v, cu_seqlens, max_seqlen, scale):
    """Pad every sequence to ``max_seqlen`` (S, H, L, D), one SDPA call with a boolean key mask, unpad.
    Padded positions read a zero row appended at index T; no host copy (max_seqlen is given)."""
    total, heads, dim = q.shape
    num = cu_seqlens.numel() - 1
    if total == 0:
        return q.new_empty(q.shape)
    cu = cu_seqlens.long()
    pos = torch.arange(max_seqlen, device=q.device)
    valid = pos[None, :] < (cu[1:] - cu[:-1])[:, None]  # (S, L): real tokens
    index = torch.where(valid, cu[:-1, None] + pos[None, :], total)  # padding -> the zero row

    def pad(t):
        return torch.cat([t, t.new_zeros(1, heads, dim)])[index].transpose(1, 2)  # (S, H, L, D)

    out = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=valid[:, None, None, :], scale=scale)
    rows = torch.arange(total, device=q.device)
    seq = torch.searchsorted(cu[1:], rows, right=True)  # each packed row's sequence
    return out.transpose(1, 2).reshape(num * max_seqlen, heads, dim)[seq * max_seqlen + rows - cu[seq]]


def _torch_varlen(q, k, v, cu_seqlens, max_seqlen, scale):
    """``torch.nn.attention.varlen.varlen_attn`` (PyTorch's flash-attention varlen kernel)."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, scale=scale)


def _triton(q, k, v, cu_seqlens, max_seqlen, scale):
    """fastvit's kernel (a plain import statement, which torch.compile traces; Triton loads on first use)."""
    try:
        from fastvit.kernels.varlen_attention_op import varlen_attention as kernel
    except ImportError:
        kernel = kernel_op("varlen_attention")  # raises, naming the fix
    return kernel(q, k, v, cu_seqlens, max_seqlen, scale=scale)


def torch_varlen_reason(q, k, v, cu_seqlens, max_seqlen=None, scale=None) -> str | None:
    """None when ``torch.nn.attention.varlen`` can take the call here, else why not."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen (PyTorch 2.10 or newer)"
    if q.device.type != "cuda":
        return f"torch.nn.attention.varlen runs flash attention on CUDA only, got tensors on {q.device.type}"
    if q.dtype not in ops.HALF:
        return f"torch.nn.attention.varlen takes float16 or bfloat16, got {dtype_name(q.dtype)}"
    head_dim = q.shape[-1]
    if head_dim % 8 or head_dim > TORCH_VARLEN_MAX_HEAD_DIM:
        return f"torch.nn.attention.varlen takes head dims that are multiples of 8 up to 256, got {head_dim}"
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        return "torch.nn.attention.varlen needs a unit stride in the head dim"
    return None


def triton_reason(q, k, v, cu_seqlens, max_seqlen=None, scale=None) -> str | None:
    """None when the Triton kernel can take the call (the op's declaration), else why not."""
    return ops.declaration("varlen_attention").supports(
        device=q.device, dtype=q.dtype, head_dim=q.shape[-1], cu_seqlens_dtype=cu_seqlens.dtype,
        cu_seqlens_dim=cu_seqlens.dim(),
    )  # fmt: skip


def _triton_auto_reason(q, k, v, cu_seqlens, max_seqlen, scale):
    return declared("varlen_attention", device=q.device, dtype=q.dtype, head_dim=q.shape[-1],
                    cu_seqlens_dtype=cu_seqlens.dtype, cu_seqlens_dim=cu_seqlens.dim())  # fmt: skip


def _reference(q, k, v, cu_seqlens, max_seqlen, scale):
    """The gate's float64 reference (the args come promoted)."""
    return reference.varlen_attention_ref(q, k, v, cu_seqlens, scale=scale, upcast=False)


# "torch" first: the gate's baseline is the first torch candidate that takes the call
VARLEN_CANDIDATES = (
    Candidate("torch", _per_sequence, "torch"),
    Candidate("padded", _padded, "torch"),
    Candidate("torch_varlen", _torch_varlen, "torch", torch_varlen_reason),
    Candidate("triton", _triton, "kernel", _triton_auto_reason, reference=_reference,
              bound=ops.declaration("varlen_attention").tolerance.bound),
)  # fmt: skip
IMPLS = {c.name: c.fn for c in VARLEN_CANDIDATES}
# auto's bound choices, per (key, device type, mode): see fastvit.dispatch.binding
VARLEN_BOUND = Bindings()


def _auto(q, k, v, cu_seqlens, max_seqlen, scale):
    """The measured choice for this call's key (dtype, packed rows, sequences and the longest rounded up
    to powers of two, heads, head dim); off CUDA the per-sequence SDPA."""
    args = (q, k, v, cu_seqlens, max_seqlen, scale)
    total, heads, dim = q.shape
    key = (dtype_name(q.dtype), bucket(total), bucket(cu_seqlens.numel() - 1), bucket(max_seqlen), heads, dim)
    impl = lookup(VARLEN_BOUND, "varlen_attention", key, VARLEN_CANDIDATES, args)
    return _per_sequence(*args) if impl is OFF_CUDA else impl.fn(*args)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int | None = None, scale: float | None = None, impl: str = "torch") -> torch.Tensor:
    """softmax(q k^T * scale) v within each sequence. q, k, v (T, H, D); ``cu_seqlens`` (S + 1,) int32
    offsets from 0 to T; ``max_seqlen`` the longest sequence (computed when None; a larger value is
    allowed). Returns (T, H, D). ``impl``: one of :data:`VARLEN_IMPLS` (see the module docstring)."""
    if impl not in VARLEN_IMPLS:
        raise ValueError(f"unknown varlen attention impl {impl!r}; valid: {', '.join(VARLEN_IMPLS)}")
    if q.dim() != 3 or k.shape != q.shape[:2] + k.shape[2:] or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"q, k, v must be (T, H, D) with the same T and H, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if impl == "triton" and max_seqlen is not None:  # the op checks the offsets inside itself: no graph break
        return _triton(q, k, v, cu_seqlens, max_seqlen, scale)
    longest = longest_sequence(cu_seqlens, q.shape[0])
    if max_seqlen is None:
        max_seqlen = longest
    check_max_seqlen(max_seqlen, longest)
    args = (q, k, v, cu_seqlens, max_seqlen, scale)
    if impl == "auto":
        return _auto(*args)
    if impl == "torch_varlen":
        reason = torch_varlen_reason(*args)
        if reason is not None:
            raise RuntimeError(f"varlen attention impl 'torch_varlen' cannot run this call: {reason}")
    return IMPLS[impl](*args)
