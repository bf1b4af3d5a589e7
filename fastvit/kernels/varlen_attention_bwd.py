"""Variable-length attention backward in three kernels, without atomics (bitwise reproducible).

1. ``delta = rowsum(dO * O)`` over every packed row ((H, T) fp32);
2. dK and dV: one program per key block of one sequence, looping over that sequence's query blocks;
3. dQ: one program per query block of one sequence, looping over that sequence's key blocks.

Each rebuilds P = exp(S - lse) from the forward's row log-sum-exp, within one sequence:
like the forward, a program reads its sequence's bounds from ``cu_seqlens`` and returns at
once when its block lies past the sequence's end. The launchers, the registered ops and the
forward are in :mod:`fastvit.kernels.varlen_attention_op`, the only module that imports this one.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastvit.kernels._attention_tiles import (
    LOG2E, cast as _cast, dot as _dot, dot_acc as _dot_acc, load as _load, store as _store,
)  # fmt: skip
from fastvit.kernels.tuning import autotune_configs, autotune_do_bench

# The autotuner's key: the head dim and the longest sequence rounded up to a power of two.
TUNE_KEY = ["seq_bucket", "HEAD_DIM"]
# Launch configurations per architecture (see fastvit.kernels.tuning): dK/dV owns BLOCK_N key
# rows and streams BLOCK_M queries; dQ owns BLOCK_M query rows and streams BLOCK_N keys. Every
# entry compiles without spills at head dims 64 and 72 where it is listed, and the "default" one on
# sm_80 (fastvit.aot.varlen_attention): on sm_80 the backward pads 72 to one 128-wide tile, which
# leaves fewer spill-free tiles than the dense kernels' tables hold.
DKDV_CONFIGS = {
    "sm90": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)],  # 32x128 spills at 72 (32 B)
    "sm80": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)],
    "default": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)],
}
DQ_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2),
    ],
    "sm80": [dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=2)],  # 64x64 (8 warps) spills at 72 (88 B)
    "default": [dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=2)],  # on sm_90 it would spill at 72 (56 B)
}
# The delta kernel is a row reduction with no product to tune (32 rows: 64 spill at head dim 72 on
# sm_80 with Triton 3.6, whose loads of the unaligned rows take more registers).
DELTA_CONFIG = dict(BLOCK_M=32, num_warps=4, num_stages=1)


@triton.jit
def sequence_block(CU_SEQLENS, max_seqlen, num_heads, BLOCK: tl.constexpr):
    """This program's ``(start, head, lo, n)``: the first row of its block within its sequence, its
    head (int64), the sequence's first packed row and its length. Programs run over
    cdiv(max_seqlen, BLOCK) blocks fastest, then heads, then sequences (the forward and both
    backward kernels alike)."""
    pid = tl.program_id(0)
    num = tl.cdiv(max_seqlen, BLOCK)
    sh = pid // num
    seq = sh // num_heads
    lo = tl.load(CU_SEQLENS + seq)
    return (pid % num) * BLOCK, (sh % num_heads).to(tl.int64), lo, tl.load(CU_SEQLENS + seq + 1) - lo


@triton.jit
def _varlen_attention_bwd_delta_kernel(
    O, DO, DELTA,
    so_t, so_h, so_d,
    sdo_t, sdo_h, sdo_d,
    num_heads, total,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """DELTA[h, t] = sum_d dO * O in fp32, one program per (row block, head), rows blocks fastest.
    Row-wise, so sequences need no bounds here: every packed row is one query of its own sequence."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(total, BLOCK_M)
    h = (pid // num_m).to(tl.int64)
    offs_m = (pid % num_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < total
    mask = mask_m[:, None] & (offs_d < HEAD_DIM)[None, :]
    # int32 row offsets (the launcher checks they fit): an int64 base here costs Triton 3.6 stack at 72
    o = tl.load(O + h * so_h + offs_m[:, None] * so_t + offs_d[None, :] * so_d, mask=mask, other=0.0)
    do = tl.load(DO + h * sdo_h + offs_m[:, None] * sdo_t + offs_d[None, :] * sdo_d, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + h * total + offs_m, delta, mask=mask_m)


@triton.autotune(configs=autotune_configs(DKDV_CONFIGS), key=TUNE_KEY, do_bench=autotune_do_bench())
@triton.jit
def _varlen_attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, CU_SEQLENS,
    sq_t, sq_h, sq_d,
    sk_t, sk_h, sk_d,
    sv_t, sv_h, sv_d,
    sdo_t, sdo_h, sdo_d,
    sdk_t, sdk_h, sdk_d,
    sdv_t, sdv_h, sdv_d,
    scale, qk_scale, num_heads, total, max_seqlen, seq_bucket,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr, PRECISION: tl.constexpr,
    INTERPRET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per (key block, sequence x head), looping over that sequence's query blocks:
    dV = P^T dO and dK = scale * dS^T Q on transposed (keys x queries) tiles."""
    start_n, h, lo, n = sequence_block(CU_SEQLENS, max_seqlen, num_heads, BLOCK_N)
    if start_n >= n:
        return
    lo = lo.to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_d2 = BLOCK_D + tl.arange(0, max(BLOCK_D2, 16))
    mask_n = offs_n < n
    mask_d = offs_d < HEAD_DIM
    mask_d2 = offs_d2 < HEAD_DIM
    MASK_D: tl.constexpr = HEAD_DIM < BLOCK_D
    MASK_D2: tl.constexpr = HEAD_DIM < BLOCK_D + BLOCK_D2
    Q += lo * sq_t + h * sq_h
    K += lo * sk_t + h * sk_h
    V += lo * sv_t + h * sv_h
    DO += lo * sdo_t + h * sdo_h
    DK += lo * sdk_t + h * sdk_h
    DV += lo * sdv_t + h * sdv_h
    LSE += h * total + lo
    DELTA += h * total + lo

    k = _load(K, offs_n, sk_t, offs_d, sk_d, mask_n, mask_d, True, MASK_D)
    v = _load(V, offs_n, sv_t, offs_d, sv_d, mask_n, mask_d, True, MASK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    k2, v2, dk2, dv2 = k, v, dk, dv
    if BLOCK_D2 > 0:
        k2 = _load(K, offs_n, sk_t, offs_d2, sk_d, mask_n, mask_d2, True, MASK_D2)
        v2 = _load(V, offs_n, sv_t, offs_d2, sv_d, mask_n, mask_d2, True, MASK_D2)
        dk2 = tl.zeros([BLOCK_N, BLOCK_D2], tl.float32)
        dv2 = tl.zeros([BLOCK_N, BLOCK_D2], tl.float32)
    for start_m in range(0, n, BLOCK_M):
        rows = start_m + offs_m
        mask_m = rows < n
        qt = _load(Q, offs_d, sq_d, rows, sq_t, mask_d, mask_m, MASK_D, True)
        do = _load(DO, rows, sdo_t, offs_d, sdo_d, mask_m, mask_d, True, MASK_D)
        lse2 = tl.load(LSE + rows, mask=mask_m, other=0.0) * LOG2E
        delta = tl.load(DELTA + rows, mask=mask_m, other=0.0)
        st = _dot(k, qt, PRECISION, INTERPRET)
        dpt = _dot(v, tl.trans(do), PRECISION, INTERPRET)
        if BLOCK_D2 > 0:
            qt2 = _load(Q, offs_d2, sq_d, rows, sq_t, mask_d2, mask_m, MASK_D2, True)
            do2 = _load(DO, rows, sdo_t, offs_d2, sdo_d, mask_m, mask_d2, True, MASK_D2)
            st = _dot_acc(st, k2, qt2, PRECISION, INTERPRET)
            dpt = _dot_acc(dpt, v2, tl.trans(do2), PRECISION, INTERPRET)
        pt = tl.where(mask_m[None, :], tl.exp2(st * qk_scale - lse2[None, :]), 0.0)
        dst = pt * (dpt - delta[None, :])
        dv = _dot_acc(dv, pt, do, PRECISION, INTERPRET)
        dk = _dot_acc(dk, dst, tl.trans(qt), PRECISION, INTERPRET)
        if BLOCK_D2 > 0:
            dv2 = _dot_acc(dv2, pt, do2, PRECISION, INTERPRET)
            dk2 = _dot_acc(dk2, dst, tl.trans(qt2), PRECISION, INTERPRET)

    _store(DK, offs_n, sdk_t, offs_d, sdk_d, _cast(dk * scale, DK.dtype.element_ty, INTERPRET), mask_n, mask_d, MASK_D)
    _store(DV, offs_n, sdv_t, offs_d, sdv_d, _cast(dv, DV.dtype.element_ty, INTERPRET), mask_n, mask_d, MASK_D)
    if BLOCK_D2 > 0:
        _store(DK, offs_n, sdk_t, offs_d2, sdk_d, _cast(dk2 * scale, DK.dtype.element_ty, INTERPRET), mask_n,
               mask_d2, MASK_D2)  # fmt: skip
        _store(DV, offs_n, sdv_t, offs_d2, sdv_d, _cast(dv2, DV.dtype.element_ty, INTERPRET), mask_n, mask_d2,
               MASK_D2)  # fmt: skip


@triton.autotune(configs=autotune_configs(DQ_CONFIGS), key=TUNE_KEY, do_bench=autotune_do_bench())
@triton.jit
def _varlen_attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, CU_SEQLENS,
    sq_t, sq_h, sq_d,
    sk_t, sk_h, sk_d,
    sv_t, sv_h, sv_d,
    sdo_t, sdo_h, sdo_d,
    sdq_t, sdq_h, sdq_d,
    scale, qk_scale, num_heads, total, max_seqlen, seq_bucket,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr, PRECISION: tl.constexpr,
    INTERPRET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per (query block, sequence x head), looping over that sequence's key blocks:
    dQ = scale * dS K with dS = P * (dO V^T - DELTA)."""
    start_m, h, lo, n = sequence_block(CU_SEQLENS, max_seqlen, num_heads, BLOCK_M)
    if start_m >= n:
        return
    lo = lo.to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_d2 = BLOCK_D + tl.arange(0, max(BLOCK_D2, 16))
    mask_m = offs_m < n
    mask_d = offs_d < HEAD_DIM
    mask_d2 = offs_d2 < HEAD_DIM
    MASK_D: tl.constexpr = HEAD_DIM < BLOCK_D
    MASK_D2: tl.constexpr = HEAD_DIM < BLOCK_D + BLOCK_D2
    Q += lo * sq_t + h * sq_h
    K += lo * sk_t + h * sk_h
    V += lo * sv_t + h * sv_h
    DO += lo * sdo_t + h * sdo_h
    DQ += lo * sdq_t + h * sdq_h
    LSE += h * total + lo
    DELTA += h * total + lo

    q = _load(Q, offs_m, sq_t, offs_d, sq_d, mask_m, mask_d, True, MASK_D)
    do = _load(DO, offs_m, sdo_t, offs_d, sdo_d, mask_m, mask_d, True, MASK_D)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    q2, do2, dq2 = q, do, dq
    if BLOCK_D2 > 0:
        q2 = _load(Q, offs_m, sq_t, offs_d2, sq_d, mask_m, mask_d2, True, MASK_D2)
        do2 = _load(DO, offs_m, sdo_t, offs_d2, sdo_d, mask_m, mask_d2, True, MASK_D2)
        dq2 = tl.zeros([BLOCK_M, BLOCK_D2], tl.float32)
    lse2 = tl.load(LSE + offs_m, mask=mask_m, other=0.0) * LOG2E
    delta = tl.load(DELTA + offs_m, mask=mask_m, other=0.0)
    for start_n in range(0, n, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < n
        kt = _load(K, offs_d, sk_d, cols, sk_t, mask_d, mask_n, MASK_D, True)
        vt = _load(V, offs_d, sv_d, cols, sv_t, mask_d, mask_n, MASK_D, True)
        s = _dot(q, kt, PRECISION, INTERPRET)
        dp = _dot(do, vt, PRECISION, INTERPRET)
        if BLOCK_D2 > 0:
            kt2 = _load(K, offs_d2, sk_d, cols, sk_t, mask_d2, mask_n, MASK_D2, True)
            vt2 = _load(V, offs_d2, sv_d, cols, sv_t, mask_d2, mask_n, MASK_D2, True)
            s = _dot_acc(s, q2, kt2, PRECISION, INTERPRET)
            dp = _dot_acc(dp, do2, vt2, PRECISION, INTERPRET)
        p = tl.where(mask_n[None, :], tl.exp2(s * qk_scale - lse2[:, None]), 0.0)
        ds = p * (dp - delta[:, None])
        dq = _dot_acc(dq, ds, tl.trans(kt), PRECISION, INTERPRET)
        if BLOCK_D2 > 0:
            dq2 = _dot_acc(dq2, ds, tl.trans(kt2), PRECISION, INTERPRET)

    _store(DQ, offs_m, sdq_t, offs_d, sdq_d, _cast(dq * scale, DQ.dtype.element_ty, INTERPRET), mask_m, mask_d, MASK_D)
    if BLOCK_D2 > 0:
        _store(DQ, offs_m, sdq_t, offs_d2, sdq_d, _cast(dq2 * scale, DQ.dtype.element_ty, INTERPRET), mask_m,
               mask_d2, MASK_D2)  # fmt: skip


KERNELS = {"bwd_delta": _varlen_attention_bwd_delta_kernel, "bwd_dkdv": _varlen_attention_bwd_dkdv_kernel,
           "bwd_dq": _varlen_attention_bwd_dq_kernel}  # fmt: skip
