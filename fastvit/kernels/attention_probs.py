"""Exact attention probabilities from q, k and the forward's row log-sum-exp, in Triton.

The fused attention forward (:func:`fastvit.kernels.flash_attention.attention_fwd`)
never forms the N x N probabilities, but it saves each query row's log-sum-exp
``lse`` (fp32, natural log) of the scaled scores. With it, every probability is
one product and one exponential away:

    P[i, j] = exp(scale * q_i . k_j - lse_i)

so the maps are rebuilt tile by tile (one program per (batch x head, query block,
key block)) with no second softmax pass and no running max. The products
accumulate in fp32 ("ieee" for fp32 inputs), as in the forward kernel, and the
output is fp32 (B, H, N_q, N_kv) whatever the input dtype.

Reference: :func:`fastvit.kernels.reference.attention_probs_ref`.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastvit.kernels.ops import FLOATS, MAX_HEAD_DIM, device_reason
from fastvit.kernels.tuning import interpreting

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
# One tile shape everywhere: the kernel is a store-bound element-wise map over S.
BLOCK_M, BLOCK_N, NUM_WARPS = 64, 64, 4


@triton.jit
def _attention_probs_fwd_kernel(
    Q, K, LSE, P,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sp_b, sp_h, sp_m, sp_n,
    qk_scale, num_heads, n_q, n_kv,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """P tile = exp2(qk_scale * Q K^T - LSE * log2(e)); ``qk_scale`` is scale * log2(e)."""
    bh = tl.program_id(0)  # batch x head on axis 0, which allows 2^31 - 1 programs (axes 1, 2: 65535)
    pid_m = tl.program_id(1)
    pid_n = tl.program_id(2)
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < n_q
    mask_n = offs_n < n_kv
    mask_d = offs_d < HEAD_DIM
    q = tl.load(Q + b * sq_b + h * sq_h + offs_m[:, None] * sq_n + offs_d[None, :] * sq_d,
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # fmt: skip
    kt = tl.load(K + b * sk_b + h * sk_h + offs_n[None, :] * sk_n + offs_d[:, None] * sk_d,
                 mask=mask_d[:, None] & mask_n[None, :], other=0.0)  # fmt: skip
    if UPCAST:  # fp32 inputs, or any under the interpreter (its bf16/fp16 tl.dot is unreliable)
        s = tl.dot(q.to(tl.float32), kt.to(tl.float32), input_precision="ieee")
    else:
        s = tl.dot(q, kt)
    lse = tl.load(LSE + bh.to(tl.int64) * n_q + offs_m, mask=mask_m, other=0.0)
    p = tl.exp2(s * qk_scale - lse[:, None] * LOG2E)
    mask = mask_m[:, None] & mask_n[None, :]
    tl.store(P + b * sp_b + h * sp_h + offs_m[:, None] * sp_m + offs_n[None, :] * sp_n, p, mask=mask)


def _check_inputs(q: Tensor, k: Tensor, lse: Tensor) -> None:
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"attention_probs: expected {name} of shape (B, H, N, D), got {getattr(t, 'shape', t)!r}")
    if q.dtype != k.dtype or q.dtype not in FLOATS:
        raise TypeError(f"attention_probs: expected q and k both float16, bfloat16 or float32, got {q.dtype}, {k.dtype}")
    b, h, n_q, d = q.shape
    if (k.shape[0], k.shape[1], k.shape[3]) != (b, h, d):
        raise ValueError(f"attention_probs: expected k to match q's (B, H, D) = {(b, h, d)}, got {tuple(k.shape)}")
    if not isinstance(lse, Tensor) or tuple(lse.shape) != (b, h, n_q) or lse.dtype != torch.float32:
        raise ValueError(
            f"attention_probs: expected lse as float32 of shape {(b, h, n_q)}, got "
            f"{getattr(lse, 'dtype', None)} {tuple(getattr(lse, 'shape', ()))}"
        )
    if not (q.device == k.device == lse.device):
        raise ValueError(f"attention_probs: expected q, k, lse on one device, got {q.device}, {k.device}, {lse.device}")
    if device_reason(q.device) is not None:
        raise RuntimeError(f"attention_probs: the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1), got {q.device}")
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"attention_probs: expected head_dim between 1 and {MAX_HEAD_DIM}, got {d}")


def attention_probs_fwd(q: Tensor, k: Tensor, lse: Tensor, scale: float, out: Tensor) -> Tensor:
    """Launch the kernel: ``out`` (fp32 (B, H, N_q, N_kv), any strides) receives the maps."""
    b, h, n_q, d = q.shape
    n_kv = k.shape[2]
    lse = lse.contiguous()
    upcast = q.dtype == torch.float32 or interpreting()
    grid = (b * h, triton.cdiv(n_q, BLOCK_M), triton.cdiv(n_kv, BLOCK_N))
    _attention_probs_fwd_kernel[grid](
        q, k, lse, out, *q.stride(), *k.stride(), *out.stride(),
        scale * LOG2E.value, h, n_q, n_kv,
        HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), UPCAST=upcast,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, num_warps=NUM_WARPS,
    )  # fmt: skip
    return out


def attention_probs(q: Tensor, k: Tensor, lse: Tensor, scale: float | None = None, *, out: Tensor | None = None) -> Tensor:
    """softmax(q k^T * scale) as fp32 (B, H, N_q, N_kv), from ``lse`` of the same scores.

    ``q``, ``k``: (B, H, N, D) of any strides (e.g. views of a packed qkv);
    ``lse``: (B, H, N_q) fp32, as :func:`~fastvit.kernels.flash_attention.attention_fwd`
    returns it. ``out`` (fp32, right shape, any strides) receives the maps instead of a new buffer.
    """
    _check_inputs(q, k, lse)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    b, h, n_q, d = q.shape
    n_kv = k.shape[2]
    if out is None:
        out = torch.empty((b, h, n_q, n_kv), device=q.device, dtype=torch.float32)
    elif out.shape != (b, h, n_q, n_kv) or out.dtype != torch.float32:
        raise ValueError(f"attention_probs: out must be float32 of shape {(b, h, n_q, n_kv)}, got {out.dtype} {tuple(out.shape)}")
    return attention_probs_fwd(q, k, lse, scale, out)


# The op's kernel (the compile check reads it).
KERNELS = {"fwd": _attention_probs_fwd_kernel}
