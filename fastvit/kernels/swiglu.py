"""SwiGLU's fc1 in one GEMM: ``silu(x @ W_g^T + b_g) * (x @ W_x^T + b_x)`` (op ``linear_swiglu``).

timm's ``SwiGLU`` (``fc1_g``, ``fc1_x``: EVA-02, DINOv3, AIMv2) and, through the two halves of
its weight, ``GluMlp`` / ``SwiGLUPacked`` (one ``fc1``, gate first). Each program computes one
output tile from two fp32 accumulators that share every ``x`` tile of the K loop (the gate's and
the value's weight tiles are loaded beside it), then adds the biases, gates in fp32 and stores
once: neither pre-activation is written to memory.

Backward (documented choice): the op saves only ``x`` and the weights (and biases) and the
backward recomputes both pre-activations with ``F.linear`` (cuBLAS on a GPU), then the gate's
derivative in fp32 and four GEMMs in PyTorch -- the memory of eager timm without its two saved
(M, H) tensors, at the cost of the two forward GEMMs again. Any strides; fp16/bf16 multiply on
the tensor cores with an fp32 accumulator, fp32 exactly (``input_precision="ieee"``) unless
``allow_tf32``. Reference: :func:`fastvit.kernels.reference.linear_swiglu_ref`. In order: tuning
table, kernel, launcher, torch.library op and fake, autograd, checks, public function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from fastvit.kernels import tuning
from fastvit.kernels._rows import device_of
from fastvit.kernels.gemm_epilogue import grouped_tile
from fastvit.kernels.linear import dot_in_fp32
from fastvit.kernels.linear_checks import check_linear_args, out_buffer, rows as _rows

# Two (BLOCK_M, BLOCK_N) fp32 accumulators: each entry keeps 2 * BLOCK_M * BLOCK_N <= 64 * 32 * num_warps
# (the plain GEMM's register budget), BLOCK_M >= 64 and 4k warps (wgmma on sm_90); three operand tiles per
# stage fit shared memory at these depths. The "default" entry is what the interpreter runs in tests.
FWD_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4),
        dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4),
        dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
    ],
    "sm80": [
        dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, num_warps=8, num_stages=4),
        dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=32, GROUP_M=8, num_warps=8, num_stages=4),
        dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, num_warps=4, num_stages=4),
    ],
    "default": [dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, num_warps=4, num_stages=2)],
}
CONFIGS = {"fwd": FWD_CONFIGS}


# --------------------------------------------------------------------------- kernel


@triton.jit(do_not_specialize=["M_BUCKET"])
def _linear_swiglu_fwd_kernel(
    X, WG, WX, BG, BX, Y,
    M, N, K,
    M_BUCKET,  # autotune key only: M rounded up to a power of two
    stride_xm, stride_xk, stride_gn, stride_gk, stride_vn, stride_vk, stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M x BLOCK_N tile of Y = silu(X @ WG^T + BG) * (X @ WX^T + BX); WG, WX are (N, K)."""
    # grouped order (as the plain GEMM): GROUP_M row-blocks sweep one column of tiles, sharing W in L2
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # rows / columns past the edge wrap around (never stored), so only K needs a mask; int64 offsets
    rows = (offs_m % M).to(tl.int64)
    cols = (offs_n % N).to(tl.int64)
    x_ptrs = X + rows[:, None] * stride_xm + offs_k[None, :] * stride_xk
    g_ptrs = WG + cols[None, :] * stride_gn + offs_k[:, None] * stride_gk
    v_ptrs = WX + cols[None, :] * stride_vn + offs_k[:, None] * stride_vk

    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_v = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_mask = offs_k < K - k * BLOCK_K
        a = tl.load(x_ptrs, mask=k_mask[None, :], other=0.0)
        bg = tl.load(g_ptrs, mask=k_mask[:, None], other=0.0)
        bv = tl.load(v_ptrs, mask=k_mask[:, None], other=0.0)
        if DOT_IN_FP32:
            a, bg, bv = a.to(tl.float32), bg.to(tl.float32), bv.to(tl.float32)
        acc_g = tl.dot(a, bg, acc_g, input_precision=INPUT_PRECISION)
        acc_v = tl.dot(a, bv, acc_v, input_precision=INPUT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        g_ptrs += BLOCK_K * stride_gk
        v_ptrs += BLOCK_K * stride_vk

    n_mask = offs_n < N
    if HAS_BIAS:
        acc_g += tl.load(BG + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        acc_v += tl.load(BX + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    out = acc_g * tl.sigmoid(acc_g) * acc_v
    y_offs = offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(Y + y_offs, out.to(Y.dtype.element_ty), mask=(offs_m[:, None] < M) & n_mask[None, :])


_linear_swiglu_fwd_kernel_tuned = triton.autotune(
    configs=tuning.autotune_configs(FWD_CONFIGS), key=["M_BUCKET", "N", "K", "HAS_BIAS"]
)(_linear_swiglu_fwd_kernel)


# --------------------------------------------------------------------------- launcher


def linear_swiglu_fwd(x, weight_g, weight_x, bias_g=None, bias_x=None, *, allow_tf32=False, out=None):
    """Launch the kernel on 2-D ``x`` (M, K) and (N, K) weights of any strides; biases both or neither.
    ``out``: a preallocated contiguous (M, N) buffer of x's dtype. Returns the (M, N) output."""
    M, K = x.shape
    N = weight_g.shape[0]
    y = out_buffer(out, x, (M, N), "out")
    if y.numel() == 0:
        return y
    has_bias = bias_g is not None
    bg, bx = (bias_g.contiguous(), bias_x.contiguous()) if has_bias else (y, y)

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    with device_of(x):
        _linear_swiglu_fwd_kernel_tuned[grid](
            x, weight_g, weight_x, bg, bx, y, M, N, K, triton.next_power_of_2(M),
            x.stride(0), x.stride(1), weight_g.stride(0), weight_g.stride(1), weight_x.stride(0), weight_x.stride(1),
            y.stride(0), y.stride(1),
            HAS_BIAS=has_bias, INPUT_PRECISION="tf32" if allow_tf32 else "ieee", DOT_IN_FP32=dot_in_fp32(x.dtype),
        )  # fmt: skip
    return y


# --------------------------------------------------------------------------- torch.library op and autograd


@torch.library.custom_op("fastvit::linear_swiglu_fwd", mutates_args=())
def linear_swiglu_fwd_op(
    x: Tensor, weight_g: Tensor, weight_x: Tensor, bias_g: Tensor | None, bias_x: Tensor | None, allow_tf32: bool
) -> Tensor:
    """``silu(x W_g^T + b_g) * (x W_x^T + b_x)`` for 2-D ``x``; see :func:`linear_swiglu_fwd`."""
    return linear_swiglu_fwd(x, weight_g, weight_x, bias_g, bias_x, allow_tf32=allow_tf32)


@linear_swiglu_fwd_op.register_fake
def _(x, weight_g, weight_x, bias_g, bias_x, allow_tf32):
    return x.new_empty((x.shape[0], weight_g.shape[0]))


def _linear_swiglu_setup(ctx, inputs, output):
    x, weight_g, weight_x, bias_g, bias_x, _ = inputs
    ctx.has_bias = bias_g is not None
    ctx.save_for_backward(x, weight_g, weight_x, *((bias_g, bias_x) if ctx.has_bias else ()))


def _linear_swiglu_backward(ctx, dy):
    """Recomputes ``g = x W_g^T + b_g`` and ``v = x W_x^T + b_x`` (PyTorch), the gate's derivative in fp32:
    ``dv = dy silu(g)``, ``dg = dy v sigmoid(g) (1 + g (1 - sigmoid(g)))``; then dx, dW, db by GEMMs."""
    x, weight_g, weight_x, *biases = ctx.saved_tensors
    bias_g, bias_x = biases if ctx.has_bias else (None, None)
    g, v = F.linear(x, weight_g, bias_g).float(), F.linear(x, weight_x, bias_x).float()
    sig, dy = torch.sigmoid(g), dy.float()
    dv = (dy * g * sig).to(x.dtype)
    dg = (dy * v * sig * (1 + g * (1 - sig))).to(x.dtype)
    dx = dg @ weight_g + dv @ weight_x
    dwg, dwx = dg.t() @ x, dv.t() @ x
    dbg, dbx = (dg.float().sum(0).to(bias_g.dtype), dv.float().sum(0).to(bias_x.dtype)) if ctx.has_bias else (None, None)
    return dx, dwg, dwx, dbg, dbx, None


linear_swiglu_fwd_op.register_autograd(_linear_swiglu_backward, setup_context=_linear_swiglu_setup)


# --------------------------------------------------------------------------- checks and public function


def _check_args(x, weight_g, bias_g, weight_x, bias_x):
    if (bias_g is None) != (bias_x is None):
        raise ValueError("linear_swiglu: bias_g and bias_x must both be tensors or both be None, "
                         f"got {type(bias_g).__name__} and {type(bias_x).__name__}")  # fmt: skip
    if isinstance(weight_g, torch.Tensor) and isinstance(weight_x, torch.Tensor) and weight_x.shape != weight_g.shape:
        raise ValueError(f"linear_swiglu: weight_x must have weight_g's shape {tuple(weight_g.shape)}, "
                         f"got {tuple(weight_x.shape)}")  # fmt: skip
    for weight, bias in ((weight_g, bias_g), (weight_x, bias_x)):
        if bias is None:  # the bias-free form: a stand-in the checks pass whenever the weight does
            bias = weight.new_empty(weight.shape[:1]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else weight
        check_linear_args("linear_swiglu", x, weight, bias)


def linear_swiglu(x: Tensor, weight_g: Tensor, bias_g: Tensor | None, weight_x: Tensor, bias_x: Tensor | None, *,
                  allow_tf32: bool = False) -> Tensor:  # fmt: skip
    """``silu(x @ weight_g^T + bias_g) * (x @ weight_x^T + bias_x)`` in one GEMM kernel.

    ``weight_g`` / ``weight_x``: (hidden, in_features) in nn.Linear's layout, any strides (the two
    halves of a packed fc1 are views); biases (hidden,) or both None; all in ``x``'s dtype; ``x`` of
    any leading dims. Saves ``x``, the weights and biases; the backward recomputes (module docstring).
    """
    _check_args(x, weight_g, bias_g, weight_x, bias_x)
    out = linear_swiglu_fwd_op(_rows(x), weight_g, weight_x, bias_g, bias_x, allow_tf32)
    return out.reshape(*x.shape[:-1], weight_g.shape[0])


# The op's kernel as launched (an Autotuner; its ``.fn`` is the @triton.jit function).
KERNELS = {"fwd": _linear_swiglu_fwd_kernel_tuned}
