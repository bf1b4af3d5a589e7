"""LayerNorm, residual-add + LayerNorm and a block norm's fork (Triton), forward and backward.

``layer_norm(x, weight, bias)`` normalizes over the last dim; ``add_layer_norm(x, y, weight, bias)``
returns ``(s, LN(s))`` with ``s = x + y`` from one pass; ``layer_norm_fork(x, weight, bias)`` returns
``(LN(x), x)``, whose backward adds the residual's gradient inside the LayerNorm backward kernel.
The same two kernels with ``IS_RMS`` compute RMSNorm (the op of :mod:`fastvit.kernels.rms`).
Inputs of any strides, fp32/fp16/bf16, width 0..4096 (:mod:`fastvit.kernels.ops`), fp32
statistics, no atomics. References: :mod:`fastvit.kernels.reference`; the accepted inputs,
numerics and launch shapes are described in docs/kernels.md. In order: tuning tables, kernels,
launchers, torch.library ops and fakes, autograd, argument checks, public functions.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastvit.kernels import tuning
from fastvit.kernels._rows import as_rows as _as_rows, as_two_level_rows as _as_two_level_rows, vector as _vector
from fastvit.kernels._rows import device_of as _device_of, out_buffer as _out_buffer
from fastvit.kernels.ops import FLOATS, MAX_HIDDEN, device_reason

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
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_RESIDUAL: tl.constexpr, IS_RMS: tl.constexpr = False,
):
    """OUT = LN(X) (or S = X + Y, OUT = LN(S)) over BLOCK_M rows; stores fp32 mean and rstd per row.
    ``IS_RMS``: RMSNorm, ``X * rsqrt(mean(X^2) + eps) * W`` (no mean, no bias; MEAN is not written)."""
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

    if IS_RMS:  # the mean square (masked columns loaded as 0)
        xc = x
    else:  # two passes over the row in registers: the mean, then the centred variance
        mean = tl.sum(x, axis=1) / N
        xc = tl.where(mask, x - mean[:, None], 0.0)
        tl.store(MEAN + rows, mean, mask=row_mask)
    var = tl.sum(xc * xc, axis=1) / N
    # A variance past fp32's range (|x - mean| above ~1.8e19) would give rstd = 0
    # and an output equal to the bias, finite and wrong: make it NaN, as torch does.
    rstd = tl.where(var == float("inf"), float("nan"), tl.rsqrt(var + eps))
    tl.store(RSTD + rows, rstd, mask=row_mask)

    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    out = xc * rstd[:, None] * w[None, :]
    if not IS_RMS:
        out += tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(OUT + rows64 * stride_out + cols[None, :], out.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _layer_norm_bwd_kernel(
    DOUT, DS, X, W, MEAN, RSTD, DX, DW_PARTIAL, DB_PARTIAL,
    stride_dout, stride_ds, stride_x, stride_dx,  # row strides in elements
    rows_inner, stride_x_inner,  # X's two-level rows, as in the forward
    M, N, rows_per_program,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DS: tl.constexpr, ROW_STAGES: tl.constexpr,
    IS_RMS: tl.constexpr = False,
):
    """DX = dLN/dX (+ DS) for one fixed range of rows; this program's dW, dB partial sums go to row pid.
    ``IS_RMS``: RMSNorm's (no mean, no dB: MEAN and DB_PARTIAL are not read or written)."""
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
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
        if IS_RMS:
            xhat = x * rstd[:, None]
        else:
            mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
            xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        wdout = dout * w[None, :]
        c1 = tl.sum(xhat * wdout, axis=1) / N
        if IS_RMS:
            dx = (wdout - xhat * c1[:, None]) * rstd[:, None]
        else:
            dx = (wdout - (xhat * c1[:, None] + (tl.sum(wdout, axis=1) / N)[:, None])) * rstd[:, None]
        if HAS_DS:
            dx += tl.load(DS + rows64 * stride_ds + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + rows64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)

        dw_acc += dout * xhat
        db_acc += dout

    tl.store(DW_PARTIAL + pid * N + cols, tl.sum(dw_acc, axis=0), mask=col_mask)
    if not IS_RMS:
        tl.store(DB_PARTIAL + pid * N + cols, tl.sum(db_acc, axis=0), mask=col_mask)


# Autotuned, under the kernels' own names (the raw @triton.jit functions are ``.fn``).
_layer_norm_fwd_kernel = triton.autotune(configs=tuning.autotune_configs(FWD_CONFIGS), key=["N", "HAS_RESIDUAL", "IS_RMS"])(
    _layer_norm_fwd_kernel
)
_layer_norm_bwd_kernel = triton.autotune(configs=tuning.autotune_configs(BWD_CONFIGS), key=["N", "HAS_DS", "IS_RMS"])(
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


def layer_norm_fwd(x, weight, bias, eps, y=None, *, s=None, out=None, mean=None, rstd=None, out_dtype=None, rms=False):
    """Run the forward kernel; returns ``(s, out, mean, rstd)`` (``s`` is None without ``y``).

    ``rms``: RMSNorm instead (``bias`` None, no ``y``; ``mean`` is None, not computed).
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
    rstd = _out_buffer(rstd, (m,), torch.float32, x.device)
    mean = None if rms else _out_buffer(mean, (m,), torch.float32, x.device)
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
        rstd.fill_(float("nan"))
        if mean is not None:
            mean.zero_()
        return s, out, mean, rstd
    block_m, block_n = block_sizes(n)
    with _device_of(x):
        _layer_norm_fwd_kernel[(triton.cdiv(m, block_m),)](
            x2, y2, _vector(weight), _vector(weight if rms else bias), s2, out2, rstd if rms else mean, rstd,
            stride_x, y2.stride(0), s2.stride(0), out2.stride(0),
            rows_inner, stride_inner,
            m, n, eps,
            BLOCK_M=block_m, BLOCK_N=block_n, HAS_RESIDUAL=y is not None, IS_RMS=rms,
        )
    return s, out, mean, rstd


def layer_norm_bwd(dout, x, weight, mean, rstd, ds=None, *, dx=None, partial=None):
    """Run the backward kernel; returns ``(dx, dweight, dbias)``. ``mean`` None: RMSNorm's (``dbias`` None).

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
    programs, per_program, rms = *bwd_num_programs(m, n, x.device), mean is None
    partial = _out_buffer(partial, (2, programs, n), torch.float32, x.device)
    ds2 = dout2 if ds is None else _as_rows(ds, n)  # unused by the kernel when HAS_DS is False
    if m and n:
        block_m, block_n = block_sizes(n)
        with _device_of(x):
            _layer_norm_bwd_kernel[(programs,)](
                dout2, ds2, x2, _vector(weight), _vector(rstd if rms else mean), _vector(rstd), dx2, partial[0],
                partial[1], dout2.stride(0), ds2.stride(0), stride_x, dx2.stride(0),
                rows_inner, stride_inner,
                m, n, per_program,
                BLOCK_M=block_m, BLOCK_N=block_n, HAS_DS=ds is not None, IS_RMS=rms,
            )
    dweight = partial[0].sum(dim=0).to(weight.dtype)
    dbias = None if rms else partial[1].sum(dim=0).to(weight.dtype)
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


class LayerNormFork(torch.autograd.Function):
    """``(LN(x), x)`` forward; ``dx = dLN(d_out) + d_residual`` in one backward launch."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        out, mean, rstd = layer_norm_fwd_op(x, weight, bias, eps, out_dtype)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.set_materialize_grads(False)
        return out, x  # autograd returns x as a view whose grad_fn is this Function

    @staticmethod
    def backward(ctx, dout, dresidual):
        x, weight, mean, rstd = ctx.saved_tensors
        if dout is None:  # only the residual was used: its gradient is x's
            return dresidual, None, None, None, None
        if dresidual is None:
            dx, dweight, dbias = layer_norm_bwd_op(dout, x, weight, mean, rstd)
        else:
            dx, dweight, dbias = add_layer_norm_bwd_op(dout, dresidual, x, weight, mean, rstd)
        return dx, dweight, dbias, None, None


# --------------------------------------------------------------------------- argument checks


def _check_inputs(x, weight, bias, y=None):
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        got = "a 0-dim tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x: expected a tensor with at least 1 dim, got {got}")
    if x.dtype not in FLOATS:
        raise TypeError(f"x: expected float32, float16 or bfloat16, got {x.dtype}")
    n = x.shape[-1]
    if not 0 <= n <= MAX_HIDDEN:
        raise ValueError(f"x: expected hidden size (last dim) in 0..{MAX_HIDDEN}, got {n}")
    if device_reason(x.device) is not None:
        raise ValueError(f"x: expected a CUDA tensor (or TRITON_INTERPRET=1 for CPU), got device {x.device}")
    if y is not None:
        if not isinstance(y, torch.Tensor) or y.dtype != x.dtype:
            got = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
            raise TypeError(f"y: expected a {x.dtype} tensor like x, got {got}")
        if y.shape != x.shape:
            raise ValueError(f"y: expected shape {tuple(x.shape)} like x, got {tuple(y.shape)}")
        if y.device != x.device:
            raise ValueError(f"y: expected device {x.device} like x, got {y.device}")
    for name, p in (("weight", weight), ("bias", bias)):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor of shape ({n},), got {type(p).__name__}")
        if p.shape != (n,):
            raise ValueError(f"{name}: expected shape ({n},) to match x's last dim, got {tuple(p.shape)}")
        if p.dtype not in (x.dtype, torch.float32):
            raise TypeError(f"{name}: expected {x.dtype} (x's dtype) or torch.float32, got {p.dtype}")
        if p.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} like x, got {p.device}")
    if bias.dtype != weight.dtype:
        raise TypeError(f"bias: expected weight's dtype {weight.dtype}, got {bias.dtype}")


def _check_out_dtype(out_dtype, x):
    """``layer_norm``'s ``out_dtype``: None (x's dtype) or a float dtype the kernels store; x's own dtype is None."""
    if out_dtype is not None and out_dtype not in FLOATS:
        raise TypeError(f"out_dtype: expected None, torch.float32, torch.float16 or torch.bfloat16, got {out_dtype}")
    return None if out_dtype == x.dtype else out_dtype


# --------------------------------------------------------------------------- public API


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-6, *, out_dtype: torch.dtype | None = None) -> Tensor:
    """LayerNorm over the last dim of ``x``. Saves ``x``, ``weight`` and fp32 mean/rstd for backward.

    The output has ``out_dtype`` (float32, float16 or bfloat16; default ``x``'s
    dtype); ``x``'s gradient comes back in ``x``'s dtype.
    """
    _check_inputs(x, weight, bias)
    return layer_norm_fwd_op(x, weight, bias, eps, _check_out_dtype(out_dtype, x))[0]


def add_layer_norm(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Returns ``(s, LN(s))`` with ``s = x + y``. Saves ``s``, ``weight`` and fp32 mean/rstd for backward."""
    _check_inputs(x, weight, bias, y)
    s, out, _, _ = add_layer_norm_fwd_op(x, y, weight, bias, eps)
    return s, out


def layer_norm_fork(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-6, *, out_dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """``(LN(x), x)``: the normalized input of a block's branch and the residual it keeps.

    The output has ``out_dtype`` (default ``x``'s); the residual is ``x``
    (same storage). Backward: ``x``'s gradient is LayerNorm's input gradient
    plus the residual's, from one kernel launch, in ``x``'s dtype.
    """
    _check_inputs(x, weight, bias)
    out_dtype = _check_out_dtype(out_dtype, x)
    return LayerNormFork.apply(x, weight, bias, eps, out_dtype)


# The op's kernels, by pass (the compile check and the GPU check's sweep read these).
KERNELS = {"fwd": _layer_norm_fwd_kernel, "bwd": _layer_norm_bwd_kernel}
