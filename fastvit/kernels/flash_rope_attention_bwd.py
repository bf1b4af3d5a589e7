"""Fused rotary attention backward: the dK/dV and dQ kernels, without atomics.

As the plain attention backward (:mod:`fastvit.kernels.flash_attention_bwd`, whose
``delta = rowsum(dO * O)`` kernel this op launches too), each kernel rebuilds P = exp(S - lse)
from the forward's row log-sum-exp, S from q and k rotated as their tiles are loaded
(:mod:`fastvit.kernels._rope_tiles`). dQ and dK accumulate the gradients of the rotated
q and k in fp32, half tile by half tile, and are turned back by the inverse rotation as they are
stored: no rotated q or k, nor their gradients, is ever written to memory. The launchers and
the registered ops are in :mod:`fastvit.kernels.flash_rope_attention`, the only module importing this one.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastvit.kernels._attention_tiles import (
    LOG2E, cast as _cast, dot as _dot, dot_acc as _dot_acc, load as _load, store as _store,
)  # fmt: skip
from fastvit.kernels._rope_tiles import load_rotated, pair_columns, store_unrotated
from fastvit.kernels.tuning import autotune_configs

TUNE_KEY = ["n", "HEAD_DIM", "ROTATE_HALF"]
# dK/dV owns BLOCK_N key rows and streams BLOCK_M queries; dQ owns BLOCK_M query rows and streams
# BLOCK_N keys. The interpreter (tests) runs the first "default" entry only. None spills at head
# dim 64 (the compile check, fastvit.aot.rope_attention, fails any that does). On sm_80 the dK/dV
# kernel streams 16 query rows: there the rotated query tiles, their fp32 halves and tables sit
# beside the mma operands in registers, and 64-row streamed tiles, or 32-row ones, spill (56-464 B;
# 32 rows with 4 warps and 3 stages compile clean under Triton 3.9 but spill under 3.6).
DKDV_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2),
        dict(BLOCK_M=32, BLOCK_N=128, num_warps=8, num_stages=2),
        dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    "sm80": [
        dict(BLOCK_M=16, BLOCK_N=128, num_warps=8, num_stages=2),
        dict(BLOCK_M=16, BLOCK_N=64, num_warps=4, num_stages=2),
    ],
    "default": [dict(BLOCK_M=16, BLOCK_N=64, num_warps=4, num_stages=2)],
}
DQ_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    "sm80": [
        dict(BLOCK_M=128, BLOCK_N=32, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=3),
    ],
    "default": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)],
}


@triton.autotune(configs=autotune_configs(DKDV_CONFIGS), key=TUNE_KEY)
@triton.jit
def _rope_attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, T,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sv_b, sv_h, sv_n, sv_d,
    sdo_b, sdo_h, sdo_n, sdo_d,
    sdk_b, sdk_h, sdk_n, sdk_d,
    sdv_b, sdv_h, sdv_n, sdv_d,
    st_h, st_n, scale, qk_scale, num_heads, n, num_prefix,
    HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, ROTATE_HALF: tl.constexpr,
    PRECISION: tl.constexpr, INTERPRET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per (key block, batch x head), looping over all query blocks: dV = P^T dO and
    dK = R^T (scale * dS^T Q'), Q' the rotated queries, R the keys' rotation."""
    pid = tl.program_id(0)
    num_n = tl.cdiv(n, BLOCK_N)
    bh = pid // num_n
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_n = (pid % num_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    HALF_DIM: tl.constexpr = HEAD_DIM // 2
    col_a, col_b = pair_columns(offs_h, HALF_DIM, ROTATE_HALF)
    mask_h = offs_h < HALF_DIM
    mask_d = offs_d < HEAD_DIM
    MASK_D: tl.constexpr = HEAD_DIM < BLOCK_D
    mask_n = offs_n < n
    rot_n = mask_n & (offs_n >= num_prefix)
    Q += b * sq_b + h * sq_h
    K += b * sk_b + h * sk_h
    V += b * sv_b + h * sv_h
    DO += b * sdo_b + h * sdo_h
    DK += b * sdk_b + h * sdk_h
    DV += b * sdv_b + h * sdv_h
    T += h * st_h * 2  # (rows, pairs, 2) per head; st_h, st_n count pairs
    LSE += bh.to(tl.int64) * n
    DELTA += bh.to(tl.int64) * n

    # the owned keys, rotated: (BLOCK_N, BLOCK_H) half tiles
    tile_k = mask_n[:, None] & mask_h[None, :]
    off_tk = (offs_n - num_prefix)[:, None] * st_n + offs_h[None, :]
    tab_k = rot_n[:, None] & mask_h[None, :]
    ka, kb = load_rotated(K, offs_n[:, None] * sk_n + col_a[None, :] * sk_d, offs_n[:, None] * sk_n + col_b[None, :] * sk_d,
                          tile_k, T, off_tk, tab_k, INTERPRET)  # fmt: skip
    v = _load(V, offs_n, sv_n, offs_d, sv_d, mask_n, mask_d, True, MASK_D)
    dka = tl.zeros([BLOCK_N, BLOCK_H], tl.float32)
    dkb = tl.zeros([BLOCK_N, BLOCK_H], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start_m in range(0, n, BLOCK_M):
        rows = start_m + offs_m
        mask_m = rows < n
        rot_m = mask_m & (rows >= num_prefix)
        # the streamed queries, rotated and transposed: (BLOCK_H, BLOCK_M)
        qat, qbt = load_rotated(
            Q, col_a[:, None] * sq_d + rows[None, :] * sq_n, col_b[:, None] * sq_d + rows[None, :] * sq_n,
            mask_h[:, None] & mask_m[None, :], T, offs_h[:, None] + (rows - num_prefix)[None, :] * st_n,
            mask_h[:, None] & rot_m[None, :], INTERPRET,
        )  # fmt: skip
        do = _load(DO, rows, sdo_n, offs_d, sdo_d, mask_m, mask_d, True, MASK_D)
        lse2 = tl.load(LSE + rows, mask=mask_m, other=0.0) * LOG2E
        delta = tl.load(DELTA + rows, mask=mask_m, other=0.0)
        st = _dot_acc(_dot(ka, qat, PRECISION, INTERPRET), kb, qbt, PRECISION, INTERPRET)
        dpt = _dot(v, tl.trans(do), PRECISION, INTERPRET)
        pt = tl.where(mask_m[None, :], tl.exp2(st * qk_scale - lse2[None, :]), 0.0)
        dst = pt * (dpt - delta[None, :])
        dv = _dot_acc(dv, pt, do, PRECISION, INTERPRET)
        dka = _dot_acc(dka, dst, tl.trans(qat), PRECISION, INTERPRET)
        dkb = _dot_acc(dkb, dst, tl.trans(qbt), PRECISION, INTERPRET)

    _store(DV, offs_n, sdv_n, offs_d, sdv_d, _cast(dv, DV.dtype.element_ty, INTERPRET), mask_n, mask_d, MASK_D)
    store_unrotated(DK, offs_n[:, None] * sdk_n + col_a[None, :] * sdk_d, offs_n[:, None] * sdk_n + col_b[None, :] * sdk_d,
                    tile_k, dka * scale, dkb * scale, T, off_tk, tab_k, INTERPRET)  # fmt: skip


@triton.autotune(configs=autotune_configs(DQ_CONFIGS), key=TUNE_KEY)
@triton.jit
def _rope_attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, T,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sv_b, sv_h, sv_n, sv_d,
    sdo_b, sdo_h, sdo_n, sdo_d,
    sdq_b, sdq_h, sdq_n, sdq_d,
    st_h, st_n, scale, qk_scale, num_heads, n, num_prefix,
    HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, ROTATE_HALF: tl.constexpr,
    PRECISION: tl.constexpr, INTERPRET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per (query block, batch x head), looping over all key blocks:
    dQ = R^T (scale * dS K'), K' the rotated keys, dS = P * (dO V^T - DELTA)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(n, BLOCK_M)
    bh = pid // num_m
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_m = (pid % num_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    HALF_DIM: tl.constexpr = HEAD_DIM // 2
    col_a, col_b = pair_columns(offs_h, HALF_DIM, ROTATE_HALF)
    mask_h = offs_h < HALF_DIM
    mask_d = offs_d < HEAD_DIM
    MASK_D: tl.constexpr = HEAD_DIM < BLOCK_D
    mask_m = offs_m < n
    rot_m = mask_m & (offs_m >= num_prefix)
    Q += b * sq_b + h * sq_h
    K += b * sk_b + h * sk_h
    V += b * sv_b + h * sv_h
    DO += b * sdo_b + h * sdo_h
    DQ += b * sdq_b + h * sdq_h
    T += h * st_h * 2  # (rows, pairs, 2) per head; st_h, st_n count pairs
    LSE += bh.to(tl.int64) * n
    DELTA += bh.to(tl.int64) * n

    tile_q = mask_m[:, None] & mask_h[None, :]
    off_tq = (offs_m - num_prefix)[:, None] * st_n + offs_h[None, :]
    tab_q = rot_m[:, None] & mask_h[None, :]
    qa, qb = load_rotated(Q, offs_m[:, None] * sq_n + col_a[None, :] * sq_d, offs_m[:, None] * sq_n + col_b[None, :] * sq_d,
                          tile_q, T, off_tq, tab_q, INTERPRET)  # fmt: skip
    do = _load(DO, offs_m, sdo_n, offs_d, sdo_d, mask_m, mask_d, True, MASK_D)
    dqa = tl.zeros([BLOCK_M, BLOCK_H], tl.float32)
    dqb = tl.zeros([BLOCK_M, BLOCK_H], tl.float32)
    lse2 = tl.load(LSE + offs_m, mask=mask_m, other=0.0) * LOG2E
    delta = tl.load(DELTA + offs_m, mask=mask_m, other=0.0)
    for start_n in range(0, n, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < n
        rot_n = mask_n & (cols >= num_prefix)
        # the streamed keys, rotated and transposed: (BLOCK_H, BLOCK_N)
        kat, kbt = load_rotated(
            K, col_a[:, None] * sk_d + cols[None, :] * sk_n, col_b[:, None] * sk_d + cols[None, :] * sk_n,
            mask_h[:, None] & mask_n[None, :], T, offs_h[:, None] + (cols - num_prefix)[None, :] * st_n,
            mask_h[:, None] & rot_n[None, :], INTERPRET,
        )  # fmt: skip
        vt = _load(V, offs_d, sv_d, cols, sv_n, mask_d, mask_n, MASK_D, True)
        s = _dot_acc(_dot(qa, kat, PRECISION, INTERPRET), qb, kbt, PRECISION, INTERPRET)
        dp = _dot(do, vt, PRECISION, INTERPRET)
        p = tl.where(mask_n[None, :], tl.exp2(s * qk_scale - lse2[:, None]), 0.0)
        ds = p * (dp - delta[:, None])
        dqa = _dot_acc(dqa, ds, tl.trans(kat), PRECISION, INTERPRET)
        dqb = _dot_acc(dqb, ds, tl.trans(kbt), PRECISION, INTERPRET)

    store_unrotated(DQ, offs_m[:, None] * sdq_n + col_a[None, :] * sdq_d, offs_m[:, None] * sdq_n + col_b[None, :] * sdq_d,
                    tile_q, dqa * scale, dqb * scale, T, off_tq, tab_q, INTERPRET)  # fmt: skip


KERNELS = {"bwd_dkdv": _rope_attention_bwd_dkdv_kernel, "bwd_dq": _rope_attention_bwd_dq_kernel}
