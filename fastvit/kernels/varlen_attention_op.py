"""Variable-length (packed) attention, forward and backward, in Triton: the op file of
``fastvit.kernels.varlen_attention`` (named ``*_op`` so that the package attribute
``fastvit.kernels.varlen_attention`` stays the function, not this submodule).

Layout: ``q``, ``k``, ``v`` are (T, H, D) tensors (any strides, e.g. views of a
packed (T, 3, H, D) qkv projection) holding S sequences back to back: sequence
``s`` is rows ``cu_seqlens[s]:cu_seqlens[s + 1]`` (``cu_seqlens`` (S + 1,) int32,
from 0 to T, non-decreasing; flash-attention's varlen convention). A token
attends to the tokens of its own sequence only. The output is a fresh (T, H, D)
tensor in q's dtype.

Forward: one program per (query block of one sequence, sequence x head): the grid is
``cdiv(max_seqlen, BLOCK_M) * S * H`` programs, flattened with the query block
fastest. A program reads its sequence's start and length from ``cu_seqlens``, returns
at once when its block lies past the sequence's end (short and empty sequences), and
otherwise streams over that sequence's keys only, with an online softmax in fp32 as
:mod:`fastvit.kernels.flash_attention` does: full key blocks unmasked, the last,
partial one masked. No program reads a row of another sequence, and none computes a
row beyond tile masking. It also writes the row log-sum-exp ``lse`` ((H, T) fp32,
natural log) for the backward.

Backward (:mod:`fastvit.kernels.varlen_attention_bwd`), without atomics: ``delta =
rowsum(dO * O)`` over all rows; dK/dV with one program per key block of one sequence,
looping over that sequence's query blocks; dQ with one program per query block, looping
over its keys. Each output row is written once, by the one program that owns it.

The head dimension is tiled as the dense kernels tile it
(:func:`fastvit.kernels._attention_tiles.head_tiles`): 72 runs as 64 + 16. The
launcher checks ``cu_seqlens`` (one device-to-host copy of S + 1 integers per offsets tensor,
remembered: :mod:`fastvit.kernels.varlen_attention_offsets`) and that ``max_seqlen`` covers the
longest sequence. Reference:
:func:`fastvit.kernels.reference.varlen_attention_ref`.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastvit.kernels import varlen_attention_bwd as bwd
from fastvit.kernels.varlen_attention_bwd import sequence_block
from fastvit.kernels._attention_tiles import (
    LN2, LOG2E, backward_head_tiles, cast as _cast, fwd_block as _fwd_block,
    head_tiles, load as _load, store as _store, supports_head_dim,
)  # fmt: skip
from fastvit.kernels.ops import FLOATS, MAX_HEAD_DIM, device_reason
from fastvit.kernels.varlen_attention_offsets import check_max_seqlen, longest_sequence
from fastvit.kernels.tuning import autotune_configs, autotune_do_bench, current_arch, interpreting, split

TUNE_KEY = bwd.TUNE_KEY
DELTA_CONFIG, DKDV_CONFIGS, DQ_CONFIGS = bwd.DELTA_CONFIG, bwd.DKDV_CONFIGS, bwd.DQ_CONFIGS

# Launch configurations per architecture (fastvit.kernels.tuning); the first "default" entry is
# the interpreter's. Every entry compiles without spilling registers at head dims 64 and 72 on
# the architecture it is listed under, the "default" one on sm_80 (fastvit.aot.varlen_attention).
FWD_CONFIGS = {
    "sm90": [dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3)],  # 64x64 with 4 warps spills at 72 (48 B)
    "sm80": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2),
    ],
    "default": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)],
}
CONFIGS = {"fwd": FWD_CONFIGS, "bwd_dkdv": DKDV_CONFIGS, "bwd_dq": DQ_CONFIGS}


@triton.autotune(configs=autotune_configs(FWD_CONFIGS), key=TUNE_KEY, do_bench=autotune_do_bench())
@triton.jit
def _varlen_attention_fwd_kernel(
    Q, K, V, O, LSE, CU_SEQLENS,
    sq_t, sq_h, sq_d,
    sk_t, sk_h, sk_d,
    sv_t, sv_h, sv_d,
    so_t, so_h, so_d,
    qk_scale, num_heads, total, max_seqlen, seq_bucket,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr, PRECISION: tl.constexpr,
    INTERPRET: tl.constexpr, NEG_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per (query block, sequence x head), query blocks fastest: O = softmax(scale Q K^T) V
    and LSE over that sequence's rows only; cdiv(max_seqlen, BLOCK_M) blocks per sequence and head.
    ``seq_bucket`` (max_seqlen rounded up to a power of two) only keys the autotuner."""
    start_m, h, lo, n = sequence_block(CU_SEQLENS, max_seqlen, num_heads, BLOCK_M)
    if start_m >= n:  # past this sequence's end (or an empty sequence): nothing to compute
        return
    lo = lo.to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_d2 = BLOCK_D + tl.arange(0, max(BLOCK_D2, 16))
    mask_m = offs_m < n
    Q += lo * sq_t + h * sq_h
    K += lo * sk_t + h * sk_h
    V += lo * sv_t + h * sv_h
    O += lo * so_t + h * so_h
    LSE += h * total + lo

    q = _load(Q, offs_m, sq_t, offs_d, sq_d, mask_m, offs_d < HEAD_DIM, True, HEAD_DIM < BLOCK_D)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    q2 = q
    acc2 = acc
    if BLOCK_D2 > 0:
        q2 = _load(Q, offs_m, sq_t, offs_d2, sq_d, mask_m, offs_d2 < HEAD_DIM, True, HEAD_DIM < BLOCK_D + BLOCK_D2)
        acc2 = tl.zeros([BLOCK_M, BLOCK_D2], tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    n_full = (n // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, acc2, m_i, l_i = _fwd_block(
            acc, acc2, m_i, l_i, q, q2, K, V, start_n + offs_n, offs_d, offs_d2, sk_t, sk_d, sv_t, sv_d, n,
            qk_scale, HEAD_DIM, BLOCK_D, BLOCK_D2, PRECISION, INTERPRET, NEG_SCALE, False,
        )  # fmt: skip
    if n_full < n:
        acc, acc2, m_i, l_i = _fwd_block(
            acc, acc2, m_i, l_i, q, q2, K, V, n_full + offs_n, offs_d, offs_d2, sk_t, sk_d, sv_t, sv_d, n,
            qk_scale, HEAD_DIM, BLOCK_D, BLOCK_D2, PRECISION, INTERPRET, NEG_SCALE, True,
        )  # fmt: skip

    out_ty = O.dtype.element_ty
    _store(O, offs_m, so_t, offs_d, so_d, _cast(acc / l_i[:, None], out_ty, INTERPRET), mask_m,
           offs_d < HEAD_DIM, HEAD_DIM < BLOCK_D)  # fmt: skip
    if BLOCK_D2 > 0:
        _store(O, offs_m, so_t, offs_d2, so_d, _cast(acc2 / l_i[:, None], out_ty, INTERPRET), mask_m,
               offs_d2 < HEAD_DIM, HEAD_DIM < BLOCK_D + BLOCK_D2)  # fmt: skip
    tl.store(LSE + offs_m, (m_i + tl.log2(l_i)) * LN2, mask=mask_m)


# -- launchers ------------------------------------------------------------------------------


def _input_constexprs(q: Tensor, allow_tf32: bool, backward: bool = False) -> dict:
    """Constexprs fixed by the inputs (the interpreter runs the sm_90 tiling, the split one)."""
    arch = "sm90" if interpreting() else current_arch()
    block_d, block_d2 = backward_head_tiles(q.shape[-1], arch) if backward else head_tiles(q.shape[-1])
    return dict(
        HEAD_DIM=q.shape[-1],
        BLOCK_D=block_d,
        BLOCK_D2=block_d2,
        PRECISION="tf32" if allow_tf32 and q.dtype == torch.float32 else "ieee",
        INTERPRET=interpreting(),
    )


def _check_runnable(t: Tensor) -> None:
    if device_reason(t.device) is not None:
        raise RuntimeError(
            f"varlen_attention: the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1), got {t.device}"
        )


def check_cu_seqlens(cu_seqlens: Tensor, total: int, max_seqlen: int, device) -> int:
    """ValueError unless ``cu_seqlens`` is (S + 1,) int32 on ``device``, rising from 0 to ``total``, and
    ``max_seqlen`` (an int) is at least its longest sequence. Returns the longest sequence's length
    (:mod:`fastvit.kernels.varlen_attention_offsets`: one host copy per offsets tensor, remembered)."""
    longest = longest_sequence(cu_seqlens, total)
    if cu_seqlens.device != torch.device(device):
        raise ValueError(f"varlen_attention: expected cu_seqlens on {device} like q, got {cu_seqlens.device}")
    check_max_seqlen(max_seqlen, longest)
    return longest


def _seq_bucket(max_seqlen: int) -> int:
    """The autotuner's length key: max_seqlen rounded up to a power of two (NaFlex batches vary)."""
    return triton.next_power_of_2(max(1, max_seqlen))


def _check_buffer(name: str, t: Tensor, shape: tuple, dtype, device, contiguous: bool = False) -> None:
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != device:
        raise ValueError(f"varlen_attention: expected {name} of shape {tuple(shape)}, {dtype} on {device}, "
                         f"got {tuple(t.shape)}, {t.dtype} on {t.device}")  # fmt: skip
    if contiguous and not t.is_contiguous():
        raise ValueError(f"varlen_attention: expected {name} contiguous, got strides {t.stride()}")
    if t.numel() > 1 and torch._debug_has_internal_overlap(t) == 1:
        raise ValueError(f"varlen_attention: expected {name} without overlapping elements, got strides {t.stride()}")


def varlen_attention_fwd(q, k, v, cu_seqlens, max_seqlen, scale, *, out=None, lse=None, allow_tf32=False):
    """Launch the forward kernel. Returns ``(out, lse)``: out (T, H, D) in q's dtype (contiguous unless
    ``out`` is given), lse (H, T) fp32 contiguous. Checks ``cu_seqlens`` and ``max_seqlen`` first."""
    _check_runnable(q)
    total, heads, _ = q.shape
    check_cu_seqlens(cu_seqlens, total, max_seqlen, q.device)
    out = torch.empty_like(q, memory_format=torch.contiguous_format) if out is None else out
    lse = q.new_empty((heads, total), dtype=torch.float32) if lse is None else lse
    _check_buffer("out", out, q.shape, q.dtype, q.device)
    _check_buffer("lse", lse, (heads, total), torch.float32, q.device, contiguous=True)
    num_seqs = cu_seqlens.numel() - 1
    if out.numel() == 0 or num_seqs == 0:
        return out, lse

    def grid(meta):
        return (triton.cdiv(max_seqlen, meta["BLOCK_M"]) * num_seqs * heads,)

    _varlen_attention_fwd_kernel[grid](
        q, k, v, out, lse, cu_seqlens, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        scale * LOG2E.value, heads, total, max_seqlen, _seq_bucket(max_seqlen),
        **_input_constexprs(q, allow_tf32), NEG_SCALE=scale < 0,
    )  # fmt: skip
    return out, lse


def varlen_attention_bwd(do, q, k, v, out, lse, cu_seqlens, max_seqlen, scale, *, dq=None, dk=None, dv=None,
                         delta=None, allow_tf32=False):  # fmt: skip
    """Launch the backward kernels. Returns ``(dq, dk, dv)``, contiguous unless given; ``delta``
    ((H, T) fp32) is scratch. ``cu_seqlens`` and ``max_seqlen`` are the forward's (not re-checked)."""
    _check_runnable(q)
    total, heads, head_dim = q.shape
    dq = torch.empty_like(q, memory_format=torch.contiguous_format) if dq is None else dq
    dk = torch.empty_like(k, memory_format=torch.contiguous_format) if dk is None else dk
    dv = torch.empty_like(v, memory_format=torch.contiguous_format) if dv is None else dv
    delta = torch.empty_like(lse) if delta is None else delta
    for name, t, like in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v)):
        _check_buffer(name, t, like.shape, like.dtype, like.device)
    for name, t in (("lse", lse), ("delta", delta)):
        _check_buffer(name, t, (heads, total), torch.float32, q.device, contiguous=True)
    num_seqs = cu_seqlens.numel() - 1
    if total * heads == 0 or num_seqs == 0:
        return dq, dk, dv
    for name, t in (("out", out), ("do", do)):  # the delta kernel's row offsets are int32
        if (total - 1) * abs(t.stride(0)) >= 2**31:
            raise ValueError(f"varlen_attention: {name} rows span more than 2**31 elements (T = {total}, "
                             f"row stride {t.stride(0)}); split the batch")  # fmt: skip
    delta_meta, delta_launch = split(DELTA_CONFIG)
    bwd.KERNELS["bwd_delta"][(triton.cdiv(total, delta_meta["BLOCK_M"]) * heads,)](
        out, do, delta, *out.stride(), *do.stride(), heads, total,
        HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)), **delta_meta, **delta_launch,
    )  # fmt: skip
    meta = _input_constexprs(q, allow_tf32, backward=True)
    common = (cu_seqlens, *q.stride(), *k.stride(), *v.stride(), *do.stride())
    scalars = (scale, scale * LOG2E.value, heads, total, max_seqlen, _seq_bucket(max_seqlen))
    bwd.KERNELS["bwd_dkdv"][lambda m: (triton.cdiv(max_seqlen, m["BLOCK_N"]) * num_seqs * heads,)](
        q, k, v, do, lse, delta, dk, dv, *common, *dk.stride(), *dv.stride(), *scalars, **meta,
    )  # fmt: skip
    bwd.KERNELS["bwd_dq"][lambda m: (triton.cdiv(max_seqlen, m["BLOCK_M"]) * num_seqs * heads,)](
        q, k, v, do, lse, delta, dq, *common, *dq.stride(), *scalars, **meta,
    )  # fmt: skip
    return dq, dk, dv


# -- torch.library ops and autograd ---------------------------------------------------------


def _tf32_opt_in() -> bool:
    return os.environ.get("FASTVIT_ATTENTION_TF32", "0") == "1"


@torch.library.custom_op("fastvit::varlen_attention_fwd", mutates_args=())
def varlen_attention_fwd_op(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int,
                            scale: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    return varlen_attention_fwd(q, k, v, cu_seqlens, max_seqlen, scale, allow_tf32=_tf32_opt_in())


@varlen_attention_fwd_op.register_fake
def _(q, k, v, cu_seqlens, max_seqlen, scale):
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(q.shape[1::-1], dtype=torch.float32)


@torch.library.custom_op("fastvit::varlen_attention_bwd", mutates_args=())
def varlen_attention_bwd_op(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, cu_seqlens: Tensor,
                            max_seqlen: int, scale: float) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    return varlen_attention_bwd(do, q, k, v, out, lse, cu_seqlens, max_seqlen, scale, allow_tf32=_tf32_opt_in())


@varlen_attention_bwd_op.register_fake
def _(do, q, k, v, out, lse, cu_seqlens, max_seqlen, scale):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


def _setup_context(ctx, inputs, output):
    q, k, v, cu_seqlens, max_seqlen, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
    ctx.max_seqlen, ctx.scale = max_seqlen, scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    dq, dk, dv = varlen_attention_bwd_op(dout, q, k, v, out, lse, cu_seqlens, ctx.max_seqlen, ctx.scale)
    return dq, dk, dv, None, None, None


varlen_attention_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _check_inputs(q, k, v) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 3:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"varlen_attention: expected {name} of shape (T, H, D), got {shape}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in FLOATS:
        raise TypeError(f"varlen_attention: expected q, k, v all float16, bfloat16 or float32, "
                        f"got {q.dtype}, {k.dtype}, {v.dtype}")  # fmt: skip
    if not (q.device == k.device == v.device):
        raise ValueError(f"varlen_attention: expected q, k, v on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"varlen_attention: expected q, k, v of one shape (T, H, D), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")  # fmt: skip
    if not supports_head_dim(q.shape[-1]):
        raise ValueError(f"varlen_attention: expected head_dim between 1 and {MAX_HEAD_DIM}, got {q.shape[-1]}")


def varlen_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int,
                     scale: float | None = None) -> Tensor:  # fmt: skip
    """softmax(q k^T * scale) v within each packed sequence, non-causal.

    q, k, v: (T, H, D), any strides; ``cu_seqlens``: (S + 1,) int32 offsets from 0 to T on q's device;
    ``max_seqlen``: an int at least the longest sequence (a larger one only launches idle programs).
    ``scale`` defaults to 1/sqrt(D). Returns (T, H, D). Differentiable in q, k, v; runs as the opaque
    custom ops ``fastvit::varlen_attention_fwd`` / ``fastvit::varlen_attention_bwd``.
    """
    _check_inputs(q, k, v)
    if not isinstance(cu_seqlens, Tensor):
        raise TypeError(f"varlen_attention: expected cu_seqlens a tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1:
        raise ValueError(f"varlen_attention: expected cu_seqlens a 1-D int32 tensor of S + 1 >= 2 offsets, "
                         f"got {cu_seqlens.dtype} of shape {tuple(cu_seqlens.shape)}")  # fmt: skip
    check_max_seqlen(max_seqlen, 0)  # the type here; the value against the offsets inside the op
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    out, _ = varlen_attention_fwd_op(q, k, v, cu_seqlens, max_seqlen, scale)
    return out


# The op's kernels, by pass (the compile check and the GPU check's sweep read these).
KERNELS = {"fwd": _varlen_attention_fwd_kernel, **bwd.KERNELS}
