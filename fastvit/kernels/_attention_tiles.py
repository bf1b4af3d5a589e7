"""Tiles shared by the attention kernels: how a head dim is cut into tiles, products, casts,
masked loads and stores.

Private to the kernel layer, imports no op file. Used by :mod:`fastvit.kernels.flash_attention`
(forward), :mod:`~fastvit.kernels.flash_attention_bwd`, :mod:`~fastvit.kernels.attention_spills`
and the compile cases; each ``@triton.jit`` function here is inlined into the kernel that calls it.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastvit.kernels.ops import MAX_HEAD_DIM

TUNE_KEY = ["n_q", "n_kv", "HEAD_DIM"]
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


def supports_head_dim(head_dim) -> bool:
    """Any head dim from 1 to MAX_HEAD_DIM: tiles are masked (see :func:`head_tiles`)."""
    return isinstance(head_dim, int) and not isinstance(head_dim, bool) and 1 <= head_dim <= MAX_HEAD_DIM


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def head_tiles(head_dim: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_D2): the head dim as one power-of-two tile, or as two when
    that pads less (tl.dot needs every side >= 16): 80 -> 64 + 16, 72 -> 64 + 16
    (8 masked), 96 -> 64 + 32, 48 -> 32 + 16; 112 stays one 128-wide tile, as
    64 + 64 pads no less. BLOCK_D2 = 0 means one tile."""
    if not supports_head_dim(head_dim):
        raise ValueError(f"attention: expected head_dim between 1 and {MAX_HEAD_DIM}, got {head_dim!r}")
    whole = max(16, _next_power_of_2(head_dim))
    if head_dim <= 16 or head_dim == whole:
        return whole, 0
    first = whole // 2
    second = max(16, _next_power_of_2(head_dim - first))
    return (first, second) if first + second < whole else (whole, 0)


def backward_head_tiles(head_dim: int, arch: str) -> tuple[int, int]:
    """The backward kernels' tiles on ``arch`` (a fastvit.kernels.tuning table key).

    Split as :func:`head_tiles` on sm_90, where it saves shared memory and
    registers; one padded power-of-two tile on sm_80 and elsewhere, where the
    split dK/dV and dQ kernels spill (Triton 3.9: up to 4.5 KB at head dim 80)
    and the padded ones do not. Both sum the head dimension in the same
    16-wide chunks in the same order (padding adds exact zeros), so the
    backward's scores still match the forward's log-sum-exp.
    """
    first, second = head_tiles(head_dim)
    if arch == "sm90" or second == 0:
        return first, second
    return max(16, _next_power_of_2(head_dim)), 0


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
def dot(a, b, PRECISION: tl.constexpr, INTERPRET: tl.constexpr):
    """``a @ b`` accumulated in fp32, ``a`` (fp32 P or dS) cast to ``b``'s dtype first."""
    if INTERPRET:
        if b.dtype == tl.bfloat16:
            a = a.to(tl.float32)
        else:
            a = a.to(b.dtype)
        return tl.dot(a.to(tl.float64), b.to(tl.float32).to(tl.float64), out_dtype=tl.float64).to(tl.float32)
    return tl.dot(a.to(b.dtype), b, input_precision=PRECISION)


@triton.jit
def dot_acc(acc, a, b, PRECISION: tl.constexpr, INTERPRET: tl.constexpr):
    """``acc + a @ b``, accumulating into ``acc`` on the GPU (one fp32 sum over the head dimension)."""
    if INTERPRET:
        return acc + dot(a, b, PRECISION, INTERPRET)
    return tl.dot(a.to(b.dtype), b, acc, input_precision=PRECISION)


@triton.jit
def cast(x, dtype: tl.constexpr, INTERPRET: tl.constexpr):
    """fp32 ``x`` to the output dtype, rounding bf16 to nearest even in the interpreter too."""
    if INTERPRET and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def tile_ptrs(ptr, rows, s_r, cols, s_c):
    return ptr + rows[:, None] * s_r + cols[None, :] * s_c


@triton.jit
def load(ptr, rows, s_r, cols, s_c, mask_r, mask_c, MASK_R: tl.constexpr, MASK_C: tl.constexpr):
    """A 2-D tile, zero where masked; only the sides flagged MASK_* carry a mask."""
    ptrs = tile_ptrs(ptr, rows, s_r, cols, s_c)
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
def store(ptr, rows, s_r, cols, s_c, x, mask_r, mask_c, MASK_C: tl.constexpr):
    if MASK_C:
        tl.store(tile_ptrs(ptr, rows, s_r, cols, s_c), x, mask=mask_r[:, None] & mask_c[None, :])
    else:
        tl.store(tile_ptrs(ptr, rows, s_r, cols, s_c), x, mask=mask_r[:, None])


# Head dimension in one or two power-of-two tiles (see attention_support.head_tiles): columns
# [0, BLOCK_D) and [BLOCK_D, BLOCK_D + BLOCK_D2), BLOCK_D2 = 0 for one tile.
# Products over the head dimension sum the first tile, then the second, into
# one fp32 accumulator, in every kernel alike.


@triton.jit
def fwd_block(
    acc, acc2, m_i, l_i, q, q2, K, V, cols, offs_d, offs_d2, sk_n, sk_d, sv_n, sv_d, n_kv, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr, PRECISION: tl.constexpr,
    INTERPRET: tl.constexpr, NEG_SCALE: tl.constexpr, MASK_N: tl.constexpr,
):  # fmt: skip
    """One key block of the online softmax (the dense and the varlen forward's). Scores stay
    unscaled: the scale (times log2 e) enters once, in the exp2 argument ``s * qk_scale - m``
    (one FMA). ``MASK_N``: the one partial key block, keys past ``n_kv`` scoring -inf."""
    mask_n = cols < n_kv
    mask_d = offs_d < HEAD_DIM
    mask_d2 = offs_d2 < HEAD_DIM
    kt = load(K, offs_d, sk_d, cols, sk_n, mask_d, mask_n, HEAD_DIM < BLOCK_D, MASK_N)
    v = load(V, cols, sv_n, offs_d, sv_d, mask_n, mask_d, MASK_N, HEAD_DIM < BLOCK_D)
    s = dot(q, kt, PRECISION, INTERPRET)
    if BLOCK_D2 > 0:
        kt2 = load(K, offs_d2, sk_d, cols, sk_n, mask_d2, mask_n, HEAD_DIM < BLOCK_D + BLOCK_D2, MASK_N)
        v2 = load(V, cols, sv_n, offs_d2, sv_d, mask_n, mask_d2, MASK_N, HEAD_DIM < BLOCK_D + BLOCK_D2)
        s = dot_acc(s, q2, kt2, PRECISION, INTERPRET)
    if MASK_N:  # the one partial block: scale first, so the -inf fill holds for any sign of the scale
        s = tl.where(mask_n[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
    else:
        if NEG_SCALE:
            m_new = tl.maximum(m_i, tl.min(s, 1) * qk_scale)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.exp2(s * qk_scale - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = dot_acc(acc * alpha[:, None], p, v, PRECISION, INTERPRET)
    if BLOCK_D2 > 0:
        acc2 = dot_acc(acc2 * alpha[:, None], p, v2, PRECISION, INTERPRET)
    return acc, acc2, m_new, l_i
