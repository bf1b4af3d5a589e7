"""Epilogue pieces shared by fastvit's GEMM kernels (``linear.py``, ``linear_tma.py``).

Each works on one fp32 accumulator tile in registers, ``acc[i, j]`` for rows
``offs_m`` and columns ``offs_n`` of the output, before its single rounding
and store:

- :func:`add_bias` -- ``acc + bias[None, :]``;
- :func:`finish` -- the named epilogue:
  ``"gelu"`` / ``"gelu_tanh"`` / ``"gelu_quick"``: ``gelu(acc)`` (exact erf,
  tanh form, or CLIP's quick GELU ``acc * sigmoid(1.702 acc)``);
  ``"residual"``: ``residual + scale[row // ROWS_PER_SCALE] * gamma[col] * acc``
  (per-sample stochastic-depth scale and per-channel LayerScale, each optional);
  ``"gelu_grad"`` / ``"gelu_tanh_grad"`` / ``"gelu_quick_grad"``: ``acc * gelu'(pre)``,
  the input gradient of fc2 turned into fc1's pre-activation gradient in the same kernel.

Rows and columns past the edge are masked on every load here; the caller masks
(or clips, with TMA) the store.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Epilogues of the forward GEMMs and of the backward input-gradient GEMM, by name.
FORWARD_EPILOGUES = ("gelu", "gelu_tanh", "gelu_quick", "residual")
GRAD_EPILOGUES = ("gelu_grad", "gelu_tanh_grad", "gelu_quick_grad")
# approximate= of F.gelu (plus "quick": x * sigmoid(1.702 x)) -> forward / gradient epilogue
GELU_EPILOGUE = {"none": "gelu", "tanh": "gelu_tanh", "quick": "gelu_quick"}
GELU_GRAD_EPILOGUE = {"none": "gelu_grad", "tanh": "gelu_tanh_grad", "quick": "gelu_quick_grad"}
APPROXIMATIONS = tuple(GELU_EPILOGUE)


def check_approximate(fn: str, approximate) -> str:
    """``approximate`` if it names a GELU form the epilogues have, else a ValueError naming them."""
    if not isinstance(approximate, str) or approximate not in GELU_EPILOGUE:
        raise ValueError(f"{fn}: approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
    return approximate


SQRT_HALF = tl.constexpr(0.7071067811865476)  # 1 / sqrt(2)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1 / sqrt(2 pi)
TANH_C = tl.constexpr(0.7978845608028654)  # sqrt(2 / pi), the tanh GELU's constants
TANH_A = tl.constexpr(0.044715)


@triton.jit
def gelu(h, APPROXIMATE: tl.constexpr):
    """gelu(h) in fp32; APPROXIMATE "none" (erf), "tanh" or "quick"."""
    if APPROXIMATE == "tanh":
        # 0.5 * (1 + tanh(u)) == sigmoid(2u)
        u = TANH_C * (h + TANH_A * h * h * h)
        return h * tl.sigmoid(2.0 * u)
    elif APPROXIMATE == "quick":
        return h * tl.sigmoid(h * 1.702)
    else:
        return 0.5 * h * (1.0 + tl.erf(h * SQRT_HALF))


@triton.jit
def gelu_grad(h, APPROXIMATE: tl.constexpr):
    """d gelu(h) / dh, in fp32."""
    if APPROXIMATE == "quick":
        # d/dh [h * s(c h)] = s + c h s (1 - s), c = 1.702 (written as a literal: a constexpr
        # global times a tensor breaks tl.sigmoid under the interpreter)
        s = tl.sigmoid(h * 1.702)
        return s + 1.702 * h * s * (1.0 - s)
    elif APPROXIMATE == "tanh":
        # gelu(h) = h * s with s = sigmoid(2u), u = c * (h + a h^3);
        # d/dh = s + 2 h s (1 - s) * c * (1 + 3 a h^2).
        u = TANH_C * (h + TANH_A * h * h * h)
        s = tl.sigmoid(2.0 * u)
        return s + 2.0 * h * s * (1.0 - s) * TANH_C * (1.0 + 3.0 * TANH_A * h * h)
    else:
        # d/dh [h * Phi(h)] = Phi(h) + h * phi(h)
        cdf = 0.5 * (1.0 + tl.erf(h * SQRT_HALF))
        pdf = INV_SQRT_2PI * tl.exp(-0.5 * h * h)
        return cdf + h * pdf


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program ``pid`` in grouped order: GROUP_M row-blocks sweep one column of
    tiles before moving right, so the W tiles they share stay in L2."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    per_group = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = (pid // per_group) * GROUP_M
    group_rows = min(num_pid_m - first_m, GROUP_M)
    return first_m + (pid % per_group) % group_rows, (pid % per_group) // group_rows


@triton.jit
def add_bias(acc, offs_n, N, BIAS, HAS_BIAS: tl.constexpr):
    if HAS_BIAS:
        acc += tl.load(BIAS + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def finish(
    acc, offs_m, offs_n, M, N,
    RES, stride_rm, stride_rn,  # "residual": the residual; "*_grad": the saved pre-activation
    SCALE, ROWS_PER_SCALE, GAMMA,
    EPILOGUE: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_GAMMA: tl.constexpr,
):  # fmt: skip
    if EPILOGUE == "gelu":
        acc = gelu(acc, "none")
    elif EPILOGUE == "gelu_tanh":
        acc = gelu(acc, "tanh")
    elif EPILOGUE == "gelu_quick":
        acc = gelu(acc, "quick")
    else:
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        r_ptrs = RES + offs_m.to(tl.int64)[:, None] * stride_rm + offs_n.to(tl.int64)[None, :] * stride_rn
        other = tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)
        if EPILOGUE == "residual":
            if HAS_GAMMA:
                acc *= tl.load(GAMMA + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
            if HAS_SCALE:
                rows = offs_m % M
                acc *= tl.load(SCALE + rows // ROWS_PER_SCALE).to(tl.float32)[:, None]
            acc += other
        elif EPILOGUE == "gelu_grad":
            acc *= gelu_grad(other, "none")
        elif EPILOGUE == "gelu_tanh_grad":
            acc *= gelu_grad(other, "tanh")
        else:  # "gelu_quick_grad"
            acc *= gelu_grad(other, "quick")
    return acc
