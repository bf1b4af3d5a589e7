"""Epilogue-fused GEMMs: ``gelu(x @ W^T + b)`` and ``residual + scale * (x @ W^T + b)``.

The two halves of a ViT MLP block. One tiled Triton GEMM computes ``x @ W^T``
in fp32 and, before the single store, adds the bias and then applies GELU
(exact erf or tanh) or adds the residual, so the pre-activation never makes an
extra round trip through memory in inference.

The residual epilogue serves training as well: the residual (and output) may
be fp32 while the GEMM runs in bf16/fp16, as under autocast with an fp32
residual stream, and an optional per-sample ``scale`` applies stochastic
depth (0 for a dropped sample, ``1/keep`` for a kept one) to the branch before
the add.

Backward:

- ``linear_gelu`` saves ``x``, ``W`` and the pre-activation ``h = x @ W^T + b``
  (option A: one extra M x N tensor in the input dtype, e.g. 310 MB for
  ViT-B fc1 at batch 256 in bf16 -- the same tensor eager PyTorch keeps for
  ``F.gelu``'s backward). The forward kernel writes ``h`` next to ``gelu(h)``
  only when a gradient will be needed, so inference pays nothing and the
  backward recomputes nothing. The backward runs one fused elementwise Triton
  kernel ``dh = dout * gelu'(h)``, then ``dx = dh @ W`` and ``dW = dh^T @ x``
  with ``torch.matmul`` (cuBLAS on a GPU), and ``db = dh.sum(0)`` accumulated
  in fp32. Nothing uses atomics, so gradients are deterministic.
- ``linear_residual`` saves ``x``, ``W`` and the (batch,) ``scale`` only:
  ``d_residual = dout``; with ``d = scale * dout`` in the input dtype (just
  ``dout`` without a scale and with matching dtypes), ``dx = d @ W``,
  ``dW = d^T @ x``, ``db = d.sum(0)``.

fp16 and bf16 inputs multiply on the tensor cores with an fp32 accumulator.
fp32 inputs multiply exactly (``input_precision="ieee"``) unless the caller
passes ``allow_tf32=True``.

Plain PyTorch twins: :func:`fastvit.kernels.reference.linear_gelu_ref` and
:func:`fastvit.kernels.reference.linear_residual_ref`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastvit.kernels import tuning
from fastvit.kernels.aot import AotCase

# Launch configurations of the GEMM, chosen for ViT-B MLP shapes
# (M = 256 * 197 = 50432 rows; K = 768, N = 3072 for fc1 and K = 3072, N = 768
# for fc2): large tiles for the big training GEMMs, a narrower one for small
# batches. Every entry
# - keeps at most 64 fp32 accumulators per thread
#   (BLOCK_M * BLOCK_N <= 64 * 32 * num_warps): with 128, the GELU epilogue
#   (erf + the extra store of h) spills registers on sm80 and sm90 alike, so
#   the 128x256 / 8-warp tile of plain GEMMs is not shipped;
# - has BLOCK_M >= 64 and a multiple of 4 warps, so it runs on wgmma on sm90.
# The "default" entry is also the one the interpreter runs in tests: its
# BLOCK_M * BLOCK_N * BLOCK_K stays at 2**19 because numpy hands larger
# products to multithreaded OpenBLAS, which is ~100x slower on a 2-core box.
GEMM_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4),
        dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4),
        dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
    ],
    "sm80": [
        dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, GROUP_M=8, num_warps=8, num_stages=4),
        dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
        dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=32, GROUP_M=8, num_warps=4, num_stages=4),
    ],
    "default": [
        dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=2),
    ],
}

# The elementwise GELU backward: one program per BLOCK elements.
GELU_BWD_CONFIG = dict(BLOCK=4096, num_warps=8)

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# Epilogues of the GEMM kernel, by name.
EPILOGUES = ("gelu", "gelu_tanh", "residual")
_GELU_EPILOGUE = {"none": "gelu", "tanh": "gelu_tanh"}

_SQRT_HALF = tl.constexpr(0.7071067811865476)  # 1 / sqrt(2)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1 / sqrt(2 pi)
_TANH_C = tl.constexpr(0.7978845608028654)  # sqrt(2 / pi), the tanh GELU's constants
_TANH_A = tl.constexpr(0.044715)


# ---------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------


@triton.jit(do_not_specialize=["M_BUCKET"])
def _linear_kernel(
    X, W, BIAS, RES, Y, PRE, SCALE,
    M, N, K,
    ROWS_PER_SCALE,  # rows sharing one SCALE entry (tokens per sample)
    M_BUCKET,  # autotune key only: M rounded up to a power of two
    stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_rm, stride_rn,
    stride_ym, stride_yn,
    EPILOGUE: tl.constexpr,  # "gelu" | "gelu_tanh" | "residual"
    STORE_PRE: tl.constexpr,  # also write h = x @ W^T + b to PRE (GELU epilogues)
    HAS_SCALE: tl.constexpr,  # residual epilogue: multiply the branch by SCALE[row // ROWS_PER_SCALE]
    INPUT_PRECISION: tl.constexpr,  # "ieee" or "tf32", used by fp32 operands
    DOT_IN_FP32: tl.constexpr,  # interpreter only: its bf16 tl.dot is wrong, its fp16 one slow
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M x BLOCK_N tile of Y = epilogue(X @ W^T + BIAS); W is (N, K).

    RES and Y may be wider (fp32) than X and W: the epilogue works in fp32.
    """
    # Grouped order: consecutive programs sweep GROUP_M row-blocks down one
    # column of tiles before moving right, so the W tiles they share stay in L2.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_pid_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Rows and columns past the edge wrap around, so loads in the K loop need
    # only a K mask; the wrapped results are never stored. int64 offsets:
    # M * K may exceed 2**31 for large batches.
    rows = (offs_m % M).to(tl.int64)
    cols = (offs_n % N).to(tl.int64)
    x_ptrs = X + rows[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = W + cols[None, :] * stride_wn + offs_k[:, None] * stride_wk
    x_step = BLOCK_K * stride_xk
    w_step = BLOCK_K * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_mask = offs_k < K - k * BLOCK_K
        a = tl.load(x_ptrs, mask=k_mask[None, :], other=0.0)
        b = tl.load(w_ptrs, mask=k_mask[:, None], other=0.0)
        if DOT_IN_FP32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        x_ptrs += x_step
        w_ptrs += w_step

    # Epilogue, all in fp32: bias, then GELU or residual, then one rounding.
    acc += tl.load(BIAS + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    out_rows = offs_m.to(tl.int64)[:, None]
    out_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    y_offs = out_rows * stride_ym + offs_n[None, :] * stride_yn
    if STORE_PRE:
        tl.store(PRE + y_offs, acc.to(PRE.dtype.element_ty), mask=out_mask)
    if EPILOGUE == "gelu":
        acc = 0.5 * acc * (1.0 + tl.erf(acc * _SQRT_HALF))
    elif EPILOGUE == "gelu_tanh":
        # 0.5 * (1 + tanh(u)) == sigmoid(2u)
        u = _TANH_C * (acc + _TANH_A * acc * acc * acc)
        acc = acc * tl.sigmoid(2.0 * u)
    else:  # "residual"
        if HAS_SCALE:
            acc *= tl.load(SCALE + rows // ROWS_PER_SCALE).to(tl.float32)[:, None]
        r_ptrs = RES + out_rows * stride_rm + offs_n[None, :] * stride_rn
        acc += tl.load(r_ptrs, mask=out_mask, other=0.0).to(tl.float32)
    tl.store(Y + y_offs, acc.to(Y.dtype.element_ty), mask=out_mask)


@triton.jit
def _gelu_bwd_kernel(
    DOUT, PRE, DH,
    numel,
    APPROXIMATE: tl.constexpr,  # "none" (erf) | "tanh"
    BLOCK: tl.constexpr,
):  # fmt: skip
    """DH = DOUT * gelu'(PRE) over contiguous flat tensors, computed in fp32."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    h = tl.load(PRE + offs, mask=mask, other=0.0).to(tl.float32)
    dout = tl.load(DOUT + offs, mask=mask, other=0.0).to(tl.float32)
    if APPROXIMATE == "tanh":
        # gelu(h) = h * s with s = sigmoid(2u), u = c * (h + a h^3);
        # d/dh = s + 2 h s (1 - s) * c * (1 + 3 a h^2).
        u = _TANH_C * (h + _TANH_A * h * h * h)
        s = tl.sigmoid(2.0 * u)
        grad = s + 2.0 * h * s * (1.0 - s) * _TANH_C * (1.0 + 3.0 * _TANH_A * h * h)
    else:
        # d/dh [h * Phi(h)] = Phi(h) + h * phi(h)
        cdf = 0.5 * (1.0 + tl.erf(h * _SQRT_HALF))
        pdf = _INV_SQRT_2PI * tl.exp(-0.5 * h * h)
        grad = cdf + h * pdf
    tl.store(DH + offs, (dout * grad).to(DH.dtype.element_ty), mask=mask)


_linear_kernel_tuned = triton.autotune(
    configs=tuning.autotune_configs(GEMM_CONFIGS),
    key=["M_BUCKET", "N", "K", "EPILOGUE", "STORE_PRE"],
)(_linear_kernel)


# ---------------------------------------------------------------------------
# Launchers (2-D inputs; outputs optionally preallocated)
# ---------------------------------------------------------------------------


def _out_buffer(buf, like: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    if buf is None:
        return like.new_empty(shape)
    if buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device or not buf.is_contiguous():
        raise ValueError(
            f"{name}: expected a contiguous {like.dtype} tensor of shape {shape} on {like.device}, "
            f"got {buf.dtype} {tuple(buf.shape)} on {buf.device} (contiguous={buf.is_contiguous()})"
        )
    return buf


def _launch_gemm(x, weight, bias, epilogue, *, residual, y, pre, allow_tf32, scale=None):
    M, K = x.shape
    N = weight.shape[0]
    bias = bias.contiguous()
    res = y if residual is None else residual
    pre_buf = y if pre is None else pre
    scale_buf = bias if scale is None else scale
    rows_per_scale = 1 if scale is None else M // scale.shape[0]

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    _linear_kernel_tuned[grid](
        x, weight, bias, res, y, pre_buf, scale_buf,
        M, N, K, rows_per_scale, triton.next_power_of_2(M),
        x.stride(0), x.stride(1),
        weight.stride(0), weight.stride(1),
        res.stride(0), res.stride(1),
        y.stride(0), y.stride(1),
        EPILOGUE=epilogue,
        STORE_PRE=pre is not None,
        HAS_SCALE=scale is not None,
        INPUT_PRECISION="tf32" if allow_tf32 else "ieee",
        DOT_IN_FP32=tuning.interpreting() and x.dtype != torch.float32,
    )  # fmt: skip


def linear_gelu_launch(x, weight, bias, approximate="none", *, save_pre=False, allow_tf32=False, out=None, pre=None):
    """Launch the GEMM with the GELU epilogue on 2-D ``x`` (M, K).

    Returns ``(gelu(h), h)`` where ``h = x @ weight^T + bias``; ``h`` is written
    only when ``save_pre`` (otherwise an empty tensor is returned in its place).
    ``out`` / ``pre`` may be preallocated contiguous (M, N) buffers.
    """
    M, N = x.shape[0], weight.shape[0]
    y = _out_buffer(out, x, (M, N), "out")
    h = _out_buffer(pre, x, (M, N), "pre") if save_pre else x.new_empty((0,))
    if y.numel() > 0:
        _launch_gemm(
            x, weight, bias, _GELU_EPILOGUE[approximate],
            residual=None, y=y, pre=h if save_pre else None, allow_tf32=allow_tf32,
        )  # fmt: skip
    return y, h


def linear_residual_launch(x, weight, bias, residual, scale=None, *, allow_tf32=False, out=None):
    """Launch the GEMM with the residual epilogue on 2-D ``x`` (M, K) and ``residual`` (M, N).

    The output has ``residual``'s dtype. ``scale``, if given, is a contiguous
    fp32 (S,) tensor with S dividing M: rows ``[i * M/S, (i+1) * M/S)`` of the
    branch are multiplied by ``scale[i]``.
    """
    M, N = x.shape[0], weight.shape[0]
    y = _out_buffer(out, residual, (M, N), "out")
    if y.numel() > 0:
        _launch_gemm(
            x, weight, bias, "residual", residual=residual, y=y, pre=None, allow_tf32=allow_tf32, scale=scale
        )
    return y


def gelu_bwd_launch(grad, pre, approximate="none", *, out=None):
    """``grad * gelu'(pre)`` elementwise, in ``pre``'s dtype; ``out`` may be preallocated."""
    grad = grad.contiguous()
    pre = pre.contiguous()
    dh = _out_buffer(out, pre, tuple(pre.shape), "out")
    numel = pre.numel()
    if numel > 0:
        block = GELU_BWD_CONFIG["BLOCK"]
        _gelu_bwd_kernel[(triton.cdiv(numel, block),)](
            grad, pre, dh, numel, APPROXIMATE=approximate, BLOCK=block, num_warps=GELU_BWD_CONFIG["num_warps"]
        )
    return dh


# ---------------------------------------------------------------------------
# torch.library registration: custom ops, fake implementations, autograd
# ---------------------------------------------------------------------------


@torch.library.custom_op("fastvit::linear_gelu_fwd", mutates_args=())
def linear_gelu_fwd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, approximate: str, save_pre: bool, allow_tf32: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gelu(h), h if save_pre else empty)`` for 2-D ``x``; see :func:`linear_gelu_launch`."""
    return linear_gelu_launch(x, weight, bias, approximate, save_pre=save_pre, allow_tf32=allow_tf32)


@linear_gelu_fwd.register_fake
def _(x, weight, bias, approximate, save_pre, allow_tf32):
    shape = (x.shape[0], weight.shape[0])
    return x.new_empty(shape), x.new_empty(shape if save_pre else (0,))


@torch.library.custom_op("fastvit::linear_residual_fwd", mutates_args=())
def linear_residual_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor,
    scale: torch.Tensor | None,
    allow_tf32: bool,
) -> torch.Tensor:
    """``residual + scale * (x @ weight^T + bias)`` for 2-D ``x`` and ``residual``; see the launcher."""
    return linear_residual_launch(x, weight, bias, residual, scale, allow_tf32=allow_tf32)


@linear_residual_fwd.register_fake
def _(x, weight, bias, residual, scale, allow_tf32):
    return residual.new_empty((x.shape[0], weight.shape[0]))


@torch.library.custom_op("fastvit::gelu_bwd", mutates_args=())
def gelu_bwd(grad: torch.Tensor, pre: torch.Tensor, approximate: str) -> torch.Tensor:
    """``grad * gelu'(pre)``, contiguous, in ``pre``'s dtype."""
    return gelu_bwd_launch(grad, pre, approximate)


@gelu_bwd.register_fake
def _(grad, pre, approximate):
    return torch.empty_like(pre, memory_format=torch.contiguous_format)


def _linear_grads(ctx, dh, x, weight):
    """(dx, dW, db) of ``h = x @ W^T + b`` given ``dh``; torch.matmul, fp32 bias sum."""
    dx = dh @ weight if ctx.needs_input_grad[0] else None
    dw = dh.t() @ x if ctx.needs_input_grad[1] else None
    db = dh.sum(0, dtype=torch.float32).to(dh.dtype) if ctx.needs_input_grad[2] else None
    return dx, dw, db


def _linear_gelu_setup(ctx, inputs, output):
    x, weight, _, approximate, save_pre, _ = inputs
    _, pre = output
    ctx.mark_non_differentiable(pre)
    ctx.set_materialize_grads(False)
    ctx.approximate = approximate
    ctx.save_pre = save_pre
    ctx.save_for_backward(x, weight, pre)


def _linear_gelu_backward(ctx, grad_out, _grad_pre):
    if grad_out is None:
        return None, None, None, None, None, None
    if not ctx.save_pre:
        raise RuntimeError(
            "fastvit::linear_gelu_fwd was called with save_pre=False, so its backward has no pre-activation; "
            "call fastvit.kernels.linear_gelu, which saves it whenever a gradient is needed"
        )
    x, weight, pre = ctx.saved_tensors
    dh = gelu_bwd(grad_out, pre, ctx.approximate)
    return (*_linear_grads(ctx, dh, x, weight), None, None, None)


linear_gelu_fwd.register_autograd(_linear_gelu_backward, setup_context=_linear_gelu_setup)


def _linear_residual_setup(ctx, inputs, output):
    x, weight, _, _, scale, _ = inputs
    ctx.save_for_backward(x, weight, scale)


def _linear_residual_backward(ctx, grad_out):
    x, weight, scale = ctx.saved_tensors
    d_branch = grad_out
    if scale is not None and scale.shape[0] > 0:
        rows, n = grad_out.shape
        d_branch = (grad_out.view(scale.shape[0], rows // scale.shape[0], n) * scale[:, None, None]).view(rows, n)
    dx, dw, db = _linear_grads(ctx, d_branch.to(x.dtype), x, weight)
    return dx, dw, db, grad_out if ctx.needs_input_grad[3] else None, None, None


linear_residual_fwd.register_autograd(_linear_residual_backward, setup_context=_linear_residual_setup)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------


def _check_linear_args(fn: str, x, weight, bias) -> None:
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{fn}: x must be float16, bfloat16 or float32, got {x.dtype}")
    if x.device.type != "cuda" and not tuning.interpreting():
        raise ValueError(f"{fn}: x must be a CUDA tensor (or TRITON_INTERPRET=1 on CPU), got device {x.device}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t.dtype != x.dtype:
            raise TypeError(f"{fn}: {name} must have x's dtype {x.dtype}, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{fn}: {name} must be on x's device {x.device}, got {t.device}")
    if x.dim() < 1:
        raise ValueError(f"{fn}: x must have at least one dimension (..., in_features), got a 0-d tensor")
    if weight.dim() != 2:
        raise ValueError(f"{fn}: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{fn}: x's last dimension must equal weight's in_features {weight.shape[1]}, "
            f"got x of shape {tuple(x.shape)}"
        )
    if bias.shape != (weight.shape[0],):
        raise ValueError(
            f"{fn}: bias must have shape (out_features,) = ({weight.shape[0]},), got {tuple(bias.shape)}"
        )


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a 2-D (rows, features) matrix; a view when the strides allow."""
    return t.reshape(t.shape[:-1].numel(), t.shape[-1])


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def linear_gelu(x, weight, bias, approximate="none", *, allow_tf32=False):
    """``gelu(x @ weight^T + bias)`` fused in one GEMM; ``weight`` is (out_features, in_features).

    ``x`` may have any leading dimensions. ``approximate`` is "none" (exact erf,
    the default) or "tanh", as in :func:`torch.nn.functional.gelu`. fp32 inputs
    use tf32 tensor cores only with ``allow_tf32=True``.

    When a gradient is needed, the pre-activation ``h`` (same shape and dtype
    as the output) is saved for backward along with ``x`` and ``weight``.
    """
    _check_linear_args("linear_gelu", x, weight, bias)
    if approximate not in _GELU_EPILOGUE:
        raise ValueError(f"linear_gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    out, _ = linear_gelu_fwd(_rows(x), weight, bias, approximate, _needs_grad(x, weight, bias), allow_tf32)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def linear_residual(x, weight, bias, residual, *, scale=None, allow_tf32=False):
    """``residual + x @ weight^T + bias`` fused in one GEMM; ``weight`` is (out_features, in_features).

    ``x`` may have any leading dimensions; ``residual`` has the output's shape
    (``x.shape[:-1] + (out_features,)``) and either ``x``'s dtype or float32
    (an fp32 residual stream under autocast); the output has ``residual``'s
    dtype and the add happens in fp32.

    ``scale`` (optional, shape ``(x.shape[0],)``, no gradient) multiplies each
    sample's branch before the add -- stochastic depth passes 0 for a dropped
    sample and ``1/keep`` for a kept one: the result is
    ``residual + scale[i] * (x[i] @ weight^T + bias)``.

    Saves only ``x``, ``weight`` and ``scale`` for backward. fp32 inputs use
    tf32 tensor cores only with ``allow_tf32=True``.
    """
    _check_linear_args("linear_residual", x, weight, bias)
    if not isinstance(residual, torch.Tensor):
        raise TypeError(f"linear_residual: residual must be a torch.Tensor, got {type(residual).__name__}")
    out_shape = (*x.shape[:-1], weight.shape[0])
    if residual.shape != out_shape:
        raise ValueError(
            f"linear_residual: residual must have the output's shape {out_shape}, got {tuple(residual.shape)}"
        )
    if residual.dtype not in (x.dtype, torch.float32):
        raise TypeError(
            f"linear_residual: residual must have x's dtype ({x.dtype}) or torch.float32, got {residual.dtype}"
        )
    if residual.device != x.device:
        raise ValueError(f"linear_residual: residual must be on x's device {x.device}, got {residual.device}")
    if scale is not None:
        scale = _check_scale(scale, x)
    out = linear_residual_fwd(_rows(x), weight, bias, _rows(residual), scale, allow_tf32)
    return out.reshape(out_shape)


def _check_scale(scale, x) -> torch.Tensor:
    """``scale`` as a contiguous fp32 (x.shape[0],) tensor, or a clear error."""
    if not isinstance(scale, torch.Tensor):
        raise TypeError(f"linear_residual: scale must be a torch.Tensor or None, got {type(scale).__name__}")
    if x.dim() < 2 or scale.shape != (x.shape[0],):
        raise ValueError(
            f"linear_residual: scale must have shape (x.shape[0],) for x of shape (batch, ..., in_features), "
            f"got scale {tuple(scale.shape)} and x {tuple(x.shape)}"
        )
    if not scale.is_floating_point():
        raise TypeError(f"linear_residual: scale must be a floating-point tensor, got {scale.dtype}")
    if scale.device != x.device:
        raise ValueError(f"linear_residual: scale must be on x's device {x.device}, got {scale.device}")
    if scale.requires_grad and torch.is_grad_enabled():
        raise ValueError("linear_residual: scale receives no gradient; pass scale.detach()")
    return scale.to(torch.float32).contiguous()


# ---------------------------------------------------------------------------
# Ahead-of-time compile cases
# ---------------------------------------------------------------------------


# Compiled as Triton specializes ViT-B's contiguous, 16-byte aligned tensors
# at launch: unit strides become constants, and pointers, K, N and the row
# strides are divisible by 16 (M = batch * 197 need not be).
_UNIT_STRIDES = ("stride_xk", "stride_wk", "stride_rn", "stride_yn")
_DIVISIBLE = ("X", "W", "BIAS", "RES", "Y", "PRE", "SCALE", "N", "K", "stride_xm", "stride_wn", "stride_rm", "stride_ym")


def _gemm_signature(dtype: str, residual_dtype: str | None = None) -> dict:
    """Argument types of ``_linear_kernel`` as launched on ``dtype`` tensors
    (with a ``residual_dtype`` residual and output, default ``dtype``)."""
    types = dict.fromkeys(("X", "W", "BIAS", "PRE"), f"*{dtype}")
    types |= dict.fromkeys(("RES", "Y"), f"*{residual_dtype or dtype}")
    types["SCALE"] = "*fp32"
    names = ("M", "N", "K", "ROWS_PER_SCALE", "M_BUCKET", "stride_xm", "stride_wn", "stride_rm", "stride_ym")
    types |= dict.fromkeys(names, "i32")
    return {name: types.get(name, "constexpr") for name in _linear_kernel.arg_names}


def aot_cases() -> list[AotCase]:
    """AOT compile cases for every shipped kernel.

    The GEMM: each epilogue x each config of sm80 and sm90 (plus the "default"
    entries, on both) x {bf16, fp16}. The exact-erf GELU is compiled as in
    training (also storing h), the tanh one as in inference, so both values of
    STORE_PRE are covered without doubling the case count. The residual
    epilogue is compiled twice: as in inference (residual in the input dtype)
    and as in training under autocast with stochastic depth (fp32 residual and
    output, per-sample scale). Plus the GELU backward kernel, which has no
    matrix product.
    """
    cases = []
    for dtype in ("bf16", "fp16"):
        for arch in ("sm80", "sm90"):
            for entry in GEMM_CONFIGS[arch] + GEMM_CONFIGS["default"]:
                meta, launch = tuning.split(entry)
                tile = "x".join(str(meta[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
                for epilogue in EPILOGUES:
                    constexprs = dict(
                        meta,
                        **dict.fromkeys(_UNIT_STRIDES, 1),
                        EPILOGUE=epilogue,
                        STORE_PRE=epilogue == "gelu",
                        HAS_SCALE=False,
                        INPUT_PRECISION="ieee",
                        DOT_IN_FP32=False,
                    )
                    name, signature = f"linear_{epilogue}-{dtype}-{tile}", _gemm_signature(dtype)
                    case = AotCase(name, _linear_kernel, signature, constexprs, arch, divisible=_DIVISIBLE, **launch)
                    cases.append(case)
                    if epilogue == "residual":
                        # Training under autocast with stochastic depth: fp32 residual stream, per-sample scale.
                        signature = _gemm_signature(dtype, residual_dtype="fp32")
                        name = f"linear_residual_scaled_fp32res-{dtype}-{tile}"
                        constexprs = dict(constexprs, HAS_SCALE=True)
                        case = AotCase(name, _linear_kernel, signature, constexprs, arch, divisible=_DIVISIBLE, **launch)
                        cases.append(case)
            for approximate in ("none", "tanh"):
                signature = dict.fromkeys(("DOUT", "PRE", "DH"), f"*{dtype}")
                signature |= {"numel": "i32", "APPROXIMATE": "constexpr", "BLOCK": "constexpr"}
                cases.append(
                    AotCase(
                        name=f"gelu_bwd_{approximate}-{dtype}",
                        fn=_gelu_bwd_kernel,
                        signature=signature,
                        constexprs=dict(APPROXIMATE=approximate, BLOCK=GELU_BWD_CONFIG["BLOCK"]),
                        arch=arch,
                        num_warps=GELU_BWD_CONFIG["num_warps"],
                        num_stages=1,
                        tensor_core_op=None,
                    )
                )
    return cases
