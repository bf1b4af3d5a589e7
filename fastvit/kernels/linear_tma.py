"""Hopper GEMM candidate: persistent grid, TMA tensor descriptors, 128x256 tiles.

The same ops as :mod:`fastvit.kernels.linear` -- ``gelu(x @ W^T + b)`` (erf,
tanh or quick GELU) and ``residual + scale * gamma * (x @ W^T + b)`` -- computed
by a second kernel built for sm_90:

- **persistent grid**: one program per SM (at most one per tile); each loops
  over output tiles ``pid, pid + P, pid + 2P, ...`` in the same grouped order
  as the pointer kernel, so W tiles shared by neighbouring tiles stay in L2;
- **TMA**: X, W, the output and the saved pre-activation move through host
  tensor descriptors (``triton.tools.tensor_descriptor.TensorDescriptor``;
  ``cp.async.bulk.tensor`` on sm_90), out-of-range rows and columns are
  zero-filled on load and clipped on store, so the main loop has no masks;
- **sub-tiled epilogue**: the 128x256 fp32 accumulator is split into
  column slices -- two 128x128 halves for a 16-bit output, four 128x64
  quarters for an fp32 one (autocast's residual stream) -- that get bias,
  GELU or residual and are stored one at a time, which keeps the epilogue's
  temporaries and shared-memory staging at 32 KB (with a whole-tile fp32
  epilogue the residual case needs 278 KB of shared memory, over sm_90's 227).

It is a candidate beside the pointer kernel, not a replacement: ``auto``
(:mod:`fastvit.layers.auto`) times it on sm_90+ as a third candidate for fc1 and
fc2 and picks it where it is faster (``linear_impl="triton"`` always runs the
pointer kernel); the benchmarks call :func:`linear_gelu_tma` /
:func:`linear_residual_tma`. The backward is the pointer module's (saved
tensors, fused GELU-gradient GEMM, cuBLAS for dW).

TMA constraints the launcher enforces: every row stride is a multiple of 16
bytes and the last dimension is contiguous. Inputs that are strided in their
last dimension are copied contiguous; a width whose rows are not 16-byte
multiples (``in_features`` or ``out_features`` times the element size) raises
ValueError, as does a CUDA GPU older than sm_90. Zero-size outputs launch
nothing; ``in_features == 0`` (no product, nothing to describe) runs the
pointer kernel, whose result is then just the epilogue of the bias.

Under the Triton interpreter the descriptors are emulated with the same
zero-fill and clipping, so the tests run this kernel's own code on the CPU.

Names (the scheme of docs/kernels.md): the kernel ``_linear_tma_fwd_kernel``,
its launcher :func:`linear_tma_fwd`, ops ``fastvit::linear_gelu_tma_fwd`` and
``fastvit::linear_residual_tma_fwd``, public :func:`linear_gelu_tma`,
:func:`linear_residual_tma`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from fastvit.kernels import linear, linear_bwd, tuning
from fastvit.kernels.gemm_epilogue import GELU_EPILOGUE, add_bias, check_approximate, finish
from fastvit.kernels.linear_checks import check_gamma, check_linear_args, check_residual, check_scale, needs_grad, rows

# Tiles for sm_90. 128x256x64 in 8 warps (two consumer warpgroups, 128 fp32
# accumulators per thread) with 3 stages: 3 * (128 + 256) * 64 * 2 B = 144 KB
# of operand buffers plus one 128x128 epilogue staging buffer. The 128x128
# entry is the fallback the benchmarks compare against. "default" is what the
# interpreter runs (small enough that a tile's numpy matmul stays cheap; it
# still splits the epilogue and loops over several tiles per program).
TMA_CONFIGS = {
    "sm90": [
        dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
        dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4),
    ],
    "default": [
        dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=32, GROUP_M=4, num_warps=4, num_stages=2),
    ],
}
# Programs of the persistent grid under the interpreter (a GPU uses its SM count).
INTERPRETER_PROGRAMS = 3


@triton.jit
def _epilogue_half(
    acc, off_m, off_n, M, N,
    Y_DESC, PRE_DESC, BIAS, RES, stride_rm, stride_rn, SCALE, ROWS_PER_SCALE, GAMMA,
    EPILOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_PRE: tl.constexpr, HAS_SCALE: tl.constexpr,
    HAS_GAMMA: tl.constexpr, BLOCK_M: tl.constexpr, SUB_N: tl.constexpr,
):  # fmt: skip
    """Bias, epilogue and TMA store of one BLOCK_M x SUB_N slice of the tile."""
    offs_m = off_m + tl.arange(0, BLOCK_M)
    offs_n = off_n + tl.arange(0, SUB_N)
    acc = add_bias(acc, offs_n, N, BIAS, HAS_BIAS)
    if STORE_PRE:
        PRE_DESC.store([off_m, off_n], acc.to(PRE_DESC.dtype))
    acc = finish(acc, offs_m, offs_n, M, N, RES, stride_rm, stride_rn, SCALE, ROWS_PER_SCALE, GAMMA, EPILOGUE,
                 HAS_SCALE, HAS_GAMMA)  # fmt: skip
    Y_DESC.store([off_m, off_n], acc.to(Y_DESC.dtype))


@triton.jit
def _linear_tma_fwd_kernel(
    X_DESC, W_DESC, Y_DESC, PRE_DESC,  # (M, K), (N, K), (M, N), (M, N) tensor descriptors
    BIAS, RES, SCALE, GAMMA,
    M, N, K,
    ROWS_PER_SCALE,
    stride_rm, stride_rn,
    EPILOGUE: tl.constexpr,  # as in linear._linear_fwd_kernel
    HAS_BIAS: tl.constexpr,
    STORE_PRE: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_GAMMA: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,  # interpreter only, see linear.dot_in_fp32
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    SPLIT: tl.constexpr,  # epilogue sub-tiles per tile: 2 or 4 column slices of BLOCK_N // SPLIT
    NUM_PROGRAMS: tl.constexpr,  # size of the persistent grid
):  # fmt: skip
    """Persistent loop over BLOCK_M x BLOCK_N tiles of Y = epilogue(X @ W^T + BIAS)."""
    SUB_N: tl.constexpr = BLOCK_N // SPLIT
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_group = GROUP_M * num_pid_n
    for tile in tl.range(tl.program_id(0), num_pid_m * num_pid_n, NUM_PROGRAMS, flatten=True):
        first_m = (tile // per_group) * GROUP_M
        group_rows = min(num_pid_m - first_m, GROUP_M)
        off_m = (first_m + (tile % per_group) % group_rows) * BLOCK_M
        off_n = ((tile % per_group) // group_rows) * BLOCK_N

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kk in range(k_tiles):
            a = X_DESC.load([off_m, kk * BLOCK_K])
            b = W_DESC.load([off_n, kk * BLOCK_K])
            if DOT_IN_FP32:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b.T, acc, input_precision=INPUT_PRECISION)

        # Sub-tiled epilogue: SPLIT column slices of SUB_N, one after the other.
        if SPLIT == 2:
            left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, SUB_N)), (0, 2, 1)))
            _epilogue_half(
                left, off_m, off_n, M, N, Y_DESC, PRE_DESC, BIAS, RES, stride_rm, stride_rn, SCALE, ROWS_PER_SCALE,
                GAMMA, EPILOGUE, HAS_BIAS, STORE_PRE, HAS_SCALE, HAS_GAMMA, BLOCK_M, SUB_N,
            )  # fmt: skip
            _epilogue_half(
                right, off_m, off_n + SUB_N, M, N, Y_DESC, PRE_DESC, BIAS, RES, stride_rm, stride_rn, SCALE,
                ROWS_PER_SCALE, GAMMA, EPILOGUE, HAS_BIAS, STORE_PRE, HAS_SCALE, HAS_GAMMA, BLOCK_M, SUB_N,
            )  # fmt: skip
        else:  # 4: slices 0 and 2 go to "a", 1 and 3 to "b" (column c -> slice c // SUB_N)
            a, b = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, 2, SUB_N)), (0, 1, 3, 2)))
            s0, s2 = tl.split(tl.permute(a, (0, 2, 1)))
            s1, s3 = tl.split(tl.permute(b, (0, 2, 1)))
            _epilogue_half(
                s0, off_m, off_n, M, N, Y_DESC, PRE_DESC, BIAS, RES, stride_rm, stride_rn, SCALE, ROWS_PER_SCALE,
                GAMMA, EPILOGUE, HAS_BIAS, STORE_PRE, HAS_SCALE, HAS_GAMMA, BLOCK_M, SUB_N,
            )  # fmt: skip
            _epilogue_half(
                s1, off_m, off_n + SUB_N, M, N, Y_DESC, PRE_DESC, BIAS, RES, stride_rm, stride_rn, SCALE,
                ROWS_PER_SCALE, GAMMA, EPILOGUE, HAS_BIAS, STORE_PRE, HAS_SCALE, HAS_GAMMA, BLOCK_M, SUB_N,
            )  # fmt: skip
            _epilogue_half(
                s2, off_m, off_n + 2 * SUB_N, M, N, Y_DESC, PRE_DESC, BIAS, RES, stride_rm, stride_rn, SCALE,
                ROWS_PER_SCALE, GAMMA, EPILOGUE, HAS_BIAS, STORE_PRE, HAS_SCALE, HAS_GAMMA, BLOCK_M, SUB_N,
            )  # fmt: skip
            _epilogue_half(
                s3, off_m, off_n + 3 * SUB_N, M, N, Y_DESC, PRE_DESC, BIAS, RES, stride_rm, stride_rn, SCALE,
                ROWS_PER_SCALE, GAMMA, EPILOGUE, HAS_BIAS, STORE_PRE, HAS_SCALE, HAS_GAMMA, BLOCK_M, SUB_N,
            )  # fmt: skip


# ---------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------


def _tma_ready(fn: str, name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` (2-D) laid out as TMA needs: unit last stride, 16-byte row stride and base."""
    def ok(u):
        return u.stride(1) == 1 and (u.stride(0) * u.element_size()) % 16 == 0 and u.data_ptr() % 16 == 0

    if not ok(t):
        t = t.contiguous()
    if not ok(t):
        raise ValueError(
            f"{fn}: TMA needs rows of {name} that are a multiple of 16 bytes; got {t.shape[1]} {t.dtype} "
            f"elements ({t.shape[1] * t.element_size()} B): use fastvit.kernels.linear for this width"
        )
    return t


def epilogue_split(out_bytes: int) -> int:
    """Epilogue sub-tiles per tile: 2 for 16-bit outputs, 4 for fp32 ones (the same bytes per sub-tile)."""
    return 2 if out_bytes <= 2 else 4


def selected_config(config: dict | None = None) -> dict:
    """The table entry a launch uses: ``config`` if given, else the first for this GPU."""
    if config is not None:
        return config
    entries = TMA_CONFIGS["default"] if tuning.interpreting() else TMA_CONFIGS["sm90"]
    return entries[0]


def _check_device(fn: str, x: torch.Tensor) -> None:
    if x.device.type == "cuda" and torch.cuda.get_device_capability(x.device)[0] < 9:
        raise ValueError(f"{fn}: the TMA kernel needs an sm_90 (Hopper) or newer GPU, got {x.device}")


def linear_tma_fwd(fn, x, weight, bias, epilogue, *, residual=None, y, pre=None, scale=None, gamma=None,
                   allow_tf32=False, config=None):  # fmt: skip
    """``y = epilogue(x @ weight^T + bias)`` on 2-D tensors through the TMA kernel; see the module docstring."""
    M, K = x.shape
    N = weight.shape[0]
    if y.numel() == 0:
        return y
    if K == 0:
        linear.launch_gemm(
            x, weight, bias, epilogue, residual=residual, y=y, pre=pre, allow_tf32=allow_tf32, scale=scale,
            gamma=gamma,
        )
        return y
    x = _tma_ready(fn, "x", x)
    weight = _tma_ready(fn, "weight", weight)
    for name, t in (("the output", y), ("the pre-activation", pre)):
        if t is not None:
            _tma_ready(fn, name, t)  # fresh contiguous buffers: only the width can fail
    meta, launch_opts = tuning.split(selected_config(config))
    bm, bn, bk = meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"]
    x_desc = TensorDescriptor(x, [M, K], [x.stride(0), 1], [bm, bk])
    w_desc = TensorDescriptor(weight, [N, K], [weight.stride(0), 1], [bn, bk])
    split = epilogue_split(y.element_size())
    y_desc = TensorDescriptor(y, [M, N], [y.stride(0), 1], [bm, bn // split])
    pre_desc = y_desc if pre is None else TensorDescriptor(pre, [M, N], [pre.stride(0), 1], [bm, bn // split])
    bias_buf = y if bias is None else bias.contiguous()
    res = y if residual is None else residual
    scale_buf = bias_buf if scale is None else scale
    gamma_buf = bias_buf if gamma is None else gamma
    tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
    if tuning.interpreting():
        programs = INTERPRETER_PROGRAMS
    else:
        programs = torch.cuda.get_device_properties(x.device).multi_processor_count
    programs = min(programs, tiles)
    _linear_tma_fwd_kernel[(programs,)](
        x_desc, w_desc, y_desc, pre_desc, bias_buf, res, scale_buf, gamma_buf,
        M, N, K, 1 if scale is None else M // scale.shape[0],
        res.stride(0), res.stride(1),
        EPILOGUE=epilogue, HAS_BIAS=bias is not None, STORE_PRE=pre is not None, HAS_SCALE=scale is not None,
        HAS_GAMMA=gamma is not None, INPUT_PRECISION="tf32" if allow_tf32 else "ieee",
        DOT_IN_FP32=linear.dot_in_fp32(x.dtype), SPLIT=split, NUM_PROGRAMS=programs, **meta, **launch_opts,
    )  # fmt: skip
    return y


# ---------------------------------------------------------------------------
# torch.library ops (the backward is the pointer module's)
# ---------------------------------------------------------------------------


@torch.library.custom_op("fastvit::linear_gelu_tma_fwd", mutates_args=())
def _linear_gelu_tma_fwd_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, approximate: str, save_pre: bool, allow_tf32: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gelu(h), h if save_pre else empty)`` for 2-D ``x`` through the TMA kernel."""
    M, N = x.shape[0], weight.shape[0]
    y = x.new_empty((M, N))
    pre = x.new_empty((M, N)) if save_pre else None
    linear_tma_fwd("linear_gelu_tma", x, weight, bias, GELU_EPILOGUE[approximate], y=y, pre=pre, allow_tf32=allow_tf32)
    return y, x.new_empty((0,)) if pre is None else pre


_linear_gelu_tma_fwd_op.register_fake(linear.linear_gelu_fake)


@torch.library.custom_op("fastvit::linear_residual_tma_fwd", mutates_args=())
def _linear_residual_tma_fwd_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    residual: torch.Tensor,
    scale: torch.Tensor | None,
    gamma: torch.Tensor | None,
    allow_tf32: bool,
) -> torch.Tensor:
    """``residual + scale * gamma * (x @ weight^T + bias)`` for 2-D ``x`` through the TMA kernel."""
    y = residual.new_empty((x.shape[0], weight.shape[0]))
    return linear_tma_fwd("linear_residual_tma", x, weight, bias, "residual", residual=residual, y=y, scale=scale,
                          gamma=gamma, allow_tf32=allow_tf32)  # fmt: skip


_linear_residual_tma_fwd_op.register_fake(linear.linear_residual_fake)


_linear_gelu_tma_fwd_op.register_autograd(linear_bwd.linear_gelu_backward, setup_context=linear_bwd.linear_gelu_setup)
_linear_residual_tma_fwd_op.register_autograd(linear_bwd.linear_residual_backward,
                                              setup_context=linear_bwd.linear_residual_setup)  # fmt: skip


def linear_gelu_tma(x, weight, bias, approximate="none", *, allow_tf32=False):
    """:func:`fastvit.kernels.linear_gelu` through the Hopper TMA kernel (same arguments and result)."""
    check_linear_args("linear_gelu_tma", x, weight, bias)
    _check_device("linear_gelu_tma", x)
    check_approximate("linear_gelu_tma", approximate)
    save_pre = needs_grad(x, weight, bias)
    out, _ = _linear_gelu_tma_fwd_op(rows(x), weight, bias, approximate, save_pre, allow_tf32)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def linear_residual_tma(x, weight, bias, residual, *, scale=None, gamma=None, allow_tf32=False):
    """:func:`fastvit.kernels.linear_residual` through the Hopper TMA kernel (same arguments and result)."""
    check_linear_args("linear_residual_tma", x, weight, bias)
    _check_device("linear_residual_tma", x)
    out_shape = check_residual("linear_residual_tma", x, weight, residual)
    if scale is not None:
        scale = check_scale("linear_residual_tma", scale, x)
    if gamma is not None:
        gamma = check_gamma("linear_residual_tma", gamma, x, weight)
    out = _linear_residual_tma_fwd_op(rows(x), weight, bias, rows(residual), scale, gamma,
                                      allow_tf32)  # fmt: skip
    return out.reshape(out_shape)


# The op's tuning table and kernel (the compile check and the GPU check's sweep read them).
CONFIGS = {"fwd": TMA_CONFIGS}
KERNELS = {"fwd": _linear_tma_fwd_kernel}
