"""Fused LayerNorm and fused residual-add + LayerNorm (Triton), forward and backward.

``layer_norm(x, weight, bias)`` normalizes over the last dimension;
``add_layer_norm(x, y, weight, bias)`` computes ``s = x + y`` and returns
``(s, LN(s))`` from one pass. Plain PyTorch twins: ``layer_norm_ref`` and
``add_layer_norm_ref`` in :mod:`fastvit.kernels.reference`.

Accepted inputs:

- ``x`` (and ``y``): float32, float16 or bfloat16, any leading dims; ``y`` has
  ``x``'s shape and dtype. The hidden size ``N = x.shape[-1]`` is any value in
  ``0..MAX_HIDDEN`` (powers of two or not; ``N = 0`` gives empty outputs, mean 0
  and rstd NaN as torch's ``native_layer_norm``, and zero parameter gradients).
- ``weight``, ``bias``: shape ``(N,)``, one dtype for both, either ``x``'s dtype
  or float32 (fp32 master weights with bf16 activations). Their gradients come
  back in that dtype.
- Layout: any strides, for every tensor argument. Leading dims are flattened to
  rows with ``reshape``; that is a view when they merge and a contiguous copy
  otherwise, and a copy is also made when the last dim is not unit-stride
  (transposed, or expanded along it). The kernels take the row stride, so row
  slices of a bigger buffer and rows broadcast with ``expand`` (stride 0) are
  read in place. ``weight``, ``bias`` (and the saved statistics) are read as
  unit-stride vectors: a strided or expanded one is copied (N elements).
  Outputs are contiguous.
- qk-norm: ``layer_norm``'s input (not ``add_layer_norm``'s) may also have
  rows that take two strides, as the ``(B, N, H, head_dim)`` q or k slice
  ``qkv[:, :, 0]`` of a packed ``(B, N, 3, H, head_dim)`` projection has
  (strides ``3 H head_dim`` and ``head_dim``): the kernels then read row ``r``
  at ``(r // H) * 3 H head_dim + (r % H) * head_dim`` in place, forward and
  backward, instead of copying q and k to contiguous rows first
  (:func:`fastvit.kernels.norm_args._as_two_level_rows`). Other layouts that do
  not merge (e.g. the ``(B, H, N, head_dim)`` transpose) are still copied. The
  contiguous case passes ``rows_inner = 1``, which Triton turns into a constant,
  so its binary is the one-stride kernel's.

Numerics: mean and variance are computed in float32 whatever the input dtype
(two passes over a row held in registers: the mean, then the centred variance,
so a large common offset costs no precision). A variance beyond fp32's range
(``|x - mean|`` above ~1.8e19) makes the row NaN, as torch's is, instead of
``rstd = 0`` silently returning the bias; inf/NaN inputs give NaN rows.
Outputs are stored in ``x``'s dtype,
or for ``layer_norm`` in ``out_dtype`` (an fp32 residual stream normalized
straight into the bf16/fp16 input of the next GEMM under autocast: the
rounding that the GEMM's input cast would do, without the extra pass).
``s`` is rounded to ``x``'s dtype before it is normalized, so ``LN(s)`` is the
norm of exactly the ``s`` that is returned and saved.

Launchers: :func:`layer_norm_fwd` (both ops: ``y`` given means the add
variant) and :func:`layer_norm_bwd`; torch.library ops ``fastvit::layer_norm_fwd``,
``fastvit::add_layer_norm_fwd`` and their ``_bwd``.

Saved for backward: the forward ops return ``mean`` and ``rstd`` as float32
tensors of shape ``(rows,)``; autograd saves them with the input ``x`` (plain
LayerNorm) or the output ``s`` (add variant) and ``weight``; ``x̂`` is recomputed
from those in the backward.

Launch shape: each program of the forward normalizes ``BLOCK_M`` whole rows,
``BLOCK_N = next_power_of_2(N)`` columns with masking, where
``BLOCK_M = max(1, ROW_TILE // BLOCK_N)`` (``ROW_TILE`` = 2048 on GPUs): one
row at ViT-H's 1280 (and So400m's 1152), two at ViT-B's 768 and ViT-L's 1024, eight at
ViT-Ti's 192. One row per program would leave a 192-wide row spread over 128
threads doing 1.5 elements each; 2048-element tiles keep every thread on a few
vectorized loads, and the grid stays large (ViT-B, batch 64: 12,608 rows ->
6,304 programs). ``num_warps`` is autotuned per architecture from
``FWD_CONFIGS`` (keyed on ``N``).

Backward: a fixed number of programs (``bwd_num_programs``: 4 per SM on CUDA,
8 on CPU) each owns one contiguous range of rows. It writes ``dx`` for those
rows and accumulates ``dweight``/``dbias`` partial sums in fp32 registers, then
stores them in its own row of a ``(2, programs, N)`` fp32 buffer; ``torch.sum``
over the programs finishes the reduction. The row loop is software pipelined
(``tl.range(..., num_stages=ROW_STAGES)``, from ``BWD_CONFIGS``): the next
tiles of ``x`` and ``dout`` are copied asynchronously into shared memory while
this one reduces (``cp.async`` in the compiled code; see :mod:`.norm_aot`). No atomics: for a given GPU model,
shape and chosen config the gradients are bitwise reproducible. (The autotuner
picks a config once per process; with ``FASTVIT_AUTOTUNE=0`` the choice is
fixed as well.)
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastvit.kernels import norm_support, tuning
from fastvit.kernels.contract import declare
from fastvit.kernels.norm_args import (  # noqa: F401 - MAX_HIDDEN and the helpers are part of this module's API
    MAX_HIDDEN, _as_rows, _as_two_level_rows, _check_inputs, _check_out_dtype, _vector,
)  # fmt: skip

# Target elements per program tile; sets rows per program from the hidden size.
# The interpreter pays per op and per program, not per element, so it takes
# 8x larger tiles (the kernels are the same; only BLOCK_M changes).
GPU_ROW_TILE = 2048
ROW_TILE = 8 * GPU_ROW_TILE if tuning.interpreting() else GPU_ROW_TILE

# Launch options the autotuner tries (per N and dtype). Rows per program come
# from ROW_TILE, so a GPU tile holds 2048 elements for N <= 2048 (one row of
# 4096 above): 4 or 8 warps give each thread 8-16 fp32 per live tensor. The
# forward has no loop (num_stages 1); the backward's row loop is software
# pipelined ROW_STAGES deep (``tl.range(num_stages=)``: asynchronous copies of
# the next rows' x and dout while this tile reduces). These are candidates,
# compiled for each architecture by the AOT test; they were not timed there.
FWD_CONFIGS = {
    "sm90": [dict(num_warps=4, num_stages=1), dict(num_warps=8, num_stages=1)],
    "sm80": [dict(num_warps=4, num_stages=1), dict(num_warps=8, num_stages=1)],
    "default": [dict(num_warps=4, num_stages=1), dict(num_warps=8, num_stages=1)],
}
BWD_CONFIGS = {
    "sm90": [dict(ROW_STAGES=2, num_warps=4, num_stages=2), dict(ROW_STAGES=3, num_warps=8, num_stages=3)],
    "sm80": [dict(ROW_STAGES=2, num_warps=4, num_stages=2), dict(ROW_STAGES=3, num_warps=8, num_stages=3)],
    "default": [dict(ROW_STAGES=2, num_warps=4, num_stages=2), dict(ROW_STAGES=2, num_warps=8, num_stages=2)],
}
CONFIGS = {"fwd": FWD_CONFIGS, "bwd": BWD_CONFIGS}



# --------------------------------------------------------------------------- kernels


@triton.jit
def _row_offsets(rows64, rows_inner, stride_outer, stride_inner):
    """Element offsets of rows ``(r // rows_inner, r % rows_inner)``: two-level row strides.

    Triton specializes ``rows_inner == 1`` (every contiguous or merged layout) to a
    constant, so there the division folds away and this is ``rows * stride_outer``.
    """
    return (rows64 // rows_inner) * stride_outer + (rows64 % rows_inner) * stride_inner


@triton.jit
def _layer_norm_fwd_kernel(
    X, Y, W, B, S, OUT, MEAN, RSTD,
    stride_x, stride_y, stride_s, stride_out,  # row strides in elements; columns are unit-stride
    rows_inner, stride_x_inner,  # X's rows as (M / rows_inner, rows_inner) with strides (stride_x, stride_x_inner)
    M, N, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
):
    """OUT = LN(X) (or S = X + Y, OUT = LN(S)) over BLOCK_M rows; stores fp32 mean and rstd per row."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < M
    col_mask = cols < N
    mask = row_mask[:, None] & col_mask[None, :]
    rows64 = rows.to(tl.int64)[:, None]

    x = tl.load(X + _row_offsets(rows64, rows_inner, stride_x, stride_x_inner) + cols[None, :], mask=mask,
                other=0.0).to(tl.float32)  # fmt: skip
    if HAS_RESIDUAL:
        y = tl.load(Y + rows64 * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        s = (x + y).to(S.dtype.element_ty)
        tl.store(S + rows64 * stride_s + cols[None, :], s, mask=mask)
        x = s.to(tl.float32)

    # Two passes over the row in registers: the mean, then the centred variance.
    mean = tl.sum(x, axis=1) / N
    xc = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / N
    # A variance past fp32's range (|x - mean| above ~1.8e19) would give rstd = 0
    # and an output equal to the bias, finite and wrong: make it NaN, as torch does.
    rstd = tl.where(var == float("inf"), float("nan"), tl.rsqrt(var + eps))
    tl.store(MEAN + rows, mean, mask=row_mask)
    tl.store(RSTD + rows, rstd, mask=row_mask)

    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)
    out = xc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(OUT + rows64 * stride_out + cols[None, :], out.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _layer_norm_bwd_kernel(
    DOUT, DS, X, W, MEAN, RSTD, DX, DW_PARTIAL, DB_PARTIAL,
    stride_dout, stride_ds, stride_x, stride_dx,  # row strides in elements
    rows_inner, stride_x_inner,  # X's two-level rows, as in the forward
    M, N, rows_per_program,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DS: tl.constexpr, ROW_STAGES: tl.constexpr,
):
    """DX = dLN/dX (+ DS) for one fixed range of rows; this program's dW, dB partial sums go to row pid."""
    pid = tl.program_id(0)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, M)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    db_acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

    for first in tl.range(row_start, row_end, BLOCK_M, num_stages=ROW_STAGES):
        rows = first + tl.arange(0, BLOCK_M)
        row_mask = rows < row_end
        mask = row_mask[:, None] & col_mask[None, :]
        rows64 = rows.to(tl.int64)[:, None]
        x = tl.load(X + _row_offsets(rows64, rows_inner, stride_x, stride_x_inner) + cols[None, :], mask=mask,
                    other=0.0).to(tl.float32)  # fmt: skip
        dout = tl.load(DOUT + rows64 * stride_dout + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)

        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        wdout = dout * w[None, :]
        c1 = tl.sum(xhat * wdout, axis=1) / N
        c2 = tl.sum(wdout, axis=1) / N
        dx = (wdout - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DS:
            dx += tl.load(DS + rows64 * stride_ds + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + rows64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)

        dw_acc += dout * xhat
        db_acc += dout

    tl.store(DW_PARTIAL + pid * N + cols, tl.sum(dw_acc, axis=0), mask=col_mask)
    tl.store(DB_PARTIAL + pid * N + cols, tl.sum(db_acc, axis=0), mask=col_mask)


# Autotuned, under the kernels' own names (the raw @triton.jit functions are ``.fn``).
_layer_norm_fwd_kernel = triton.autotune(configs=tuning.autotune_configs(FWD_CONFIGS), key=["N", "HAS_RESIDUAL"])(
    _layer_norm_fwd_kernel
)
_layer_norm_bwd_kernel = triton.autotune(configs=tuning.autotune_configs(BWD_CONFIGS), key=["N", "HAS_DS"])(
    _layer_norm_bwd_kernel
)


# --------------------------------------------------------------------------- launchers


def block_sizes(n: int, row_tile: int = ROW_TILE) -> tuple[int, int]:
    """(BLOCK_M rows per tile, BLOCK_N columns) for hidden size ``n``."""
    block_n = triton.next_power_of_2(max(n, 1))
    return max(1, row_tile // block_n), block_n


@functools.lru_cache(maxsize=None)
def _programs_per_device(device: torch.device) -> int:
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 8


def bwd_num_programs(m: int, n: int, device: torch.device) -> tuple[int, int]:
    """(programs, rows per program) of the backward for ``m`` rows of width ``n``.

    Depends only on the shape and the device model, so the dW/dB reduction
    order is fixed. Rows per program are a multiple of BLOCK_M.
    """
    if m == 0:
        return 0, 0
    block_m, _ = block_sizes(n)
    per_program = triton.cdiv(m, min(_programs_per_device(torch.device(device)), triton.cdiv(m, block_m)))
    per_program = triton.cdiv(per_program, block_m) * block_m
    return triton.cdiv(m, per_program), per_program


def _device_of(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _out_buffer(t, shape, dtype, device):
    """Allocate an output, or check the caller's preallocated one."""
    if t is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if t.shape != shape or t.dtype != dtype or t.device != device or not t.is_contiguous():
        raise ValueError(
            f"output buffer: expected contiguous {dtype} of shape {tuple(shape)} on {device}, "
            f"got {t.dtype} {tuple(t.shape)} on {t.device}{'' if t.is_contiguous() else ' (strided)'}"
        )
    return t


def layer_norm_fwd(x, weight, bias, eps, y=None, *, s=None, out=None, mean=None, rstd=None, out_dtype=None):
    """Run the forward kernel; returns ``(s, out, mean, rstd)`` (``s`` is None without ``y``).

    ``s``, ``out`` (contiguous, ``x``'s shape; ``s`` in ``x``'s dtype, ``out``
    in ``out_dtype``, default ``x``'s) and ``mean``, ``rstd`` (fp32,
    ``(rows,)``) may be passed in preallocated; every element is written.
    """
    n = x.shape[-1]
    if y is None:
        x2, rows_inner, stride_x, stride_inner = _as_two_level_rows(x, n)
    else:  # the add variant reads x and y row by row alike
        x2 = _as_rows(x, n)
        rows_inner, stride_x, stride_inner = 1, x2.stride(0), x2.stride(0)
    m = math.prod(x.shape[:-1])
    out = _out_buffer(out, x.shape, out_dtype or x.dtype, x.device)
    mean = _out_buffer(mean, (m,), torch.float32, x.device)
    rstd = _out_buffer(rstd, (m,), torch.float32, x.device)
    out2 = out.view(m, n)
    if y is None:
        # unused by the kernel when HAS_RESIDUAL is False (a 2-D stand-in keeps stride_y a row stride)
        y2, s2 = (x2 if x2.dim() == 2 else out2), out2
    else:
        y2 = _as_rows(y, n)
        s = _out_buffer(s, x.shape, x.dtype, x.device)
        s2 = s.view(m, n)
    if m == 0:
        return s, out, mean, rstd
    if n == 0:  # torch's native_layer_norm: empty rows have mean 0 and rstd NaN
        mean.zero_()
        rstd.fill_(float("nan"))
        return s, out, mean, rstd
    block_m, block_n = block_sizes(n)
    with _device_of(x):
        _layer_norm_fwd_kernel[(triton.cdiv(m, block_m),)](
            x2, y2, _vector(weight), _vector(bias), s2, out2, mean, rstd,
            stride_x, y2.stride(0), s2.stride(0), out2.stride(0),
            rows_inner, stride_inner,
            m, n, eps,
            BLOCK_M=block_m, BLOCK_N=block_n, HAS_RESIDUAL=y is not None,
        )
    return s, out, mean, rstd


def layer_norm_bwd(dout, x, weight, mean, rstd, ds=None, *, dx=None, partial=None):
    """Run the backward kernel; returns ``(dx, dweight, dbias)``.

    ``x`` is the tensor that was normalized (``s`` for the add variant); ``ds``
    is the gradient reaching ``s`` directly, added to ``dx``. ``dx`` (contiguous,
    ``x``'s shape and dtype) and ``partial`` (fp32, ``(2, programs, N)`` with
    ``programs`` from :func:`bwd_num_programs`) may be passed in preallocated.
    dweight/dbias are fp32 sums over ``partial`` in fixed order, cast to
    ``weight``'s dtype.
    """
    n = x.shape[-1]
    x2, rows_inner, stride_x, stride_inner = _as_two_level_rows(x, n)
    dout2 = _as_rows(dout, n)
    m = dout2.shape[0]
    dx = _out_buffer(dx, x.shape, x.dtype, x.device)
    dx2 = dx.view(m, n)
    programs, per_program = bwd_num_programs(m, n, x.device)
    partial = _out_buffer(partial, (2, programs, n), torch.float32, x.device)
    ds2 = dout2 if ds is None else _as_rows(ds, n)  # unused by the kernel when HAS_DS is False
    if m and n:
        block_m, block_n = block_sizes(n)
        with _device_of(x):
            _layer_norm_bwd_kernel[(programs,)](
                dout2, ds2, x2, _vector(weight), _vector(mean), _vector(rstd), dx2, partial[0], partial[1],
                dout2.stride(0), ds2.stride(0), stride_x, dx2.stride(0),
                rows_inner, stride_inner,
                m, n, per_program,
                BLOCK_M=block_m, BLOCK_N=block_n, HAS_DS=ds is not None,
            )
    dweight = partial[0].sum(dim=0).to(weight.dtype)
    dbias = partial[1].sum(dim=0).to(weight.dtype)
    return dx, dweight, dbias


# --------------------------------------------------------------------------- torch.library ops


def _fake_like(x):
    return x.new_empty(x.shape)


def _fake_stats(x):
    return x.new_empty((math.prod(x.shape[:-1]),), dtype=torch.float32)


@torch.library.custom_op("fastvit::layer_norm_fwd", mutates_args=())
def layer_norm_fwd_op(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float, out_dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(LN(x), mean, rstd)``; mean and rstd are fp32 of shape ``(rows,)``."""
    _, out, mean, rstd = layer_norm_fwd(x, weight, bias, eps, out_dtype=out_dtype)
    return out, mean, rstd


@layer_norm_fwd_op.register_fake
def _(x, weight, bias, eps, out_dtype=None):
    return x.new_empty(x.shape, dtype=out_dtype or x.dtype), _fake_stats(x), _fake_stats(x)


@torch.library.custom_op("fastvit::layer_norm_bwd", mutates_args=())
def layer_norm_bwd_op(
    dout: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(dx, dweight, dbias)``."""
    return layer_norm_bwd(dout, x, weight, mean, rstd)


@layer_norm_bwd_op.register_fake
def _(dout, x, weight, mean, rstd):
    return _fake_like(x), _fake_like(weight), _fake_like(weight)


@torch.library.custom_op("fastvit::add_layer_norm_fwd", mutates_args=())
def add_layer_norm_fwd_op(
    x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns ``(s, LN(s), mean, rstd)`` with ``s = x + y`` in ``x``'s dtype."""
    return layer_norm_fwd(x, weight, bias, eps, y)


@add_layer_norm_fwd_op.register_fake
def _(x, y, weight, bias, eps):
    return _fake_like(x), _fake_like(x), _fake_stats(x), _fake_stats(x)


@torch.library.custom_op("fastvit::add_layer_norm_bwd", mutates_args=())
def add_layer_norm_bwd_op(
    dout: Tensor, ds: Tensor, s: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(ds_total, dweight, dbias)``; ``ds_total = ds + dLN(s)/ds`` is the gradient of both x and y."""
    return layer_norm_bwd(dout, s, weight, mean, rstd, ds)


@add_layer_norm_bwd_op.register_fake
def _(dout, ds, s, weight, mean, rstd):
    return _fake_like(s), _fake_like(weight), _fake_like(weight)


def _layer_norm_setup(ctx, inputs, output):
    x, weight, *_ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)


def _layer_norm_backward(ctx, dout, _dmean, _drstd):
    dx, dweight, dbias = layer_norm_bwd_op(dout, *ctx.saved_tensors)
    return dx, dweight, dbias, None, None


def _add_layer_norm_setup(ctx, inputs, output):
    _, _, weight, _, _ = inputs
    s, _, mean, rstd = output
    ctx.save_for_backward(s, weight, mean, rstd)


def _add_layer_norm_backward(ctx, ds, dout, _dmean, _drstd):
    ds_total, dweight, dbias = add_layer_norm_bwd_op(dout, ds, *ctx.saved_tensors)
    return ds_total, ds_total, dweight, dbias, None


layer_norm_fwd_op.register_autograd(_layer_norm_backward, setup_context=_layer_norm_setup)
add_layer_norm_fwd_op.register_autograd(_add_layer_norm_backward, setup_context=_add_layer_norm_setup)


# --------------------------------------------------------------------------- public API


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-6, *, out_dtype: torch.dtype | None = None) -> Tensor:
    """LayerNorm over the last dim of ``x``. Saves ``x``, ``weight`` and fp32 mean/rstd for backward.

    The output has ``out_dtype`` (float32, float16 or bfloat16; default ``x``'s
    dtype); ``x``'s gradient comes back in ``x``'s dtype.
    """
    _check_inputs(x, weight, bias)
    return layer_norm_fwd_op(x, weight, bias, eps, _check_out_dtype(out_dtype, x))[0]


def __getattr__(name: str):
    """``layer_norm_fork`` (:mod:`.norm_fork`, which imports this module): part of layer_norm's contract."""
    if name == "layer_norm_fork":
        from fastvit.kernels.norm_fork import layer_norm_fork

        return layer_norm_fork
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_layer_norm(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Returns ``(s, LN(s))`` with ``s = x + y``. Saves ``s``, ``weight`` and fp32 mean/rstd for backward."""
    _check_inputs(x, weight, bias, y)
    s, out, _, _ = add_layer_norm_fwd_op(x, y, weight, bias, eps)
    return s, out


# --------------------------------------------------------------------------- contract (AOT cases: norm_aot)

_SUPPORT = f"fp32/fp16/bf16, width 0-{MAX_HIDDEN}, any strides, fp32 or x-dtype weights"
CONTRACT = (
    # layer_norm_fork (norm_fork.py): (LN(x), x), whose backward adds the residual's gradient in the kernel --
    # the same two kernels (layer_norm_fwd, add_layer_norm_bwd), so the same compile and benchmark cases
    # (norm_aot's "*_bwd-fp32-from-*" cases: its backward under autocast, fp32 stream and half dout)
    declare("layer_norm", __name__, ("layer_norm", "layer_norm_fork"), f"LayerNorm over the last dim, fwd+bwd; "
            f"{_SUPPORT}, output in any float dtype; _fork: (LN(x), x), residual grad added in LN's bwd", norm_support),
    declare("add_layer_norm", __name__, ("add_layer_norm",), f"(x + y, LayerNorm(x + y)) in one pass, fwd+bwd; "
            f"{_SUPPORT}", norm_support),
)  # fmt: skip
