"""Epilogue-fused GEMMs: ``gelu(x @ W^T + b)`` and ``residual + scale * gamma * (x @ W^T + b)``.

The two halves of a ViT MLP block. One tiled Triton GEMM computes ``x @ W^T``
in fp32 and, before the single store, adds the bias and then applies GELU
(exact erf, tanh, or CLIP's quick GELU ``h * sigmoid(1.702 h)``) or adds the
residual, so the pre-activation never makes an extra round trip through memory
in inference.

The residual epilogue serves training as well: the residual (and output) may
be fp32 while the GEMM runs in bf16/fp16, as under autocast with an fp32
residual stream; an optional per-sample ``scale`` applies stochastic depth (0
for a dropped sample, ``1/keep`` for a kept one) and an optional per-channel
``gamma`` LayerScale (DINOv2, DeiT III), both to the branch before the add.

Backward (:mod:`fastvit.kernels.linear_bwd`):

- ``linear_gelu`` saves ``x``, ``W`` and the pre-activation ``h = x @ W^T + b``
  (one extra M x N tensor in the input dtype, e.g. 310 MB for ViT-B fc1 at
  batch 256 in bf16 -- the same tensor eager PyTorch keeps for ``F.gelu``'s
  backward). The forward kernel writes ``h`` next to ``gelu(h)`` only when a
  gradient will be needed, so inference pays nothing and the backward
  recomputes nothing. ``dh = dout * gelu'(h)`` is one elementwise Triton
  kernel, then ``dx``, ``dW`` with ``torch.matmul`` (cuBLAS on a GPU), ``db``
  accumulated in fp32. Nothing uses atomics, so gradients are deterministic.
- ``linear_residual`` saves ``x``, ``W``, ``scale`` (and ``b``, ``gamma`` with
  a LayerScale): ``d_residual = dout``; the branch gradients, ``dgamma``
  included, come from one ``d^T @ x`` GEMM (see ``linear_bwd``).

The same kernel with a gradient epilogue, :func:`fastvit.kernels.mlp.mlp_residual_bwd_dh`,
computes ``(d @ W2) * gelu'(h)`` for :mod:`fastvit.kernels.mlp`'s fused backward. Any
strides are honoured (x, weight and residual are read through their strides,
bias, scale and gamma made contiguous); :mod:`linear_checks` holds the argument
checks, :mod:`gemm_epilogue` the epilogue code shared with the Hopper TMA
candidate (:mod:`linear_tma`), :mod:`fastvit.aot.linear` the compile cases.

Names (the scheme of docs/kernels.md): the kernel ``_linear_fwd_kernel``;
launchers :func:`linear_gelu_fwd`, :func:`linear_residual_fwd`; ops
``fastvit::linear_gelu_fwd``, ``fastvit::linear_residual_fwd``; public
:func:`linear_gelu`, :func:`linear_residual`.

fp16 and bf16 inputs multiply on the tensor cores with an fp32 accumulator
(and so does the interpreter: see :func:`dot_in_fp32`). fp32 inputs multiply
exactly (``input_precision="ieee"``) unless the caller passes ``allow_tf32=True``.

Plain PyTorch twins: :func:`fastvit.kernels.reference.linear_gelu_ref` and
:func:`fastvit.kernels.reference.linear_residual_ref`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastvit.kernels import linear_bwd, tuning
from fastvit.kernels.gemm_epilogue import (
    FORWARD_EPILOGUES, GELU_EPILOGUE, add_bias, check_approximate, finish, grouped_tile,
)  # fmt: skip
from fastvit.kernels.linear_checks import (
    check_gamma, check_linear_args, check_residual, check_scale, needs_grad as _needs_grad, out_buffer, rows as _rows,
)  # fmt: skip

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

# Epilogues of the forward GEMM kernel, by name (the gradient epilogues: gemm_epilogue.GRAD_EPILOGUES).
EPILOGUES = FORWARD_EPILOGUES

# ---------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------


@triton.jit
def _grad_half(acc, offs_m, col0, M, N, PRE, stride_pm, stride_pn, Y, stride_ym, stride_yn,
               EPILOGUE: tl.constexpr, HALF: tl.constexpr):  # fmt: skip
    """Store ``acc * gelu'(PRE)`` for columns ``[col0, col0 + HALF)``."""
    offs_n = col0 + tl.arange(0, HALF)
    acc = finish(acc, offs_m, offs_n, M, N, PRE, stride_pm, stride_pn, PRE, 1, PRE, EPILOGUE, False, False)
    y_offs = offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(Y + y_offs, acc.to(Y.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit(do_not_specialize=["M_BUCKET"])
def _linear_fwd_kernel(
    X, W, BIAS, RES, Y, PRE, SCALE, GAMMA,
    M, N, K,
    ROWS_PER_SCALE,  # rows sharing one SCALE entry (tokens per sample)
    M_BUCKET,  # autotune key only: M rounded up to a power of two
    stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_rm, stride_rn,
    stride_ym, stride_yn,
    EPILOGUE: tl.constexpr,  # gemm_epilogue.FORWARD_EPILOGUES or GRAD_EPILOGUES
    HAS_BIAS: tl.constexpr,  # False only for the gradient epilogues
    STORE_PRE: tl.constexpr,  # also write h = x @ W^T + b to PRE (GELU epilogues)
    HAS_SCALE: tl.constexpr,  # residual epilogue: multiply the branch by SCALE[row // ROWS_PER_SCALE]
    HAS_GAMMA: tl.constexpr,  # residual epilogue: multiply the branch by GAMMA[col] (LayerScale)
    INPUT_PRECISION: tl.constexpr,  # "ieee" or "tf32", used by fp32 operands
    DOT_IN_FP32: tl.constexpr,  # interpreter only: its bf16 tl.dot is wrong, its fp16 one slow
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M x BLOCK_N tile of Y = epilogue(X @ W^T + BIAS); W is (N, K).

    RES and Y may be wider (fp32) than X and W: the epilogue works in fp32.
    The gradient epilogues (the dh pass of :mod:`mlp`'s backward) read the
    saved pre-activation through RES (with its strides) and write
    ``(X @ W^T) * gelu'(RES)``.
    """
    # Grouped order: consecutive programs sweep GROUP_M row-blocks down one
    # column of tiles before moving right, so the W tiles they share stay in L2.
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)

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

    if EPILOGUE == "gelu_grad" or EPILOGUE == "gelu_tanh_grad" or EPILOGUE == "gelu_quick_grad":
        # GELU's derivative needs erf and exp on a second tile (the saved h): done on two column
        # halves one after the other, it stays in registers (whole-tile: 255 registers, stack in use).
        HALF: tl.constexpr = BLOCK_N // 2
        left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, HALF)), (0, 2, 1)))
        col0 = pid_n * BLOCK_N
        _grad_half(left, offs_m, col0, M, N, RES, stride_rm, stride_rn, Y, stride_ym, stride_yn, EPILOGUE, HALF)
        _grad_half(right, offs_m, col0 + HALF, M, N, RES, stride_rm, stride_rn, Y, stride_ym, stride_yn,
                   EPILOGUE, HALF)  # fmt: skip
        return
    # Epilogue, all in fp32: bias, then GELU or residual, then one rounding.
    acc = add_bias(acc, offs_n, N, BIAS, HAS_BIAS)
    out_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    y_offs = offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :] * stride_yn
    if STORE_PRE:
        tl.store(PRE + y_offs, acc.to(PRE.dtype.element_ty), mask=out_mask)
    acc = finish(acc, offs_m, offs_n, M, N, RES, stride_rm, stride_rn, SCALE, ROWS_PER_SCALE, GAMMA, EPILOGUE,
                 HAS_SCALE, HAS_GAMMA)  # fmt: skip
    tl.store(Y + y_offs, acc.to(Y.dtype.element_ty), mask=out_mask)


_linear_fwd_kernel_tuned = triton.autotune(
    configs=tuning.autotune_configs(GEMM_CONFIGS),
    key=["M_BUCKET", "N", "K", "EPILOGUE", "STORE_PRE", "HAS_SCALE", "HAS_GAMMA"],
)(_linear_fwd_kernel)


# ---------------------------------------------------------------------------
# Launchers (2-D inputs; outputs optionally preallocated)
# ---------------------------------------------------------------------------


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """Whether the GEMM kernels upcast their fp16/bf16 ``tl.dot`` operands to fp32.

    Only under the interpreter, where ``tl.dot`` runs as a numpy matmul: on bf16
    that returns garbage, and numpy's fp16 matmul rounds differently on
    different CPUs (a partial sum past 65504 overflowed to inf on an AMD EPYC
    without AVX-512 and stayed finite on a Xeon). The GPU multiplies fp16/bf16
    exactly and accumulates in fp32, which is what fp32 operands compute, so
    the upcast makes the interpreter produce the GPU's result on every host.
    """
    return tuning.interpreting() and dtype != torch.float32


def launch_gemm(x, weight, bias, epilogue, *, residual, y, pre, allow_tf32, scale=None, gamma=None):
    """``y = epilogue(x @ weight^T + bias)`` for 2-D tensors of any strides.

    ``residual`` is the residual ("residual") or the saved pre-activation (the
    gradient epilogues); ``bias`` may be None (no bias); ``gamma`` a
    contiguous (N,) LayerScale of the residual epilogue.
    """
    M, K = x.shape
    N = weight.shape[0]
    bias_buf = y if bias is None else bias.contiguous()
    res = y if residual is None else residual
    pre_buf = y if pre is None else pre
    scale_buf = bias_buf if scale is None else scale
    gamma_buf = bias_buf if gamma is None else gamma
    rows_per_scale = 1 if scale is None else M // scale.shape[0]

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    _linear_fwd_kernel_tuned[grid](
        x, weight, bias_buf, res, y, pre_buf, scale_buf, gamma_buf,
        M, N, K, rows_per_scale, triton.next_power_of_2(M),
        x.stride(0), x.stride(1),
        weight.stride(0), weight.stride(1),
        res.stride(0), res.stride(1),
        y.stride(0), y.stride(1),
        EPILOGUE=epilogue,
        HAS_BIAS=bias is not None,
        STORE_PRE=pre is not None,
        HAS_SCALE=scale is not None,
        HAS_GAMMA=gamma is not None,
        INPUT_PRECISION="tf32" if allow_tf32 else "ieee",
        DOT_IN_FP32=dot_in_fp32(x.dtype),
    )  # fmt: skip


def linear_gelu_fwd(x, weight, bias, approximate="none", *, save_pre=False, allow_tf32=False, out=None, pre=None):
    """Launch the GEMM with the GELU epilogue on 2-D ``x`` (M, K).

    Returns ``(gelu(h), h)`` where ``h = x @ weight^T + bias``; ``h`` is written
    only when ``save_pre`` (otherwise an empty tensor is returned in its place).
    ``out`` / ``pre`` may be preallocated contiguous (M, N) buffers.
    """
    M, N = x.shape[0], weight.shape[0]
    y = out_buffer(out, x, (M, N), "out")
    h = out_buffer(pre, x, (M, N), "pre") if save_pre else x.new_empty((0,))
    if y.numel() > 0:
        launch_gemm(
            x, weight, bias, GELU_EPILOGUE[approximate],
            residual=None, y=y, pre=h if save_pre else None, allow_tf32=allow_tf32,
        )  # fmt: skip
    return y, h


def linear_residual_fwd(x, weight, bias, residual, scale=None, gamma=None, *, allow_tf32=False, out=None):
    """Launch the GEMM with the residual epilogue on 2-D ``x`` (M, K) and ``residual`` (M, N).

    The output has ``residual``'s dtype. ``scale``, if given, is a contiguous
    fp32 (S,) tensor with S dividing M: rows ``[i * M/S, (i+1) * M/S)`` of the
    branch are multiplied by ``scale[i]``. ``gamma``, if given, is a contiguous
    (N,) tensor multiplying column ``j`` of the branch (LayerScale).
    """
    M, N = x.shape[0], weight.shape[0]
    y = out_buffer(out, residual, (M, N), "out")
    if y.numel() > 0:
        launch_gemm(x, weight, bias, "residual", residual=residual, y=y, pre=None, allow_tf32=allow_tf32,
                     scale=scale, gamma=gamma)  # fmt: skip
    return y


# ---------------------------------------------------------------------------
# torch.library registration: custom ops, fake implementations, autograd (linear_bwd)
# ---------------------------------------------------------------------------


@torch.library.custom_op("fastvit::linear_gelu_fwd", mutates_args=())
def _linear_gelu_fwd_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, approximate: str, save_pre: bool, allow_tf32: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gelu(h), h if save_pre else empty)`` for 2-D ``x``; see :func:`linear_gelu_fwd`."""
    return linear_gelu_fwd(x, weight, bias, approximate, save_pre=save_pre, allow_tf32=allow_tf32)


@_linear_gelu_fwd_op.register_fake
def linear_gelu_fake(x, weight, bias, approximate, save_pre, allow_tf32):
    """Output shapes of the fused forwards, this kernel's and the TMA candidate's (linear_tma)."""
    shape = (x.shape[0], weight.shape[0])
    return x.new_empty(shape), x.new_empty(shape if save_pre else (0,))


@torch.library.custom_op("fastvit::linear_residual_fwd", mutates_args=())
def _linear_residual_fwd_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor,
    scale: torch.Tensor | None,
    gamma: torch.Tensor | None,
    allow_tf32: bool,
) -> torch.Tensor:
    """``residual + scale * gamma * (x @ weight^T + bias)`` for 2-D ``x`` and ``residual``; see the launcher."""
    return linear_residual_fwd(x, weight, bias, residual, scale, gamma, allow_tf32=allow_tf32)


@_linear_residual_fwd_op.register_fake
def linear_residual_fake(x, weight, bias, residual, scale, gamma, allow_tf32):
    return residual.new_empty((x.shape[0], weight.shape[0]))


_linear_gelu_fwd_op.register_autograd(linear_bwd.linear_gelu_backward, setup_context=linear_bwd.linear_gelu_setup)
_linear_residual_fwd_op.register_autograd(linear_bwd.linear_residual_backward,
                                          setup_context=linear_bwd.linear_residual_setup)  # fmt: skip


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------


def linear_gelu(x, weight, bias, approximate="none", *, allow_tf32=False):
    """``gelu(x @ weight^T + bias)`` fused in one GEMM; ``weight`` is (out_features, in_features).

    ``x`` may have any leading dimensions. ``approximate`` is "none" (exact erf,
    the default) or "tanh", as in :func:`torch.nn.functional.gelu`, or "quick"
    (``h * sigmoid(1.702 h)``, CLIP's quick GELU). fp32 inputs use tf32
    tensor cores only with ``allow_tf32=True``.

    When a gradient is needed, the pre-activation ``h`` (same shape and dtype
    as the output) is saved for backward along with ``x`` and ``weight``.
    """
    check_linear_args("linear_gelu", x, weight, bias)
    check_approximate("linear_gelu", approximate)
    out, _ = _linear_gelu_fwd_op(_rows(x), weight, bias, approximate, _needs_grad(x, weight, bias), allow_tf32)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def linear_residual(x, weight, bias, residual, *, scale=None, gamma=None, allow_tf32=False):
    """``residual + scale[:, None] * gamma * (x @ weight^T + bias)`` fused in one GEMM.

    ``weight`` is (out_features, in_features); ``x`` may have any leading
    dimensions; ``residual`` has the output's shape
    (``x.shape[:-1] + (out_features,)``) and either ``x``'s dtype or float32
    (an fp32 residual stream under autocast); the output has ``residual``'s
    dtype and the add happens in fp32.

    ``scale`` (optional, shape ``(x.shape[0],)``, no gradient) multiplies each
    sample's branch before the add -- stochastic depth passes 0 for a dropped
    sample and ``1/keep`` for a kept one. ``gamma`` (optional, shape
    ``(out_features,)``, x's dtype or float32) is a per-channel LayerScale and
    receives a gradient (in its own dtype). Either may be None (a factor of 1).

    Saves only ``x``, ``weight``, ``scale`` (and ``bias``, ``gamma`` when there
    is a gamma) for backward; see :mod:`fastvit.kernels.linear_bwd`. fp32
    inputs use tf32 tensor cores only with ``allow_tf32=True``.
    """
    check_linear_args("linear_residual", x, weight, bias)
    out_shape = check_residual("linear_residual", x, weight, residual)
    if scale is not None:
        scale = check_scale("linear_residual", scale, x)
    if gamma is not None:
        gamma = check_gamma("linear_residual", gamma, x, weight)
    out = _linear_residual_fwd_op(_rows(x), weight, bias, _rows(residual), scale, gamma, allow_tf32)
    return out.reshape(out_shape)


# The op's tuning tables and kernels as launched (an Autotuner's ``.fn`` is its @triton.jit function).
CONFIGS = {"fwd": GEMM_CONFIGS}
KERNELS = {"fwd": _linear_fwd_kernel_tuned, **linear_bwd.KERNELS}
