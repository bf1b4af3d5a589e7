"""FlashAttention-style attention (non-causal), forward and backward, in Triton.

Layout: ``q``, ``k``, ``v`` are (B, H, N, D) tensors with any strides, e.g. the
``transpose(1, 2)`` views of a packed qkv projection; no copy is made. Query
and key lengths may differ. The output is a fresh contiguous (B, H, N_q, D)
tensor in the input dtype. Any sequence length and any head_dim up to 128 work:
tiles are masked on both the sequence and the head dimension.

Forward: one program per block of query rows streams over K/V once, keeping an
online softmax in fp32 (``exp2`` with log2(e) folded into the scale). It also
writes the row log-sum-exp ``lse`` (fp32, natural log, (B, H, N_q)): with it
the backward recomputes P = exp(S - lse) tile by tile instead of keeping the
N x N probabilities.

Backward, in three kernels and without atomics, so gradients are bitwise
reproducible:

1. ``delta = rowsum(dO * O)``, the softmax-Jacobian term of every query row;
2. dK and dV: one program per key block, looping over the query blocks;
3. dQ: one program per query block, looping over the key blocks.

Every output is written with plain stores, once, so the autotuner may re-run
any kernel while benchmarking.

fp32 inputs get exact ("ieee") fp32 products; TF32 only on opt-in, with
``FASTVIT_ATTENTION_TF32=1`` or ``allow_tf32=True`` on the launchers.
Reference: :func:`fastvit.kernels.reference.attention_ref`.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from fastvit.kernels.aot import AotCase
from fastvit.kernels.tuning import autotune_configs, interpreting, split

# Launch configurations per architecture (see fastvit.kernels.tuning). The
# first "default" entry is the only one used under test, and runs anywhere.
# Forward and dQ own BLOCK_M query rows and stream BLOCK_N keys; dK/dV owns
# BLOCK_N key rows and streams BLOCK_M queries. The owned tile is the M side
# of every product, so it is >= 64 for Hopper's warp-group MMA.
FWD_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
        dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    "sm80": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3),
        dict(BLOCK_M=128, BLOCK_N=32, num_warps=4, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2),
    ],
    "default": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)],
}
DKDV_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=64, BLOCK_N=128, num_warps=8, num_stages=2),
        dict(BLOCK_M=32, BLOCK_N=128, num_warps=8, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    "sm80": [
        dict(BLOCK_M=32, BLOCK_N=128, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2),
        dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    "default": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)],
}
DQ_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2),
        dict(BLOCK_M=128, BLOCK_N=32, num_warps=8, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    "sm80": [
        dict(BLOCK_M=128, BLOCK_N=32, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=3),
    ],
    "default": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)],
}
CONFIGS = {"fwd": FWD_CONFIGS, "bwd_dkdv": DKDV_CONFIGS, "bwd_dq": DQ_CONFIGS}
# The delta kernel is a row reduction with no product to tune.
DELTA_CONFIG = dict(BLOCK_M=64, num_warps=4, num_stages=1)

MAX_HEAD_DIM = 128
_TUNE_KEY = ["n_q", "n_kv", "HEAD_DIM"]
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, DOT_F32: tl.constexpr):
    """``a @ b`` accumulated in fp32. DOT_F32 upcasts the operands first: the
    interpreter's bf16 ``tl.dot`` is wrong, so the launchers set it there only."""
    if DOT_F32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.autotune(configs=autotune_configs(FWD_CONFIGS), key=_TUNE_KEY)
@triton.jit
def _attention_fwd_kernel(
    Q, K, V, O, LSE,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sv_b, sv_h, sv_n, sv_d,
    so_b, so_h, so_n, so_d,
    qk_scale, num_heads, n_q, n_kv,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per (query block, batch x head): O = softmax(scale Q K^T) V and
    LSE = logsumexp of the scaled scores. ``qk_scale`` is scale * log2(e)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(n_q, BLOCK_M)
    bh = pid // num_m
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_m = (pid % num_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < n_q
    mask_d = offs_d < HEAD_DIM
    Q += b * sq_b + h * sq_h
    K += b * sk_b + h * sk_h
    V += b * sv_b + h * sv_h
    O += b * so_b + h * so_h
    LSE += bh.to(tl.int64) * n_q

    q = tl.load(Q + offs_m[:, None] * sq_n + offs_d[None, :] * sq_d, mask=mask_m[:, None] & mask_d[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max, log2 units
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exp2(s - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, n_kv, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < n_kv
        kt = tl.load(K + cols[None, :] * sk_n + offs_d[:, None] * sk_d, mask=mask_d[:, None] & mask_n[None, :], other=0.0)
        v = tl.load(V + cols[:, None] * sv_n + offs_d[None, :] * sv_d, mask=mask_n[:, None] & mask_d[None, :], other=0.0)
        s = _dot(q, kt, PRECISION, DOT_F32) * qk_scale
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION, DOT_F32)
        m_i = m_new

    out = acc / l_i[:, None]
    tl.store(O + offs_m[:, None] * so_n + offs_d[None, :] * so_d, out.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])
    tl.store(LSE + offs_m, (m_i + tl.log2(l_i)) * LN2, mask=mask_m)


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


@triton.autotune(configs=autotune_configs(DKDV_CONFIGS), key=_TUNE_KEY)
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
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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
    mask_n = offs_n < n_kv
    mask_d = offs_d < HEAD_DIM
    Q += b * sq_b + h * sq_h
    K += b * sk_b + h * sk_h
    V += b * sv_b + h * sv_h
    DO += b * sdo_b + h * sdo_h
    DK += b * sdk_b + h * sdk_h
    DV += b * sdv_b + h * sdv_h
    LSE += bh.to(tl.int64) * n_q
    DELTA += bh.to(tl.int64) * n_q

    mask_nd = mask_n[:, None] & mask_d[None, :]
    k = tl.load(K + offs_n[:, None] * sk_n + offs_d[None, :] * sk_d, mask=mask_nd, other=0.0)
    v = tl.load(V + offs_n[:, None] * sv_n + offs_d[None, :] * sv_d, mask=mask_nd, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start_m in range(0, n_q, BLOCK_M):
        rows = start_m + offs_m
        mask_m = rows < n_q
        qt = tl.load(Q + rows[None, :] * sq_n + offs_d[:, None] * sq_d, mask=mask_d[:, None] & mask_m[None, :], other=0.0)
        do = tl.load(DO + rows[:, None] * sdo_n + offs_d[None, :] * sdo_d, mask=mask_m[:, None] & mask_d[None, :], other=0.0)
        lse2 = tl.load(LSE + rows, mask=mask_m, other=0.0) * LOG2E
        delta = tl.load(DELTA + rows, mask=mask_m, other=0.0)
        st = _dot(k, qt, PRECISION, DOT_F32) * qk_scale
        pt = tl.where(mask_m[None, :], tl.exp2(st - lse2[None, :]), 0.0)
        dv += _dot(pt.to(do.dtype), do, PRECISION, DOT_F32)
        dpt = _dot(v, tl.trans(do), PRECISION, DOT_F32)
        dst = pt * (dpt - delta[None, :])
        dk += _dot(dst.to(qt.dtype), tl.trans(qt), PRECISION, DOT_F32)

    dk *= scale
    tl.store(DK + offs_n[:, None] * sdk_n + offs_d[None, :] * sdk_d, dk.to(DK.dtype.element_ty), mask=mask_nd)
    tl.store(DV + offs_n[:, None] * sdv_n + offs_d[None, :] * sdv_d, dv.to(DV.dtype.element_ty), mask=mask_nd)


@triton.autotune(configs=autotune_configs(DQ_CONFIGS), key=_TUNE_KEY)
@triton.jit
def _attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sv_b, sv_h, sv_n, sv_d,
    sdo_b, sdo_h, sdo_n, sdo_d,
    sdq_b, sdq_h, sdq_n, sdq_d,
    scale, qk_scale, num_heads, n_q, n_kv,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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
    mask_m = offs_m < n_q
    mask_d = offs_d < HEAD_DIM
    Q += b * sq_b + h * sq_h
    K += b * sk_b + h * sk_h
    V += b * sv_b + h * sv_h
    DO += b * sdo_b + h * sdo_h
    DQ += b * sdq_b + h * sdq_h
    LSE += bh.to(tl.int64) * n_q
    DELTA += bh.to(tl.int64) * n_q

    mask_md = mask_m[:, None] & mask_d[None, :]
    q = tl.load(Q + offs_m[:, None] * sq_n + offs_d[None, :] * sq_d, mask=mask_md, other=0.0)
    do = tl.load(DO + offs_m[:, None] * sdo_n + offs_d[None, :] * sdo_d, mask=mask_md, other=0.0)
    lse2 = tl.load(LSE + offs_m, mask=mask_m, other=0.0) * LOG2E
    delta = tl.load(DELTA + offs_m, mask=mask_m, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, n_kv, BLOCK_N):
        cols = start_n + offs_n
        mask_dn = mask_d[:, None] & (cols < n_kv)[None, :]
        kt = tl.load(K + cols[None, :] * sk_n + offs_d[:, None] * sk_d, mask=mask_dn, other=0.0)
        vt = tl.load(V + cols[None, :] * sv_n + offs_d[:, None] * sv_d, mask=mask_dn, other=0.0)
        s = _dot(q, kt, PRECISION, DOT_F32) * qk_scale
        p = tl.where((cols < n_kv)[None, :], tl.exp2(s - lse2[:, None]), 0.0)
        dp = _dot(do, vt, PRECISION, DOT_F32)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(kt.dtype), tl.trans(kt), PRECISION, DOT_F32)

    dq *= scale
    tl.store(DQ + offs_m[:, None] * sdq_n + offs_d[None, :] * sdq_d, dq.to(DQ.dtype.element_ty), mask=mask_md)


def _head_meta(q: torch.Tensor, allow_tf32: bool) -> dict:
    """Constexprs fixed by the inputs rather than tuned."""
    return dict(
        HEAD_DIM=q.shape[-1],
        BLOCK_D=_block_d(q.shape[-1]),
        PRECISION="tf32" if allow_tf32 and q.dtype == torch.float32 else "ieee",
        DOT_F32=interpreting() and q.dtype == torch.bfloat16,
    )


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _check_runnable(t: torch.Tensor) -> None:
    if t.device.type != "cuda" and not interpreting():
        raise RuntimeError(f"attention: the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1), got {t.device}")


def attention_forward(q, k, v, scale, *, out=None, lse=None, allow_tf32=False):
    """Launch the forward kernel. Returns ``(out, lse)``: out (B, H, N_q, D) in q's
    dtype (contiguous unless ``out`` is given, any strides), lse (B, H, N_q) fp32
    contiguous."""
    _check_runnable(q)
    batch, heads, n_q, _ = q.shape
    n_kv = k.shape[2]
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if lse is None:
        lse = torch.empty((batch, heads, n_q), dtype=torch.float32, device=q.device)
    assert lse.is_contiguous() and lse.shape == (batch, heads, n_q)

    def grid(meta):
        return (triton.cdiv(n_q, meta["BLOCK_M"]) * batch * heads,)

    _attention_fwd_kernel[grid](
        q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        scale * LOG2E.value, heads, n_q, n_kv, **_head_meta(q, allow_tf32),
    )  # fmt: skip
    return out, lse


def attention_backward(do, q, k, v, out, lse, scale, *, dq=None, dk=None, dv=None, delta=None, allow_tf32=False):
    """Launch the three backward kernels. Returns ``(dq, dk, dv)``, contiguous
    like q, k, v unless given (any strides); ``delta`` (B, H, N_q) fp32 is scratch."""
    _check_runnable(q)
    batch, heads, n_q, head_dim = q.shape
    n_kv = k.shape[2]
    dq = torch.empty_like(q, memory_format=torch.contiguous_format) if dq is None else dq
    dk = torch.empty_like(k, memory_format=torch.contiguous_format) if dk is None else dk
    dv = torch.empty_like(v, memory_format=torch.contiguous_format) if dv is None else dv
    delta = torch.empty_like(lse) if delta is None else delta
    assert lse.is_contiguous() and delta.is_contiguous() and delta.shape == lse.shape == (batch, heads, n_q)
    meta = _head_meta(q, allow_tf32)

    block_m, launch = split(DELTA_CONFIG)
    _attention_bwd_delta_kernel[(triton.cdiv(n_q, block_m["BLOCK_M"]) * batch * heads,)](
        out, do, delta, *out.stride(), *do.stride(), heads, n_q,
        HEAD_DIM=head_dim, BLOCK_D=meta["BLOCK_D"], **block_m, **launch,
    )  # fmt: skip

    common = (*q.stride(), *k.stride(), *v.stride(), *do.stride())
    scalars = (scale, scale * LOG2E.value, heads, n_q, n_kv)
    _attention_bwd_dkdv_kernel[lambda m: (triton.cdiv(n_kv, m["BLOCK_N"]) * batch * heads,)](
        q, k, v, do, lse, delta, dk, dv, *common, *dk.stride(), *dv.stride(), *scalars, **meta,
    )  # fmt: skip
    _attention_bwd_dq_kernel[lambda m: (triton.cdiv(n_q, m["BLOCK_M"]) * batch * heads,)](
        q, k, v, do, lse, delta, dq, *common, *dq.stride(), *scalars, **meta,
    )  # fmt: skip
    return dq, dk, dv


def _tf32_opt_in() -> bool:
    return os.environ.get("FASTVIT_ATTENTION_TF32", "0") == "1"


@torch.library.custom_op("fastvit::attention_fwd", mutates_args=())
def attention_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return attention_forward(q, k, v, scale, allow_tf32=_tf32_opt_in())


@attention_fwd_op.register_fake
def _(q, k, v, scale):
    batch, heads, n_q, _ = q.shape
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty((batch, heads, n_q), dtype=torch.float32)


@torch.library.custom_op("fastvit::attention_bwd", mutates_args=())
def attention_bwd_op(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return attention_backward(do, q, k, v, out, lse, scale, allow_tf32=_tf32_opt_in())


@attention_bwd_op.register_fake
def _(do, q, k, v, out, lse, scale):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


def _setup_context(ctx, inputs, output):
    q, k, v, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = attention_bwd_op(dout, q, k, v, out, lse, ctx.scale)
    return dq, dk, dv, None


attention_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _check_inputs(q, k, v) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"attention: expected {name} of shape (B, H, N, D), got {t.dim()}-D shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"attention: expected q, k, v all float16, bfloat16 or float32, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"attention: expected q, k, v on one device, got {q.device}, {k.device}, {v.device}")
    b, h, _, d = q.shape
    for name, t in (("k", k), ("v", v)):
        if (t.shape[0], t.shape[1], t.shape[3]) != (b, h, d):
            raise ValueError(f"attention: expected {name} to match q's (B, H, D) = {(b, h, d)}, got shape {tuple(t.shape)}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"attention: expected k and v of equal length, got {k.shape[2]} and {v.shape[2]}")
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"attention: expected head_dim between 1 and {MAX_HEAD_DIM}, got {d}")
    if q.numel() == 0 or k.numel() == 0:
        raise ValueError(f"attention: expected non-empty inputs, got q {tuple(q.shape)}, k {tuple(k.shape)}")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(q @ k^T * scale) @ v for (B, H, N, D) tensors of any strides, non-causal.

    ``scale`` defaults to 1/sqrt(D). Differentiable; runs as the opaque custom
    ops ``fastvit::attention_fwd`` / ``fastvit::attention_bwd``, so it works
    under ``torch.compile(fullgraph=True)``.
    """
    _check_inputs(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    out, _ = attention_fwd_op(q, k, v, scale)
    return out


def _signature(fn, dtype: str, constexprs: dict) -> dict:
    """Triton types of ``fn``'s arguments: upper-case names are tensors (LSE and
    DELTA fp32), ``*scale`` are fp32, the rest i32 sizes and strides."""

    def kind(name):
        if name in constexprs:
            return "constexpr"
        if name in ("LSE", "DELTA"):
            return "*fp32"
        if name.isupper():
            return f"*{dtype}"
        return "fp32" if name.endswith("scale") else "i32"

    return {name: kind(name) for name in fn.arg_names}


def _unit_strides(fn) -> dict:
    """Head-dim strides are 1 for the usual layouts, and Triton specializes them as constants."""
    return {name: 1 for name in fn.arg_names if name.startswith("s") and name.endswith("_d")}


def aot_cases() -> list[AotCase]:
    """Every kernel at every shipped configuration, for sm_80 and sm_90, bf16 and fp16.

    bf16 compiles at head_dim 128 and fp16 at head_dim 80: both use the largest
    tile (BLOCK_D = 128), so shared memory is checked at its worst, and 80 also
    covers the masked head dimension.
    """
    tuned = (
        ("attention_fwd", _attention_fwd_kernel.fn, FWD_CONFIGS),
        ("attention_bwd_dkdv", _attention_bwd_dkdv_kernel.fn, DKDV_CONFIGS),
        ("attention_bwd_dq", _attention_bwd_dq_kernel.fn, DQ_CONFIGS),
    )
    cases = []
    for dtype, head_dim in (("bf16", 128), ("fp16", 80)):
        head = dict(HEAD_DIM=head_dim, BLOCK_D=_block_d(head_dim))
        for arch in ("sm80", "sm90"):
            delta_fn = _attention_bwd_delta_kernel
            meta, launch = split(DELTA_CONFIG)
            constexprs = {**head, **meta, **_unit_strides(delta_fn)}
            cases.append(AotCase(
                f"attention_bwd_delta-{dtype}-d{head_dim}", delta_fn, _signature(delta_fn, dtype, constexprs),
                constexprs, arch, tensor_core_op=None, **launch,
            ))  # fmt: skip
            for name, fn, table in tuned:
                for entry in table[arch] + [e for e in table["default"] if e not in table[arch]]:
                    meta, launch = split(entry)
                    constexprs = {**head, **meta, "PRECISION": "ieee", "DOT_F32": False, **_unit_strides(fn)}
                    label = f"{name}-{dtype}-d{head_dim}-m{meta['BLOCK_M']}n{meta['BLOCK_N']}"
                    cases.append(AotCase(label, fn, _signature(fn, dtype, constexprs), constexprs, arch, **launch))
    return cases
