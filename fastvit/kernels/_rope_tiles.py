"""Tiles of the fused rotary attention: a q or k tile loaded as its two pair halves and turned
by the rotary table as it is loaded; a gradient turned back as it is stored.

Private to :mod:`fastvit.kernels.flash_rope_attention` and :mod:`~fastvit.kernels.flash_rope_attention_bwd`
(each ``@triton.jit`` function here is inlined into the kernel that calls it); imports no op file.

A head of ``D`` columns holds ``D / 2`` rotary pairs ``(a_i, b_i)``: ``(2i, 2i + 1)`` in EVA's
interleaved form, ``(i, i + D / 2)`` with ``rotate_half`` (DINOv3's). A tile is loaded as two
half tiles ``A`` (the ``a`` columns) and ``B`` (the ``b`` columns), each ``BLOCK_H =
next_pow2(D / 2)`` wide (>= 16, masked past ``D / 2``), and turned in fp32::

    A' = A cos - B sin,    B' = B cos + A sin

then cast to the input dtype for the products (as timm casts the rotated q and k back). The
scores are ``A'_q A'_k^T + B'_q B'_k^T``: the pairs' order inside a row does not matter to a
dot product, so no column permute is needed at any head dim. Gradients with respect to the
rotated tiles are turned back (the transpose of the rotation) as they are stored::

    dA = dA' cos + dB' sin,    dB = dB' cos - dA' sin

The launchers pass sin and cos side by side as one fp32 ``(rows, pairs, 2)`` table (per head or
shared, head stride 0): one load fetches both of a pair's, which halves the table's pointer
registers (with two tables the sm_80 backward spilled). Prefix rows (class and register tokens,
``row < num_prefix``) read ``cos = 1, sin = 0`` through the table load's mask, which leaves them
exactly as they are.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastvit.kernels._attention_tiles import cast


def half_block(head_dim: int) -> int:
    """BLOCK_H: one pair half of the head dim as a power-of-two tile of at least 16 columns."""
    return max(16, triton.next_power_of_2(max(1, head_dim // 2)))


def full_block(head_dim: int) -> int:
    """BLOCK_D: the whole head dim (v, out, dO) as one power-of-two tile of at least 16 columns."""
    return max(16, triton.next_power_of_2(head_dim))


@triton.jit
def pair_columns(offs_h, HALF_DIM: tl.constexpr, ROTATE_HALF: tl.constexpr):
    """The head-dim columns of the pairs' first and second members, for pair indices ``offs_h``."""
    if ROTATE_HALF:
        col_a = offs_h
        col_b = offs_h + HALF_DIM
    else:
        col_a = offs_h * 2
        col_b = offs_h * 2 + 1
    return col_a, col_b


@triton.jit
def load_table(T, off_t, mask_t):
    """sin and cos at the pair offsets ``off_t`` of a (rows, pairs, 2) table (sin and cos side by
    side: one 8-byte load per pair), 0 and 1 where not ``mask_t``."""
    j = tl.arange(0, 2)
    sc = tl.load(T + off_t[:, :, None] * 2 + j[None, None, :], mask=mask_t[:, :, None],
                 other=(j == 1).to(tl.float32)[None, None, :])
    return tl.split(sc)


@triton.jit
def load_rotated(X, off_a, off_b, mask, T, off_t, mask_t, INTERPRET: tl.constexpr):
    """The half tiles ``X[off_a]``, ``X[off_b]`` (zero where not ``mask``) rotated by the table
    entries at ``off_t`` (sin 0, cos 1 where not ``mask_t``: prefix rows and padding), in fp32,
    cast to X's dtype."""
    a = tl.load(X + off_a, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(X + off_b, mask=mask, other=0.0).to(tl.float32)
    sin, cos = load_table(T, off_t, mask_t)
    dtype = X.dtype.element_ty
    return cast(a * cos - b * sin, dtype, INTERPRET), cast(b * cos + a * sin, dtype, INTERPRET)


@triton.jit
def store_unrotated(X, off_a, off_b, mask, da, db, T, off_t, mask_t, INTERPRET: tl.constexpr):
    """Store the fp32 gradients ``da``, ``db`` of the rotated half tiles as the gradients of the
    unrotated ones (the inverse rotation), in X's dtype."""
    sin, cos = load_table(T, off_t, mask_t)
    dtype = X.dtype.element_ty
    tl.store(X + off_a, cast(da * cos + db * sin, dtype, INTERPRET), mask=mask)
    tl.store(X + off_b, cast(db * cos - da * sin, dtype, INTERPRET), mask=mask)
