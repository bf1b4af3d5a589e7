"""FlashAttention-style attention (non-causal), forward and backward, in Triton.

Layout: ``q``, ``k``, ``v`` are (B, H, N, D) tensors with any strides, e.g. the
``transpose(1, 2)`` views of a packed qkv projection; no copy is made. Query
and key lengths may differ. The output, in the input dtype, is a (B, H, N_q, D)
view of a fresh (B, N_q, H, D) buffer, as PyTorch's SDPA returns it: merging
the heads afterwards (``out.transpose(1, 2).reshape(B, N, H * D)``) is free.
Any sequence length and any head_dim up to 128 work. The head dimension runs
as one power-of-two tile, or as two when that pads less (72 and 80 as 64 + 16,
96 as 64 + 32; :func:`fastvit.kernels._attention_tiles.head_tiles`), not
padded to 128: the products over it sum the first tile, then the second.

Forward: one program per block of query rows streams over K/V once, keeping an
online softmax in fp32. Scores stay unscaled; scale * log2(e) enters once, in
the exp2 argument ``s * qk_scale - m`` (one FMA per score). Full key blocks
are loaded and processed without masks; only the last, partial block is
masked. It also writes the row log-sum-exp ``lse`` (fp32, natural log,
(B, H, N_q)): with it the backward recomputes P = exp(S - lse) tile by tile
instead of keeping the N x N probabilities.

Backward, in three kernels (:mod:`fastvit.kernels.flash_attention_bwd`) and without atomics, so gradients are bitwise
reproducible:

1. ``delta = rowsum(dO * O)``, the softmax-Jacobian term of every query row;
2. dK and dV: one program per key block, looping over the query blocks;
3. dQ: one program per query block, looping over the key blocks.

Every output is written with plain stores, once, so the autotuner may re-run
any kernel while benchmarking.

Inputs (q, k, v, dO, packed qkv) may have any strides, stride 0 included;
output buffers given to the launchers may be strided but must not overlap
themselves; empty batches, heads or query sets give empty results.

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
from torch import Tensor

from fastvit.kernels import flash_attention_bwd as bwd
from fastvit.kernels._attention_tiles import (
    LN2, LOG2E, TUNE_KEY as _TUNE_KEY, backward_head_tiles, cast as _cast, fwd_block as _fwd_block, head_tiles,
    load as _load, store as _store, supports_head_dim,
)  # fmt: skip
from fastvit.kernels.attention_spills import early_prune
from fastvit.kernels.ops import FLOATS as TORCH_DTYPES, MAX_HEAD_DIM, device_reason
from fastvit.kernels.tuning import autotune_configs, autotune_do_bench, current_arch, interpreting, split

DELTA_CONFIG, DKDV_CONFIGS, DQ_CONFIGS = bwd.DELTA_CONFIG, bwd.DKDV_CONFIGS, bwd.DQ_CONFIGS

# Launch configurations per architecture (see fastvit.kernels.tuning). The
# first "default" entry is the only one used under test, and runs anywhere.
# Forward and dQ own BLOCK_M query rows and stream BLOCK_N keys; dK/dV owns
# BLOCK_N key rows and streams BLOCK_M queries. The owned tile is the M side
# of every product, so it is >= 64 for Hopper's warp-group MMA. No entry spills
# registers at head_dim 64 or 128 (ptxas from Triton 3.9), except where noted.
FWD_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
        dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    "sm80": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
        dict(BLOCK_M=128, BLOCK_N=32, num_warps=8, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2),
    ],
    # 4 warps spill at head dims 72 and 128 on sm_80 (96-144 B); 8 do not.
    "default": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)],
}
CONFIGS = {"fwd": FWD_CONFIGS, "bwd_dkdv": DKDV_CONFIGS, "bwd_dq": DQ_CONFIGS}

# Configurations measured to spill at the launch's head dim are pruned before benchmarking
# (see fastvit.kernels.attention_spills; at the models' head dims 64-80 none is).
@triton.autotune(configs=autotune_configs(FWD_CONFIGS, pruned=True), key=_TUNE_KEY, do_bench=autotune_do_bench(),
                 prune_configs_by={"early_config_prune": early_prune("attention_fwd")})
@triton.jit
def _attention_fwd_kernel(
    Q, K, V, O, LSE,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sv_b, sv_h, sv_n, sv_d,
    so_b, so_h, so_n, so_d,
    qk_scale, num_heads, n_q, n_kv,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr, PRECISION: tl.constexpr,
    INTERPRET: tl.constexpr, NEG_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per (query block, batch x head): O = softmax(scale Q K^T) V and
    LSE = logsumexp of the scaled scores. ``qk_scale`` is scale * log2(e). Full
    key blocks load and run unmasked; only the last, partial one is masked."""
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
    Q += b * sq_b + h * sq_h
    K += b * sk_b + h * sk_h
    V += b * sv_b + h * sv_h
    O += b * so_b + h * so_h
    LSE += bh.to(tl.int64) * n_q

    q = _load(Q, offs_m, sq_n, offs_d, sq_d, mask_m, offs_d < HEAD_DIM, True, HEAD_DIM < BLOCK_D)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    q2 = q
    acc2 = acc
    if BLOCK_D2 > 0:
        q2 = _load(Q, offs_m, sq_n, offs_d2, sq_d, mask_m, offs_d2 < HEAD_DIM, True, HEAD_DIM < BLOCK_D + BLOCK_D2)
        acc2 = tl.zeros([BLOCK_M, BLOCK_D2], tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max of the scaled scores, log2 units
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exp2(s - m_i)
    n_full = (n_kv // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, acc2, m_i, l_i = _fwd_block(
            acc, acc2, m_i, l_i, q, q2, K, V, start_n + offs_n, offs_d, offs_d2, sk_n, sk_d, sv_n, sv_d, n_kv,
            qk_scale, HEAD_DIM, BLOCK_D, BLOCK_D2, PRECISION, INTERPRET, NEG_SCALE, False,
        )  # fmt: skip
    if n_full < n_kv:
        acc, acc2, m_i, l_i = _fwd_block(
            acc, acc2, m_i, l_i, q, q2, K, V, n_full + offs_n, offs_d, offs_d2, sk_n, sk_d, sv_n, sv_d, n_kv,
            qk_scale, HEAD_DIM, BLOCK_D, BLOCK_D2, PRECISION, INTERPRET, NEG_SCALE, True,
        )  # fmt: skip

    out_ty = O.dtype.element_ty
    _store(O, offs_m, so_n, offs_d, so_d, _cast(acc / l_i[:, None], out_ty, INTERPRET), mask_m,
           offs_d < HEAD_DIM, HEAD_DIM < BLOCK_D)  # fmt: skip
    if BLOCK_D2 > 0:
        _store(O, offs_m, so_n, offs_d2, so_d, _cast(acc2 / l_i[:, None], out_ty, INTERPRET), mask_m,
               offs_d2 < HEAD_DIM, HEAD_DIM < BLOCK_D + BLOCK_D2)  # fmt: skip
    tl.store(LSE + offs_m, (m_i + tl.log2(l_i)) * LN2, mask=mask_m)


def _input_constexprs(q: Tensor, allow_tf32: bool, backward: bool = False) -> dict:
    """Constexprs fixed by the inputs rather than tuned. The interpreter runs the
    sm_90 tiling (the split one) so that tests cover it."""
    arch = "sm90" if interpreting() else current_arch()
    block_d, block_d2 = backward_head_tiles(q.shape[-1], arch) if backward else head_tiles(q.shape[-1])
    return dict(
        HEAD_DIM=q.shape[-1],
        BLOCK_D=block_d,
        BLOCK_D2=block_d2,
        PRECISION="tf32" if allow_tf32 and q.dtype == torch.float32 else "ieee",
        INTERPRET=interpreting(),
    )


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _empty_contiguous(t: Tensor) -> Tensor:
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def _empty_out(q: Tensor) -> Tensor:
    """(B, H, N, D) view of a (B, N, H, D) buffer, so merging heads is a view."""
    batch, heads, n_q, head_dim = q.shape
    return q.new_empty((batch, n_q, heads, head_dim)).transpose(1, 2)


def _check_runnable(t: Tensor) -> None:
    if device_reason(t.device) is not None:
        raise RuntimeError(f"attention: the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1), got {t.device}")


def _check_buffer(name: str, t: Tensor, like: Tensor, shape: tuple, dtype=None, contiguous=False) -> None:
    """An output buffer: the right shape, dtype and device, and no two elements
    sharing memory (an expanded, stride-0 buffer would be written racily)."""
    dtype = like.dtype if dtype is None else dtype
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != like.device:
        raise ValueError(
            f"attention: expected {name} of shape {tuple(shape)}, {dtype} on {like.device}, "
            f"got {tuple(t.shape)}, {t.dtype} on {t.device}"
        )
    if contiguous and not t.is_contiguous():
        raise ValueError(f"attention: expected {name} contiguous, got strides {t.stride()}")
    if t.numel() > 1 and torch._debug_has_internal_overlap(t) == 1:
        raise ValueError(f"attention: expected {name} without overlapping elements, got strides {t.stride()}")


def attention_fwd(q, k, v, scale, *, out=None, lse=None, allow_tf32=False):
    """Launch the forward kernel. Returns ``(out, lse)``: out (B, H, N_q, D) in q's
    dtype (laid out (B, N_q, H, D) unless ``out`` is given, any strides), lse
    (B, H, N_q) fp32 contiguous. Inputs may have any strides, stride 0 included."""
    _check_runnable(q)
    batch, heads, n_q, _ = q.shape
    n_kv = k.shape[2]
    out = _empty_out(q) if out is None else out
    lse = q.new_empty((batch, heads, n_q), dtype=torch.float32) if lse is None else lse
    _check_buffer("out", out, q, q.shape)
    _check_buffer("lse", lse, q, (batch, heads, n_q), torch.float32, contiguous=True)
    if out.numel() == 0:
        return out, lse
    if n_kv == 0:
        raise ValueError(f"attention: expected at least one key for {n_q} queries, got k {tuple(k.shape)}")

    def grid(meta):
        return (triton.cdiv(n_q, meta["BLOCK_M"]) * batch * heads,)

    _attention_fwd_kernel[grid](
        q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        scale * LOG2E.value, heads, n_q, n_kv, **_input_constexprs(q, allow_tf32), NEG_SCALE=scale < 0,
    )  # fmt: skip
    return out, lse


def attention_bwd(
    do, q, k, v, out, lse, scale, *, dq=None, dk=None, dv=None, delta=None, allow_tf32=False
):
    """Launch the backward kernels. Returns ``(dq, dk, dv)``, contiguous like q, k,
    v unless given (any strides); ``delta`` (B, H, N_q) fp32 is scratch. ``do``
    may have any strides, e.g. the stride-0 gradient of ``out.sum()``."""
    _check_runnable(q)
    batch, heads, n_q, head_dim = q.shape
    n_kv = k.shape[2]
    dq = _empty_contiguous(q) if dq is None else dq
    dk = _empty_contiguous(k) if dk is None else dk
    dv = _empty_contiguous(v) if dv is None else dv
    delta = torch.empty_like(lse) if delta is None else delta
    for name, t, like in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v)):
        _check_buffer(name, t, like, like.shape)
    for name, t in (("lse", lse), ("delta", delta)):
        _check_buffer(name, t, q, (batch, heads, n_q), torch.float32, contiguous=True)
    if batch * heads * n_q == 0 or n_kv == 0:  # nothing attends: dK = dV = 0
        dk.zero_(), dv.zero_()
        return dq.zero_(), dk, dv
    meta = _input_constexprs(q, allow_tf32, backward=True)
    delta_meta, delta_launch = split(DELTA_CONFIG)
    bwd.KERNELS["bwd_delta"][(triton.cdiv(n_q, delta_meta["BLOCK_M"]) * batch * heads,)](
        out, do, delta, *out.stride(), *do.stride(), heads, n_q,
        HEAD_DIM=head_dim, BLOCK_D=_block_d(head_dim), **delta_meta, **delta_launch,
    )  # fmt: skip

    common = (*q.stride(), *k.stride(), *v.stride(), *do.stride())
    scalars = (scale, scale * LOG2E.value, heads, n_q, n_kv)
    bwd.KERNELS["bwd_dkdv"][lambda m: (triton.cdiv(n_kv, m["BLOCK_N"]) * batch * heads,)](
        q, k, v, do, lse, delta, dk, dv, *common, *dk.stride(), *dv.stride(), *scalars, **meta,
    )  # fmt: skip
    bwd.KERNELS["bwd_dq"][lambda m: (triton.cdiv(n_q, m["BLOCK_M"]) * batch * heads,)](
        q, k, v, do, lse, delta, dq, *common, *dq.stride(), *scalars, **meta,
    )  # fmt: skip
    return dq, dk, dv


def _tf32_opt_in() -> bool:
    return os.environ.get("FASTVIT_ATTENTION_TF32", "0") == "1"


@torch.library.custom_op("fastvit::attention_fwd", mutates_args=())
def attention_fwd_op(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    return attention_fwd(q, k, v, scale, allow_tf32=_tf32_opt_in())


@attention_fwd_op.register_fake
def _(q, k, v, scale):
    return _empty_out(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("fastvit::attention_bwd", mutates_args=())
def attention_bwd_op(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    return attention_bwd(do, q, k, v, out, lse, scale, allow_tf32=_tf32_opt_in())


@attention_bwd_op.register_fake
def _(do, q, k, v, out, lse, scale):
    return _empty_contiguous(q), _empty_contiguous(k), _empty_contiguous(v)


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


# -- packed qkv: the (B, N, 3, H, D) output of a fused qkv projection -------------------
#
# attention(q, k, v) on views of the packed tensor reads it without a copy, but
# autograd then joins dq, dk, dv back into the packed layout with two copies
# (unbind's stack, then the reshape of a permuted tensor). These ops take the
# packed tensor itself, and the backward kernels write dq, dk and dv straight
# into one packed gradient.


def _unpack(qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, H, N, D) views of q, k, v in a (B, N, 3, H, D) tensor."""
    return tuple(qkv.select(2, i).transpose(1, 2) for i in range(3))


@torch.library.custom_op("fastvit::attention_qkvpacked_fwd", mutates_args=())
def attention_qkvpacked_fwd_op(qkv: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    return attention_fwd(*_unpack(qkv), scale, allow_tf32=_tf32_opt_in())


@attention_qkvpacked_fwd_op.register_fake
def _(qkv, scale):
    q = _unpack(qkv)[0]
    return _empty_out(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("fastvit::attention_qkvpacked_bwd", mutates_args=())
def attention_qkvpacked_bwd_op(do: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, scale: float) -> Tensor:
    dqkv = _empty_contiguous(qkv)
    dq, dk, dv = _unpack(dqkv)
    attention_bwd(do, *_unpack(qkv), out, lse, scale, dq=dq, dk=dk, dv=dv, allow_tf32=_tf32_opt_in())
    return dqkv


@attention_qkvpacked_bwd_op.register_fake
def _(do, qkv, out, lse, scale):
    return _empty_contiguous(qkv)


def _qkv_setup_context(ctx, inputs, output):
    qkv, scale = inputs
    out, lse = output
    ctx.save_for_backward(qkv, out, lse)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _qkv_backward(ctx, dout, _dlse):
    qkv, out, lse = ctx.saved_tensors
    return attention_qkvpacked_bwd_op(dout, qkv, out, lse, ctx.scale), None


attention_qkvpacked_fwd_op.register_autograd(_qkv_backward, setup_context=_qkv_setup_context)


def _check_inputs(q, k, v) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"attention: expected {name} of shape (B, H, N, D), got {t.dim()}-D {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in TORCH_DTYPES:
        raise TypeError(
            f"attention: expected q, k, v all float16, bfloat16 or float32, got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    if not (q.device == k.device == v.device):
        raise ValueError(f"attention: expected q, k, v on one device, got {q.device}, {k.device}, {v.device}")
    b, h, _, d = q.shape
    for name, t in (("k", k), ("v", v)):
        if (t.shape[0], t.shape[1], t.shape[3]) != (b, h, d):
            raise ValueError(f"attention: expected {name} to match q's (B, H, D) = {(b, h, d)}, got {tuple(t.shape)}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"attention: expected k and v of equal length, got {k.shape[2]} and {v.shape[2]}")
    if not supports_head_dim(d):
        raise ValueError(f"attention: expected head_dim between 1 and {MAX_HEAD_DIM}, got {d}")
    if q.numel() > 0 and k.shape[2] == 0:
        raise ValueError(f"attention: expected at least one key for {q.shape[2]} queries, got k {tuple(k.shape)}")


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """softmax(q @ k^T * scale) @ v for (B, H, N, D) tensors of any strides, non-causal.

    ``scale`` defaults to 1/sqrt(D). Differentiable; runs as the opaque custom
    ops ``fastvit::attention_fwd`` / ``fastvit::attention_bwd``, so it works
    under ``torch.compile(fullgraph=True)``.
    """
    _check_inputs(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    out, _ = attention_fwd_op(q, k, v, scale)
    return out


def attention_qkvpacked(qkv: Tensor, scale: float | None = None) -> Tensor:
    """:func:`attention` over a packed (B, N, 3, H, D) tensor, e.g. a qkv projection
    viewed as ``qkv(x).view(B, N, 3, H, D)``; any strides. Returns (B, H, N, D),
    laid out (B, N, H, D) so that merging the heads is a view.

    The same kernels as :func:`attention`; the backward writes dq, dk and dv
    into one (B, N, 3, H, D) gradient, so no copy joins them.
    """
    if not isinstance(qkv, Tensor) or qkv.dim() != 5 or qkv.shape[2] != 3:
        shape = tuple(qkv.shape) if isinstance(qkv, Tensor) else type(qkv).__name__
        raise ValueError(f"attention_qkvpacked: expected qkv of shape (B, N, 3, H, D), got {shape}")
    q, k, v = _unpack(qkv)
    _check_inputs(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    out, _ = attention_qkvpacked_fwd_op(qkv, scale)
    return out


# The op's kernels, by pass (the compile check and the GPU check's sweep read these).
KERNELS = {"fwd": _attention_fwd_kernel, **bwd.KERNELS}
