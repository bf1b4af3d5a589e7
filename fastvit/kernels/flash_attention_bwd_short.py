"""Attention backward for short key sequences (ViT lengths): one launch, five products.

The general backward (:mod:`fastvit.kernels.flash_attention`) runs three
kernels: delta = rowsum(dO * O), dK/dV over key blocks (S, dP, dV, dK) and dQ
over query blocks (S and dP again, then dQ): seven matrix products per tile
pair. When a head's keys fit one tile (n_kv <= SHORT_MAX_KV), one program per
(batch, head) holds all of K and V and the dK, dV accumulators, and walks the
query blocks: it computes delta from O and dO itself, S and dP once each, and
writes each query block's dQ = dS K straight out, since no other program
touches those rows. Five products, one launch, no atomics: bitwise repeatable.

It can pay only when there are enough (batch, head) pairs to fill the GPU;
with few of them the general kernels' finer grid wins. Scores sum the head
dimension in the same tiles and order as the forward, so P matches the saved
log-sum-exp.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastvit.kernels.flash_attention import LOG2E, _cast, _dot, _dot_acc, _load, _store
from fastvit.kernels.tuning import autotune_configs

# Key tile = the whole key sequence, padded to a power of two (BLOCK_N is set
# by the launcher); BLOCK_M query rows per step. NOT routed by default: at 197
# keys (BLOCK_N = 256) and head dim 64 every configuration tried spills with
# Triton 3.9 (sm_90: 144 B of stack at BLOCK_M=32 with 16 warps, 1.1 KB with 8;
# sm_80: ~10 KB), so it runs only on opt-in (FASTVIT_ATTENTION_BWD_SHORT=1 or
# ``attention_bwd(..., short=True)``), for a GPU run to measure against
# the general kernels.
SHORT_CONFIGS = {
    "sm90": [dict(BLOCK_M=32, num_warps=16, num_stages=2)],
    "sm80": [dict(BLOCK_M=32, num_warps=8, num_stages=2)],
    "default": [dict(BLOCK_M=32, num_warps=8, num_stages=2)],
}
SHORT_MAX_KV = 256


@triton.autotune(configs=autotune_configs(SHORT_CONFIGS), key=["n_q", "n_kv", "HEAD_DIM"])
@triton.jit
def _attention_bwd_short_kernel(
    Q, K, V, O, DO, LSE, DQ, DK, DV,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sv_b, sv_h, sv_n, sv_d,
    so_b, so_h, so_n, so_d,
    sdo_b, sdo_h, sdo_n, sdo_d,
    sdq_b, sdq_h, sdq_n, sdq_d,
    sdk_b, sdk_h, sdk_n, sdk_d,
    sdv_b, sdv_h, sdv_n, sdv_d,
    scale, qk_scale, num_heads, n_q, n_kv,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr, PRECISION: tl.constexpr,
    INTERPRET: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """One program per (batch x head): dQ, dK, dV of one head, K and V held whole."""
    bh = tl.program_id(0)
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_n = tl.arange(0, BLOCK_N)
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
    O += b * so_b + h * so_h
    DO += b * sdo_b + h * sdo_h
    DQ += b * sdq_b + h * sdq_h
    DK += b * sdk_b + h * sdk_h
    DV += b * sdv_b + h * sdv_h
    LSE += bh.to(tl.int64) * n_q

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
        q = _load(Q, rows, sq_n, offs_d, sq_d, mask_m, mask_d, True, MASK_D)
        do = _load(DO, rows, sdo_n, offs_d, sdo_d, mask_m, mask_d, True, MASK_D)
        o = _load(O, rows, so_n, offs_d, so_d, mask_m, mask_d, True, MASK_D)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        s = _dot(q, tl.trans(k), PRECISION, INTERPRET)
        dp = _dot(do, tl.trans(v), PRECISION, INTERPRET)
        q2, do2 = q, do
        if BLOCK_D2 > 0:
            q2 = _load(Q, rows, sq_n, offs_d2, sq_d, mask_m, mask_d2, True, MASK_D2)
            do2 = _load(DO, rows, sdo_n, offs_d2, sdo_d, mask_m, mask_d2, True, MASK_D2)
            o2 = _load(O, rows, so_n, offs_d2, so_d, mask_m, mask_d2, True, MASK_D2)
            delta += tl.sum(o2.to(tl.float32) * do2.to(tl.float32), 1)
            s = _dot_acc(s, q2, tl.trans(k2), PRECISION, INTERPRET)
            dp = _dot_acc(dp, do2, tl.trans(v2), PRECISION, INTERPRET)
        lse2 = tl.load(LSE + rows, mask=mask_m, other=0.0) * LOG2E
        p = tl.where(mask_m[:, None] & mask_n[None, :], tl.exp2(s * qk_scale - lse2[:, None]), 0.0)
        ds = p * (dp - delta[:, None])
        dq_ty = DQ.dtype.element_ty
        _store(DQ, rows, sdq_n, offs_d, sdq_d, _cast(_dot(ds, k, PRECISION, INTERPRET) * scale, dq_ty, INTERPRET),
               mask_m, mask_d, MASK_D)  # fmt: skip
        dv = _dot_acc(dv, tl.trans(p), do, PRECISION, INTERPRET)
        dk = _dot_acc(dk, tl.trans(ds), q, PRECISION, INTERPRET)
        if BLOCK_D2 > 0:
            dq2 = _dot(ds, k2, PRECISION, INTERPRET) * scale
            _store(DQ, rows, sdq_n, offs_d2, sdq_d, _cast(dq2, dq_ty, INTERPRET), mask_m, mask_d2, MASK_D2)
            dv2 = _dot_acc(dv2, tl.trans(p), do2, PRECISION, INTERPRET)
            dk2 = _dot_acc(dk2, tl.trans(ds), q2, PRECISION, INTERPRET)

    _store(DK, offs_n, sdk_n, offs_d, sdk_d, _cast(dk * scale, DK.dtype.element_ty, INTERPRET), mask_n, mask_d, MASK_D)
    _store(DV, offs_n, sdv_n, offs_d, sdv_d, _cast(dv, DV.dtype.element_ty, INTERPRET), mask_n, mask_d, MASK_D)
    if BLOCK_D2 > 0:
        _store(DK, offs_n, sdk_n, offs_d2, sdk_d, _cast(dk2 * scale, DK.dtype.element_ty, INTERPRET), mask_n,
               mask_d2, MASK_D2)  # fmt: skip
        _store(DV, offs_n, sdv_n, offs_d2, sdv_d, _cast(dv2, DV.dtype.element_ty, INTERPRET), mask_n, mask_d2,
               MASK_D2)  # fmt: skip


def short_backward_wanted(n_kv: int, short: bool | None) -> bool:
    """Whether the launcher runs this kernel: ``short`` if given, else the
    FASTVIT_ATTENTION_BWD_SHORT opt-in; never for more than SHORT_MAX_KV keys."""
    import os

    if short is None:
        short = os.environ.get("FASTVIT_ATTENTION_BWD_SHORT", "0") == "1"
    return bool(short) and n_kv <= SHORT_MAX_KV


def short_block_n(n_kv: int) -> int:
    return max(16, triton.next_power_of_2(n_kv))


def attention_bwd_short(do, q, k, v, out, lse, dq, dk, dv, scale, meta) -> None:
    """One program per (batch, head); ``meta`` is the launcher's input constexprs."""
    batch, heads, n_q, _ = q.shape
    n_kv = k.shape[2]
    strides = (*q.stride(), *k.stride(), *v.stride(), *out.stride(), *do.stride(), *dq.stride(), *dk.stride(),
               *dv.stride())  # fmt: skip
    _attention_bwd_short_kernel[(batch * heads,)](
        q, k, v, out, do, lse, dq, dk, dv, *strides, scale, scale * LOG2E.value, heads, n_q, n_kv,
        **meta, BLOCK_N=short_block_n(n_kv),
    )  # fmt: skip
