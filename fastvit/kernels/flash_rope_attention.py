"""Fused rotary attention (non-causal): q and k turned by a rotary table as each tile is loaded.

``rope_attention(q, k, v, sin, cos, num_prefix=, rotate_half=, scale=)`` is
``softmax(scale * R(q) R(k)^T) v`` with ``R`` the 2-D rotary embedding of EVA-02, DINOv3 and
their kin: the last ``N - num_prefix`` tokens of q and k turned pair by pair (``(2i, 2i + 1)``,
or ``(i, i + D / 2)`` with ``rotate_half``) by the angle whose ``sin`` / ``cos`` the tables hold,
the prefix (class, register tokens) left as is. The eager way (rotate q and k in PyTorch, then
SDPA) reads and writes q and k twice more per layer, and again in the backward; here the
rotation happens in registers (:mod:`fastvit.kernels._rope_tiles`) and no rotated q or
k, nor a gradient of one, is written to memory.

The structure is the plain attention's (:mod:`fastvit.kernels.flash_attention`): an online
softmax forward that also writes the row log-sum-exp, and a backward in three kernels without
atomics (``delta``, then dK/dV, then dQ; :mod:`fastvit.kernels.flash_rope_attention_bwd`), whose dQ
and dK are turned back by the inverse rotation as they are stored. The rotation runs in fp32
and its result is cast to the inputs' dtype before the products, as timm casts the rotated q
and k back to v's dtype. fp32 inputs get exact ("ieee") products.

q, k, v: (B, H, N, D) of one shape and dtype (fp16, bf16 or fp32), any strides (e.g. views of a
packed qkv projection), D even and at most 128. sin, cos: fp32 ``(N - num_prefix, D / 2)``,
shared by the heads, or ``(H, N - num_prefix, D / 2)``. The tables get no gradient: a call
whose tables require one is refused (``supports()`` says why, and the layers fall back).
The output is a (B, H, N, D) view of a (B, N, H, D) buffer, as SDPA returns it.
Reference: :func:`fastvit.kernels.reference.rope_attention_ref`.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastvit.kernels import flash_attention_bwd as attention_bwd, flash_rope_attention_bwd as bwd
from fastvit.kernels._attention_tiles import LN2, LOG2E, dot as _dot, dot_acc as _dot_acc, load as _load
from fastvit.kernels._attention_tiles import cast as _cast, store as _store
from fastvit.kernels.ops import supports_rope_attention
from fastvit.kernels._rope_tiles import full_block, half_block, load_rotated, pair_columns
from fastvit.kernels.tuning import autotune_configs, interpreting, split

DKDV_CONFIGS, DQ_CONFIGS = bwd.DKDV_CONFIGS, bwd.DQ_CONFIGS
# Launch configurations per architecture (see fastvit.kernels.tuning); the interpreter (tests)
# runs the first "default" entry only. One program owns BLOCK_M query rows and streams BLOCK_N keys.
FWD_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
    ],
    "sm80": [
        dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2),
        dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2),
    ],
    "default": [dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)],
}
CONFIGS = {"fwd": FWD_CONFIGS, "bwd_dkdv": DKDV_CONFIGS, "bwd_dq": DQ_CONFIGS}


@triton.autotune(configs=autotune_configs(FWD_CONFIGS), key=bwd.TUNE_KEY)
@triton.jit
def _rope_attention_fwd_kernel(
    Q, K, V, O, LSE, T,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sv_b, sv_h, sv_n, sv_d,
    so_b, so_h, so_n, so_d,
    st_h, st_n, qk_scale, num_heads, n, num_prefix,
    HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, ROTATE_HALF: tl.constexpr,
    PRECISION: tl.constexpr, INTERPRET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per (query block, batch x head): O = softmax(scale Q' K'^T) V and LSE, Q' and
    K' rotated as loaded. ``qk_scale`` is scale * log2(e); it enters before the row max, so a
    negative scale works too."""
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
    O += b * so_b + h * so_h
    T += h * st_h * 2  # (rows, pairs, 2) per head; st_h, st_n count pairs
    LSE += bh.to(tl.int64) * n

    qa, qb = load_rotated(
        Q, offs_m[:, None] * sq_n + col_a[None, :] * sq_d, offs_m[:, None] * sq_n + col_b[None, :] * sq_d,
        mask_m[:, None] & mask_h[None, :], T, (offs_m - num_prefix)[:, None] * st_n + offs_h[None, :],
        rot_m[:, None] & mask_h[None, :], INTERPRET,
    )  # fmt: skip
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max of the scaled scores, log2 units
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exp2(s - m_i)
    for start_n in range(0, n, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < n
        rot_n = mask_n & (cols >= num_prefix)
        # the keys, rotated and transposed: (BLOCK_H, BLOCK_N)
        kat, kbt = load_rotated(
            K, col_a[:, None] * sk_d + cols[None, :] * sk_n, col_b[:, None] * sk_d + cols[None, :] * sk_n,
            mask_h[:, None] & mask_n[None, :], T, offs_h[:, None] + (cols - num_prefix)[None, :] * st_n,
            mask_h[:, None] & rot_n[None, :], INTERPRET,
        )  # fmt: skip
        v = _load(V, cols, sv_n, offs_d, sv_d, mask_n, mask_d, True, MASK_D)
        s = _dot_acc(_dot(qa, kat, PRECISION, INTERPRET), qb, kbt, PRECISION, INTERPRET)
        s = tl.where(mask_n[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = _dot_acc(acc * alpha[:, None], p, v, PRECISION, INTERPRET)
        m_i = m_new

    _store(O, offs_m, so_n, offs_d, so_d, _cast(acc / l_i[:, None], O.dtype.element_ty, INTERPRET), mask_m, mask_d,
           MASK_D)  # fmt: skip
    tl.store(LSE + offs_m, (m_i + tl.log2(l_i)) * LN2, mask=mask_m)


# -- launchers ----------------------------------------------------------------------------------


def _constexprs(q: Tensor, rotate_half: bool) -> dict:
    head_dim = q.shape[-1]
    return dict(HEAD_DIM=head_dim, BLOCK_H=half_block(head_dim), BLOCK_D=full_block(head_dim),
                ROTATE_HALF=bool(rotate_half), PRECISION="ieee", INTERPRET=interpreting())  # fmt: skip


def _table(sin: Tensor, cos: Tensor) -> tuple[Tensor, int, int]:
    """sin and cos side by side, ``(..., rows, pairs, 2)`` fp32, and its head and row strides in
    pairs (head stride 0 for a table shared by the heads): one load fetches both of a pair's."""
    table = torch.stack([sin.float(), cos.float()], -1)
    rows, pairs = sin.shape[-2:]
    return table, (rows * pairs if sin.dim() == 3 else 0), pairs


def _empty_out(q: Tensor) -> Tensor:
    """(B, H, N, D) view of a (B, N, H, D) buffer, so merging heads is a view."""
    batch, heads, n, head_dim = q.shape
    return q.new_empty((batch, n, heads, head_dim)).transpose(1, 2)


def _empty_contiguous(t: Tensor) -> Tensor:
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def _check_call(q, k, v, sin, cos, num_prefix) -> None:
    """ValueError / TypeError naming what was expected; the reason supports() gives, and the shapes."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"rope_attention: expected {name} of shape (B, H, N, D), got {shape}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"rope_attention: expected q, k, v of one shape (B, H, N, D), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")  # fmt: skip
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"rope_attention: expected q, k, v of one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, t in (("sin", sin), ("cos", cos)):
        if not isinstance(t, Tensor):
            raise TypeError(f"rope_attention: expected {name} a tensor, got {type(t).__name__}")
    devices = {t.device for t in (q, k, v, sin, cos)}
    if len(devices) > 1:
        raise ValueError(f"rope_attention: expected q, k, v, sin, cos on one device, got {sorted(map(str, devices))}")
    if sin.shape != cos.shape:
        raise ValueError(f"rope_attention: expected sin and cos of one shape, got {tuple(sin.shape)} and {tuple(cos.shape)}")
    if isinstance(num_prefix, bool) or not isinstance(num_prefix, int):
        raise TypeError(f"rope_attention: expected num_prefix an int, got {type(num_prefix).__name__}")
    batch, heads, n, head_dim = q.shape
    reason = supports_rope_attention(
        device=q.device, dtype=q.dtype, head_dim=head_dim, seq_len=n, num_prefix=num_prefix, heads=heads,
        table_shape=tuple(sin.shape), table_dtype=cos.dtype if sin.dtype == torch.float32 else sin.dtype,
        tables_require_grad=torch.is_grad_enabled() and (sin.requires_grad or cos.requires_grad),
    )  # fmt: skip
    if reason is None:
        return
    if reason.startswith("tensors are on"):  # as the plain attention: no device to run on
        raise RuntimeError(f"rope_attention: {reason}")
    raise (TypeError if reason.startswith(("dtype ", "table_dtype ")) else ValueError)(f"rope_attention: {reason}")


def rope_attention_fwd(q, k, v, sin, cos, num_prefix, rotate_half, scale, *, out=None, lse=None):
    """Launch the forward kernel. Returns ``(out, lse)``: out (B, H, N, D) in q's dtype (laid out
    (B, N, H, D) unless ``out`` is given), lse (B, H, N) fp32 contiguous."""
    batch, heads, n, _ = q.shape
    out = _empty_out(q) if out is None else out
    lse = q.new_empty((batch, heads, n), dtype=torch.float32) if lse is None else lse
    if out.numel() == 0:
        return out, lse
    table, st_h, st_n = _table(sin, cos)
    _rope_attention_fwd_kernel[lambda m: (triton.cdiv(n, m["BLOCK_M"]) * batch * heads,)](
        q, k, v, out, lse, table, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        st_h, st_n, scale * LOG2E.value, heads, n, num_prefix, **_constexprs(q, rotate_half),
    )  # fmt: skip
    return out, lse


def rope_attention_bwd(do, q, k, v, sin, cos, out, lse, num_prefix, rotate_half, scale, *, dq=None, dk=None,
                       dv=None, delta=None):  # fmt: skip
    """Launch the backward kernels. Returns ``(dq, dk, dv)``, contiguous unless given; ``delta``
    (B, H, N) fp32 is scratch. ``do`` may have any strides."""
    batch, heads, n, head_dim = q.shape
    dq = _empty_contiguous(q) if dq is None else dq
    dk = _empty_contiguous(k) if dk is None else dk
    dv = _empty_contiguous(v) if dv is None else dv
    delta = torch.empty_like(lse) if delta is None else delta
    if q.numel() == 0:
        return dq, dk, dv
    table, st_h, st_n = _table(sin, cos)
    delta_meta, delta_launch = split(attention_bwd.DELTA_CONFIG)
    attention_bwd.KERNELS["bwd_delta"][(triton.cdiv(n, delta_meta["BLOCK_M"]) * batch * heads,)](
        out, do, delta, *out.stride(), *do.stride(), heads, n,
        HEAD_DIM=head_dim, BLOCK_D=full_block(head_dim), **delta_meta, **delta_launch,
    )  # fmt: skip
    common = (*q.stride(), *k.stride(), *v.stride(), *do.stride())
    scalars = (st_h, st_n, scale, scale * LOG2E.value, heads, n, num_prefix)
    meta = _constexprs(q, rotate_half)
    bwd.KERNELS["bwd_dkdv"][lambda m: (triton.cdiv(n, m["BLOCK_N"]) * batch * heads,)](
        q, k, v, do, lse, delta, dk, dv, table, *common, *dk.stride(), *dv.stride(), *scalars, **meta,
    )  # fmt: skip
    bwd.KERNELS["bwd_dq"][lambda m: (triton.cdiv(n, m["BLOCK_M"]) * batch * heads,)](
        q, k, v, do, lse, delta, dq, table, *common, *dq.stride(), *scalars, **meta,
    )  # fmt: skip
    return dq, dk, dv


# -- registered ops and autograd ----------------------------------------------------------------


@torch.library.custom_op("fastvit::rope_attention_fwd", mutates_args=())
def rope_attention_fwd_op(q: Tensor, k: Tensor, v: Tensor, sin: Tensor, cos: Tensor, num_prefix: int,
                          rotate_half: bool, scale: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    return rope_attention_fwd(q, k, v, sin, cos, num_prefix, rotate_half, scale)


@rope_attention_fwd_op.register_fake
def _(q, k, v, sin, cos, num_prefix, rotate_half, scale):
    return _empty_out(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("fastvit::rope_attention_bwd", mutates_args=())
def rope_attention_bwd_op(do: Tensor, q: Tensor, k: Tensor, v: Tensor, sin: Tensor, cos: Tensor, out: Tensor,
                          lse: Tensor, num_prefix: int, rotate_half: bool,
                          scale: float) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    return rope_attention_bwd(do, q, k, v, sin, cos, out, lse, num_prefix, rotate_half, scale)


@rope_attention_bwd_op.register_fake
def _(do, q, k, v, sin, cos, out, lse, num_prefix, rotate_half, scale):
    return _empty_contiguous(q), _empty_contiguous(k), _empty_contiguous(v)


def _setup_context(ctx, inputs, output):
    q, k, v, sin, cos, num_prefix, rotate_half, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, sin, cos, out, lse)
    ctx.args = (num_prefix, rotate_half, scale)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    q, k, v, sin, cos, out, lse = ctx.saved_tensors
    dq, dk, dv = rope_attention_bwd_op(dout, q, k, v, sin, cos, out, lse, *ctx.args)
    return dq, dk, dv, None, None, None, None, None


rope_attention_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def rope_attention(q: Tensor, k: Tensor, v: Tensor, sin: Tensor, cos: Tensor, *, num_prefix: int = 0,
                   rotate_half: bool = False, scale: float | None = None) -> Tensor:  # fmt: skip
    """``softmax(scale * R(q) R(k)^T) v``, q and k rotated in-kernel (see the module docstring).

    ``scale`` defaults to 1/sqrt(D). Differentiable in q, k and v (the tables get no gradient);
    runs as the opaque custom ops ``fastvit::rope_attention_fwd`` / ``fastvit::rope_attention_bwd``,
    so it works under ``torch.compile(fullgraph=True)``.
    """
    _check_call(q, k, v, sin, cos, num_prefix)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    out, _ = rope_attention_fwd_op(q, k, v, sin, cos, num_prefix, bool(rotate_half), scale)
    return out


# The op's kernels, by pass (the compile check and the GPU check's sweep read these); the delta
# kernel is the plain attention's.
KERNELS = {"fwd": _rope_attention_fwd_kernel, "bwd_delta": attention_bwd.KERNELS["bwd_delta"], **bwd.KERNELS}
