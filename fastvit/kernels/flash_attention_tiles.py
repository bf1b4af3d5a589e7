"""Tile helpers shared by the attention kernels: products, casts, masked loads and stores.

Used by :mod:`fastvit.kernels.flash_attention` (forward), :mod:`~fastvit.kernels.flash_attention_bwd`
and :mod:`~fastvit.kernels.flash_attention_bwd_short`; each is a ``@triton.jit`` function inlined
into the kernel that calls it.
"""

from __future__ import annotations

import triton
import triton.language as tl

_TUNE_KEY = ["n_q", "n_kv", "HEAD_DIM"]
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


# INTERPRET is set by the launchers under the Triton interpreter only. There,
# tl.dot runs through numpy's BLAS, and OpenBLAS's fp32 GEMM kernel for CPUs
# without AVX-512 (Haswell/Zen) sums the inner dimension of A @ B in another
# order than that of (B @ A)^T: the forward's S = Q K^T and the backward's
# S^T = K Q^T then differ by up to ~1000 at |S| ~ 1e9, and exp2(S - lse)
# overflows. A GPU sums each element over the head dimension in the same order
# in every kernel. Under INTERPRET the products run in fp64 (exact for fp16 and
# bf16 operands, near-exact sums) and round once to fp32, so the result no
# longer depends on the operand order nor on the host CPU. bf16 operands skip
# the cast of P / dS to bf16 (the interpreter's fp32 -> bf16 cast truncates).


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, INTERPRET: tl.constexpr):
    """``a @ b`` accumulated in fp32, ``a`` (fp32 P or dS) cast to ``b``'s dtype first."""
    if INTERPRET:
        if b.dtype == tl.bfloat16:
            a = a.to(tl.float32)
        else:
            a = a.to(b.dtype)
        return tl.dot(a.to(tl.float64), b.to(tl.float32).to(tl.float64), out_dtype=tl.float64).to(tl.float32)
    return tl.dot(a.to(b.dtype), b, input_precision=PRECISION)


@triton.jit
def _dot_acc(acc, a, b, PRECISION: tl.constexpr, INTERPRET: tl.constexpr):
    """``acc + a @ b``, accumulating into ``acc`` on the GPU (one fp32 sum over the head dimension)."""
    if INTERPRET:
        return acc + _dot(a, b, PRECISION, INTERPRET)
    return tl.dot(a.to(b.dtype), b, acc, input_precision=PRECISION)


@triton.jit
def _cast(x, dtype: tl.constexpr, INTERPRET: tl.constexpr):
    """fp32 ``x`` to the output dtype, rounding bf16 to nearest even in the interpreter too."""
    if INTERPRET and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _tile_ptrs(ptr, rows, s_r, cols, s_c):
    return ptr + rows[:, None] * s_r + cols[None, :] * s_c


@triton.jit
def _load(ptr, rows, s_r, cols, s_c, mask_r, mask_c, MASK_R: tl.constexpr, MASK_C: tl.constexpr):
    """A 2-D tile, zero where masked; only the sides flagged MASK_* carry a mask."""
    ptrs = _tile_ptrs(ptr, rows, s_r, cols, s_c)
    if MASK_R:
        if MASK_C:
            x = tl.load(ptrs, mask=mask_r[:, None] & mask_c[None, :], other=0.0)
        else:
            x = tl.load(ptrs, mask=mask_r[:, None], other=0.0)
    else:
        if MASK_C:
            x = tl.load(ptrs, mask=mask_c[None, :], other=0.0)
        else:
            x = tl.load(ptrs)
    return x


@triton.jit
def _store(ptr, rows, s_r, cols, s_c, x, mask_r, mask_c, MASK_C: tl.constexpr):
    if MASK_C:
        tl.store(_tile_ptrs(ptr, rows, s_r, cols, s_c), x, mask=mask_r[:, None] & mask_c[None, :])
    else:
        tl.store(_tile_ptrs(ptr, rows, s_r, cols, s_c), x, mask=mask_r[:, None])


# Head dimension in one or two power-of-two tiles (see attention_support.head_tiles): columns
# [0, BLOCK_D) and [BLOCK_D, BLOCK_D + BLOCK_D2), BLOCK_D2 = 0 for one tile.
# Products over the head dimension sum the first tile, then the second, into
# one fp32 accumulator, in every kernel alike.
