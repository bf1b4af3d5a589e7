"""FlashAttention backward in three kernels, without atomics (bitwise reproducible).

1. ``delta = rowsum(dO * O)``, the softmax-Jacobian term of every query row;
2. dK and dV: one program per key block, looping over the query blocks;
3. dQ: one program per query block, looping over the key blocks.

Each recomputes P = exp(S - lse) from the forward's row log-sum-exp. The launchers, the
registered ops and the forward are in :mod:`fastvit.kernels.flash_attention`, the only module
that imports this one (others read its kernels as ``flash_attention.KERNELS``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastvit.kernels._attention_tiles import (
    LOG2E, TUNE_KEY as _TUNE_KEY, cast as _cast, dot as _dot, dot_acc as _dot_acc, load as _load, store as _store,
)  # fmt: skip
from fastvit.kernels.attention_spills import early_prune
from fastvit.kernels.tuning import autotune_configs, autotune_do_bench

# Launch configurations per architecture (see fastvit.kernels.tuning and the forward's table in
# fastvit.kernels.flash_attention): dK/dV owns BLOCK_N key rows and streams BLOCK_M queries;
# dQ owns BLOCK_M query rows and streams BLOCK_N keys.
DKDV_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=32, BLOCK_N=128, num_warps=8, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2),
        dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    # Wider key blocks: each program reads all of Q and dO once, so N / BLOCK_N programs per head
    # stream Q and dO N / BLOCK_N times; 128-key blocks halve that traffic (and the LSE/delta
    # reloads) against 64 and give each mma more rows. 64x128 and 32x128 compile without spills at
    # head dim 64 only (ViT-S/B/L); at 72, 80 and 128 their 128-wide padded dK/dV accumulators
    # spill and fastvit.kernels.attention_spills prunes them there (at 80, 32x128 would fit only with
    # the split 64 + 16 head tiles and one stage, which the padded sm_80 tiling does not use).
    # Whether they beat 64x64 (fewer programs, less occupancy) only a GPU run can tell: the
    # autotuner ranks them on the device.
    "sm80": [
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=128, num_warps=8, num_stages=2),
        dict(BLOCK_M=32, BLOCK_N=128, num_warps=8, num_stages=2),
        dict(BLOCK_M=16, BLOCK_N=128, num_warps=8, num_stages=2),
        dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    "default": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)],
}
DQ_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2),
        dict(BLOCK_M=128, BLOCK_N=32, num_warps=8, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    # 32x64 (4 warps) spills at none of the checked head dims on sm_80 (226 registers at 72 and 80):
    # at 72 the other three spill and are pruned, so it leaves the tuner a spill-free choice there.
    "sm80": [
        dict(BLOCK_M=128, BLOCK_N=32, num_warps=8, num_stages=2),
        dict(BLOCK_M=128, BLOCK_N=16, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=3),
        dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=2),
    ],
    # The interpreter's (tests') entry. With FASTVIT_AUTOTUNE=0 on a GPU the launch takes the first
    # entry of the GPU's table that is not recorded to spill (at head dim 72 on sm_80: 32x64).
    "default": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)],
}
# The delta kernel is a row reduction with no product to tune.
DELTA_CONFIG = dict(BLOCK_M=64, num_warps=4, num_stages=1)


@triton.jit
def _attention_bwd_delta_kernel(
    O, DO, DELTA,
    so_b, so_h, so_n, so_d,
    sdo_b, sdo_h, sdo_n, sdo_d,
    num_heads, n_q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """DELTA = rowsum(dO * O) in fp32, (B, H, N_q) contiguous: dS = P * (dP - DELTA)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(n_q, BLOCK_M)
    bh = pid // num_m
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_m = (pid % num_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < n_q
    mask = mask_m[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(O + b * so_b + h * so_h + offs_m[:, None] * so_n + offs_d[None, :] * so_d, mask=mask, other=0.0)
    do = tl.load(DO + b * sdo_b + h * sdo_h + offs_m[:, None] * sdo_n + offs_d[None, :] * sdo_d, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh.to(tl.int64) * n_q + offs_m, delta, mask=mask_m)


# Configurations measured to spill at the launch's head dim are pruned before benchmarking
# (see fastvit.kernels.attention_spills).
@triton.autotune(configs=autotune_configs(DKDV_CONFIGS, pruned=True), key=_TUNE_KEY, do_bench=autotune_do_bench(),
                 prune_configs_by={"early_config_prune": early_prune("attention_bwd_dkdv")})
@triton.jit
def _attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sv_b, sv_h, sv_n, sv_d,
    sdo_b, sdo_h, sdo_n, sdo_d,
    sdk_b, sdk_h, sdk_n, sdk_d,
    sdv_b, sdv_h, sdv_n, sdv_d,
    scale, qk_scale, num_heads, n_q, n_kv,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr, PRECISION: tl.constexpr,
    INTERPRET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per (key block, batch x head), looping over all query blocks:
    dV = P^T dO and dK = scale * dS^T Q, with P rebuilt from the saved LSE.
    Works on transposed tiles (keys x queries) so dK and dV stay in registers."""
    pid = tl.program_id(0)
    num_n = tl.cdiv(n_kv, BLOCK_N)
    bh = pid // num_n
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_n = (pid % num_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_d2 = BLOCK_D + tl.arange(0, max(BLOCK_D2, 16))
    mask_n = offs_n < n_kv
    mask_d = offs_d < HEAD_DIM
    mask_d2 = offs_d2 < HEAD_DIM
    MASK_D: tl.constexpr = HEAD_DIM < BLOCK_D
    MASK_D2: tl.constexpr = HEAD_DIM < BLOCK_D + BLOCK_D2
    Q += b * sq_b + h * sq_h
    K += b * sk_b + h * sk_h
    V += b * sv_b + h * sv_h
    DO += b * sdo_b + h * sdo_h
    DK += b * sdk_b + h * sdk_h
    DV += b * sdv_b + h * sdv_h
    LSE += bh.to(tl.int64) * n_q
    DELTA += bh.to(tl.int64) * n_q

    k = _load(K, offs_n, sk_n, offs_d, sk_d, mask_n, mask_d, True, MASK_D)
    v = _load(V, offs_n, sv_n, offs_d, sv_d, mask_n, mask_d, True, MASK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    k2, v2, dk2, dv2 = k, v, dk, dv
    if BLOCK_D2 > 0:
        k2 = _load(K, offs_n, sk_n, offs_d2, sk_d, mask_n, mask_d2, True, MASK_D2)
        v2 = _load(V, offs_n, sv_n, offs_d2, sv_d, mask_n, mask_d2, True, MASK_D2)
        dk2 = tl.zeros([BLOCK_N, BLOCK_D2], tl.float32)
        dv2 = tl.zeros([BLOCK_N, BLOCK_D2], tl.float32)
    for start_m in range(0, n_q, BLOCK_M):
        rows = start_m + offs_m
        mask_m = rows < n_q
        qt = _load(Q, offs_d, sq_d, rows, sq_n, mask_d, mask_m, MASK_D, True)
        do = _load(DO, rows, sdo_n, offs_d, sdo_d, mask_m, mask_d, True, MASK_D)
        lse2 = tl.load(LSE + rows, mask=mask_m, other=0.0) * LOG2E
        delta = tl.load(DELTA + rows, mask=mask_m, other=0.0)
        st = _dot(k, qt, PRECISION, INTERPRET)
        dpt = _dot(v, tl.trans(do), PRECISION, INTERPRET)
        if BLOCK_D2 > 0:
            qt2 = _load(Q, offs_d2, sq_d, rows, sq_n, mask_d2, mask_m, MASK_D2, True)
            do2 = _load(DO, rows, sdo_n, offs_d2, sdo_d, mask_m, mask_d2, True, MASK_D2)
            st = _dot_acc(st, k2, qt2, PRECISION, INTERPRET)
            dpt = _dot_acc(dpt, v2, tl.trans(do2), PRECISION, INTERPRET)
        pt = tl.where(mask_m[None, :], tl.exp2(st * qk_scale - lse2[None, :]), 0.0)
        dst = pt * (dpt - delta[None, :])
        dv = _dot_acc(dv, pt, do, PRECISION, INTERPRET)
        dk = _dot_acc(dk, dst, tl.trans(qt), PRECISION, INTERPRET)
        if BLOCK_D2 > 0:
            dv2 = _dot_acc(dv2, pt, do2, PRECISION, INTERPRET)
            dk2 = _dot_acc(dk2, dst, tl.trans(qt2), PRECISION, INTERPRET)

    _store(DK, offs_n, sdk_n, offs_d, sdk_d, _cast(dk * scale, DK.dtype.element_ty, INTERPRET), mask_n, mask_d, MASK_D)
    _store(DV, offs_n, sdv_n, offs_d, sdv_d, _cast(dv, DV.dtype.element_ty, INTERPRET), mask_n, mask_d, MASK_D)
    if BLOCK_D2 > 0:
        _store(DK, offs_n, sdk_n, offs_d2, sdk_d, _cast(dk2 * scale, DK.dtype.element_ty, INTERPRET), mask_n,
               mask_d2, MASK_D2)  # fmt: skip
        _store(DV, offs_n, sdv_n, offs_d2, sdv_d, _cast(dv2, DV.dtype.element_ty, INTERPRET), mask_n, mask_d2,
               MASK_D2)  # fmt: skip


@triton.autotune(configs=autotune_configs(DQ_CONFIGS, pruned=True), key=_TUNE_KEY, do_bench=autotune_do_bench(),
                 prune_configs_by={"early_config_prune": early_prune("attention_bwd_dq")})
@triton.jit
def _attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sv_b, sv_h, sv_n, sv_d,
    sdo_b, sdo_h, sdo_n, sdo_d,
    sdq_b, sdq_h, sdq_n, sdq_d,
    scale, qk_scale, num_heads, n_q, n_kv,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr, PRECISION: tl.constexpr,
    INTERPRET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per (query block, batch x head), looping over all key blocks:
    dQ = scale * dS K with dS = P * (dO V^T - DELTA), P rebuilt from the saved LSE."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(n_q, BLOCK_M)
    bh = pid // num_m
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_m = (pid % num_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_d2 = BLOCK_D + tl.arange(0, max(BLOCK_D2, 16))
    mask_m = offs_m < n_q
    mask_d = offs_d < HEAD_DIM
    mask_d2 = offs_d2 < HEAD_DIM
    MASK_D: tl.constexpr = HEAD_DIM < BLOCK_D
    MASK_D2: tl.constexpr = HEAD_DIM < BLOCK_D + BLOCK_D2
    Q += b * sq_b + h * sq_h
    K += b * sk_b + h * sk_h
    V += b * sv_b + h * sv_h
    DO += b * sdo_b + h * sdo_h
    DQ += b * sdq_b + h * sdq_h
    LSE += bh.to(tl.int64) * n_q
    DELTA += bh.to(tl.int64) * n_q

    q = _load(Q, offs_m, sq_n, offs_d, sq_d, mask_m, mask_d, True, MASK_D)
    do = _load(DO, offs_m, sdo_n, offs_d, sdo_d, mask_m, mask_d, True, MASK_D)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    q2, do2, dq2 = q, do, dq
    if BLOCK_D2 > 0:
        q2 = _load(Q, offs_m, sq_n, offs_d2, sq_d, mask_m, mask_d2, True, MASK_D2)
        do2 = _load(DO, offs_m, sdo_n, offs_d2, sdo_d, mask_m, mask_d2, True, MASK_D2)
        dq2 = tl.zeros([BLOCK_M, BLOCK_D2], tl.float32)
    lse2 = tl.load(LSE + offs_m, mask=mask_m, other=0.0) * LOG2E
    delta = tl.load(DELTA + offs_m, mask=mask_m, other=0.0)
    for start_n in range(0, n_kv, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < n_kv
        kt = _load(K, offs_d, sk_d, cols, sk_n, mask_d, mask_n, MASK_D, True)
        vt = _load(V, offs_d, sv_d, cols, sv_n, mask_d, mask_n, MASK_D, True)
        s = _dot(q, kt, PRECISION, INTERPRET)
        dp = _dot(do, vt, PRECISION, INTERPRET)
        if BLOCK_D2 > 0:
            kt2 = _load(K, offs_d2, sk_d, cols, sk_n, mask_d2, mask_n, MASK_D2, True)
            vt2 = _load(V, offs_d2, sv_d, cols, sv_n, mask_d2, mask_n, MASK_D2, True)
            s = _dot_acc(s, q2, kt2, PRECISION, INTERPRET)
            dp = _dot_acc(dp, do2, vt2, PRECISION, INTERPRET)
        p = tl.where(mask_n[None, :], tl.exp2(s * qk_scale - lse2[:, None]), 0.0)
        ds = p * (dp - delta[:, None])
        dq = _dot_acc(dq, ds, tl.trans(kt), PRECISION, INTERPRET)
        if BLOCK_D2 > 0:
            dq2 = _dot_acc(dq2, ds, tl.trans(kt2), PRECISION, INTERPRET)

    _store(DQ, offs_m, sdq_n, offs_d, sdq_d, _cast(dq * scale, DQ.dtype.element_ty, INTERPRET), mask_m, mask_d, MASK_D)
    if BLOCK_D2 > 0:
        _store(DQ, offs_m, sdq_n, offs_d2, sdq_d, _cast(dq2 * scale, DQ.dtype.element_ty, INTERPRET), mask_m,
               mask_d2, MASK_D2)  # fmt: skip


KERNELS = {"bwd_delta": _attention_bwd_delta_kernel, "bwd_dkdv": _attention_bwd_dkdv_kernel,
           "bwd_dq": _attention_bwd_dq_kernel}  # fmt: skip
