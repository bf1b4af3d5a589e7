"""Every fused op of :mod:`fastvit.kernels`, declared once: :data:`OPS`.

One :class:`Op` per op: its name, the module that defines it, its public
functions, the dtypes it takes, its limits (``width <= 4096``,
``head_dim <= 128``), its plain PyTorch reference, the dtypes ``auto`` may pick
it for, the error bound the correctness gate holds it to, and ``supports``:
the one answer to "can Triton run this call?". The layers, ``auto``,
``fastvit info``, the compile check, the benchmarks and the GPU check read this
table; the op files check their arguments against the same constants, so what
``supports()`` answers and what a call raises cannot disagree.

This module imports neither Triton nor any op file: asking it costs nothing,
and it traces under ``torch.compile`` (no import or environment read per call
beyond ``tuning.interpreting``, which the device check already did before).
Adding an op is one op file, one entry in :data:`OPS` and one ``<op>_ref`` in
:mod:`fastvit.kernels.reference`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Callable

import torch

from fastvit.kernels import reference, tuning

HALF = (torch.float16, torch.bfloat16)
FLOATS = (torch.float32, torch.float16, torch.bfloat16)
MAX_HIDDEN = 4096  # LayerNorm: a program keeps whole rows in registers (ViT-H is 1280)
MAX_HEAD_DIM = 128  # attention: any head dim 1..128, tiles masked
GELU_APPROXIMATIONS = ("none", "tanh", "quick")  # the GELU epilogue's forms (x * sigmoid(1.702 x) is "quick")
TMA_MIN_CAPABILITY = (9, 0)
TRITON_MISSING = "triton is not installed"
_INTERPRETER_HINT = "TRITON_INTERPRET=1 runs the kernels on the CPU"


def _find_triton() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except ValueError:  # sys.modules["triton"] is None: import blocked
        return False


# Looked up once, at import (finding the spec does not import triton): supports() then runs no import.
_TRITON_INSTALLED = _find_triton()


def triton_installed() -> bool:
    """Whether Triton can be imported (found at fastvit's import, without importing it)."""
    return _TRITON_INSTALLED


# -- the parts of every supports() ----------------------------------------------------------------


def _device_type(device) -> str:
    if isinstance(device, torch.device):
        return device.type
    if isinstance(device, str):
        return torch.device(device).type
    raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")


def device_reason(device, interpret: bool | None = None) -> str | None:
    """None for CUDA, or for any device when the interpreter runs the kernels
    (``interpret``; default: whether TRITON_INTERPRET=1 is set)."""
    kind = _device_type(device)
    if kind == "cuda":
        return None
    hint = ""
    if interpret is None:
        interpret, hint = tuning.interpreting(), f"; {_INTERPRETER_HINT}"
    return None if interpret else f"tensors are on {kind}; the kernels run on CUDA{hint}"


def dtype_reason(name: str, dtype, allowed) -> str | None:
    """None when ``dtype`` is one of ``allowed`` (torch dtypes), else the reason."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype, got {type(dtype).__name__}")
    if dtype in allowed:
        return None
    names = ", ".join(str(d).replace("torch.", "") for d in allowed)
    return f"{name} {str(dtype).replace('torch.', '')} is not one of {names}"


def size_reason(name: str, value, low: int, high: int | None = None) -> str | None:
    """None when the integer ``value`` is in ``low..high``; a bool or non-int raises TypeError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        return f"{name} {value} is not {bound}"
    return None


def first_reason(*reasons: str | None) -> str | None:
    for reason in reasons:
        if reason is not None:
            return reason
    return None


def _float_reason(name: str, value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    return None


# -- each op's supports() -------------------------------------------------------------------------


def _params_reason(dtype, weight_dtype) -> str | None:
    if weight_dtype is None or weight_dtype in (dtype, torch.float32):
        return None
    return f"weight_dtype {weight_dtype} is neither x's dtype {dtype} nor torch.float32"


def supports_layer_norm(*, device, dtype, width, weight_dtype=None, out_dtype=None, interpret=None) -> str | None:
    """x of ``dtype`` with last dim ``width`` (any leading dims, any strides), weight/bias of
    ``weight_dtype`` (default x's), output in ``out_dtype`` (default x's)."""
    return first_reason(
        device_reason(device, interpret),
        dtype_reason("dtype", dtype, FLOATS),
        size_reason("width", width, 0, MAX_HIDDEN),
        _params_reason(dtype, weight_dtype),
        None if out_dtype is None else dtype_reason("out_dtype", out_dtype, FLOATS),
    )


def supports_add_layer_norm(*, device, dtype, width, weight_dtype=None, interpret=None) -> str | None:
    """x and y of ``dtype`` and ``width``."""
    return supports_layer_norm(device=device, dtype=dtype, width=width, weight_dtype=weight_dtype, interpret=interpret)


def supports_rms_norm(*, device, dtype, width, weight_dtype=None, out_dtype=None, interpret=None) -> str | None:
    """x of ``dtype`` with last dim ``width`` (any leading dims, any strides), an affine weight of
    ``weight_dtype`` (default x's; no bias), output in ``out_dtype`` (default x's)."""
    return supports_layer_norm(device=device, dtype=dtype, width=width, weight_dtype=weight_dtype, out_dtype=out_dtype,
                               interpret=interpret)  # fmt: skip


def supports_attention(*, device, dtype, head_dim, dropout_p=0.0, kv_len=None, interpret=None) -> str | None:
    """(B, H, N, head_dim) inputs of ``dtype`` (``attention`` and ``attention_qkvpacked``); ``kv_len``:
    the keys' length when known (queries need at least one key)."""
    _float_reason("dropout_p", dropout_p)
    return first_reason(
        "attention dropout is active (the kernel has none)" if dropout_p > 0 else None,
        device_reason(device, interpret),
        dtype_reason("dtype", dtype, FLOATS),
        size_reason("head_dim", head_dim, 1, MAX_HEAD_DIM),
        None if kv_len is None else size_reason("kv_len", kv_len, 1),
    )


def supports_varlen_attention(*, device, dtype, head_dim, cu_seqlens_dtype=torch.int32, cu_seqlens_dim=1,
                              interpret=None) -> str | None:  # fmt: skip
    """Packed (T, H, head_dim) q, k, v of ``dtype`` and sequence offsets ``cu_seqlens`` ((S + 1,), of
    ``cu_seqlens_dtype`` with ``cu_seqlens_dim`` dims): the kernel takes 1-D int32 offsets only."""
    if isinstance(cu_seqlens_dim, bool) or not isinstance(cu_seqlens_dim, int):
        raise TypeError(f"cu_seqlens_dim must be an int, got {type(cu_seqlens_dim).__name__}")
    return first_reason(
        device_reason(device, interpret),
        dtype_reason("dtype", dtype, FLOATS),
        size_reason("head_dim", head_dim, 1, MAX_HEAD_DIM),
        dtype_reason("cu_seqlens_dtype", cu_seqlens_dtype, (torch.int32,)),
        None if cu_seqlens_dim == 1 else f"cu_seqlens is {cu_seqlens_dim}-D, the kernel takes 1-D offsets",
    )


def supports_attention_probs(*, device, dtype, head_dim, interpret=None) -> str | None:
    """q, k of ``dtype`` and ``head_dim`` (the maps ``fastvit analyze`` draws)."""
    return first_reason(
        device_reason(device, interpret),
        dtype_reason("dtype", dtype, FLOATS),
        size_reason("head_dim", head_dim, 1, MAX_HEAD_DIM),
    )


def _rope_tables_reason(head_dim, seq_len, num_prefix, heads, table_shape) -> str | None:
    if table_shape is None:
        return None
    table_shape = tuple(table_shape)
    if seq_len is None:  # only the pair count can be checked
        return None if table_shape[-1:] == (head_dim // 2,) else (
            f"table_shape {table_shape} does not end in head_dim // 2 = {head_dim // 2}")
    rows = (seq_len - num_prefix, head_dim // 2)
    shapes = [rows] + ([] if heads is None else [(heads, *rows)])
    if table_shape in shapes or (heads is None and len(table_shape) == 3 and table_shape[1:] == rows):
        return None
    expected = " or ".join(str(s) for s in shapes) + ("" if heads is not None else f" or (H, {rows[0]}, {rows[1]})")
    return f"table_shape {table_shape} is not {expected} (N - num_prefix rows, head_dim // 2 pairs)"


def supports_rope_attention(*, device, dtype, head_dim, seq_len=None, num_prefix=0, heads=None, table_shape=None,
                            table_dtype=torch.float32, tables_require_grad=False, interpret=None) -> str | None:
    """q, k, v (B, ``heads``, ``seq_len``, ``head_dim``) of ``dtype``, the first ``num_prefix`` tokens
    unrotated; sin / cos tables of ``table_shape`` ((N - num_prefix, D / 2) or (H, N - num_prefix, D / 2))
    and ``table_dtype`` (fp32). Tables that require grad are refused: the kernel gives them none."""
    if seq_len is not None:
        size_reason("seq_len", seq_len, 0)
    return first_reason(
        device_reason(device, interpret),
        dtype_reason("dtype", dtype, FLOATS),
        size_reason("head_dim", head_dim, 2, MAX_HEAD_DIM),
        f"head_dim {head_dim} is odd (rotary pairs need an even head dim)" if head_dim % 2 else None,
        size_reason("num_prefix", num_prefix, 0, seq_len),
        dtype_reason("table_dtype", table_dtype, (torch.float32,)),
        _rope_tables_reason(head_dim, seq_len, num_prefix, heads, table_shape),
        "rotary tables require grad (the kernel gives them no gradient)" if tables_require_grad else None,
    )


def _approximate_reason(approximate) -> str | None:
    if approximate in GELU_APPROXIMATIONS:
        return None
    return f"approximate {approximate!r} is not one of {', '.join(map(repr, GELU_APPROXIMATIONS))}"


def _residual_reason(dtype, residual_dtype) -> str | None:
    if residual_dtype is None or residual_dtype in (dtype, torch.float32):
        return None
    return f"residual_dtype {residual_dtype} is neither the GEMM's dtype {dtype} nor torch.float32"


def _dropout_reason(dropout_p) -> str | None:
    _float_reason("dropout_p", dropout_p)
    return "element-wise dropout on the branch is active (the epilogue has none)" if dropout_p > 0 else None


def _gemm_reason(device, dtype, in_features, out_features, interpret) -> str | None:
    return first_reason(
        device_reason(device, interpret),
        dtype_reason("dtype", dtype, FLOATS),
        size_reason("in_features", in_features, 0),
        size_reason("out_features", out_features, 0),
    )


def supports_linear_gelu(*, device, dtype, in_features, out_features, approximate="none", interpret=None):
    """x (..., in_features) of ``dtype`` and an (out_features, in_features) weight."""
    return first_reason(_gemm_reason(device, dtype, in_features, out_features, interpret),
                        _approximate_reason(approximate))  # fmt: skip


def supports_linear_swiglu(*, device, dtype, in_features, out_features, interpret=None):
    """x (..., in_features) of ``dtype``, gate and value weights (out_features, in_features), biases or none."""
    return _gemm_reason(device, dtype, in_features, out_features, interpret)


def supports_linear_residual(*, device, dtype, in_features, out_features, residual_dtype=None, dropout_p=0.0,
                             interpret=None):  # fmt: skip
    """The residual in the GEMM's dtype or fp32, and no element-wise dropout on the branch."""
    return first_reason(_dropout_reason(dropout_p), _gemm_reason(device, dtype, in_features, out_features, interpret),
                        _residual_reason(dtype, residual_dtype))  # fmt: skip


def supports_mlp_residual(*, device, dtype, in_features, hidden_features, out_features=None, approximate="none",
                          residual_dtype=None, dropout_p=0.0, interpret=None):  # fmt: skip
    """fc1 (hidden, in) and fc2 (out, hidden)."""
    out_features = in_features if out_features is None else out_features
    return first_reason(
        _dropout_reason(dropout_p),
        _gemm_reason(device, dtype, in_features, hidden_features, interpret),
        size_reason("out_features", out_features, 0),
        _approximate_reason(approximate),
        _residual_reason(dtype, residual_dtype),
    )


def _tma_reason(device, dtype, in_features, out_features, out_dtype, capability) -> str | None:
    """TMA needs sm_90+ and rows of 16-byte multiples (x and weight: in_features; output: out_features)."""
    if torch.device(device).type == "cuda":
        if capability is None:
            capability = torch.cuda.get_device_capability(torch.device(device))
        if tuple(capability) < TMA_MIN_CAPABILITY:
            return f"the TMA kernel needs sm_90 or newer, got sm_{capability[0]}{capability[1]}"
    for name, width, dt in (("in_features", in_features, dtype), ("out_features", out_features, out_dtype)):
        if name == "in_features" and width == 0:
            continue  # no product: the pointer kernel adds the bias
        if (width * dt.itemsize) % 16:
            return f"{name} {width} x {dt.itemsize} B is not a multiple of 16 bytes (TMA rows)"
    return None


def supports_linear_gelu_tma(*, device, dtype, in_features, out_features, approximate="none", capability=None,
                             interpret=None):  # fmt: skip
    """``linear_gelu``'s and the TMA kernel's needs (``capability``: the GPU's (major, minor))."""
    reason = supports_linear_gelu(device=device, dtype=dtype, in_features=in_features, out_features=out_features,
                                  approximate=approximate, interpret=interpret)  # fmt: skip
    return reason or _tma_reason(device, dtype, in_features, out_features, dtype, capability)


def supports_linear_residual_tma(*, device, dtype, in_features, out_features, residual_dtype=None, dropout_p=0.0,
                                 capability=None, interpret=None):  # fmt: skip
    reason = supports_linear_residual(device=device, dtype=dtype, in_features=in_features, out_features=out_features,
                                      residual_dtype=residual_dtype, dropout_p=dropout_p, interpret=interpret)  # fmt: skip
    return reason or _tma_reason(device, dtype, in_features, out_features, residual_dtype or dtype, capability)


# -- the declarations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """The correctness gate's bound: a kernel output ``got`` passes against the fp64 reference
    ``truth`` when ``|got - truth| <= factor * |baseline - truth| + atol[dtype] * max(1, |truth|)``,
    ``baseline`` being PyTorch's own result in the inputs' dtype (the flash-attention rule)."""

    factor: float = 2.0
    atol: dict = field(default_factory=lambda: {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 2e-2})

    def bound(self, dtype: torch.dtype, baseline_error: float, scale: float) -> float:
        return self.factor * baseline_error + self.atol[dtype] * max(1.0, scale)

    def within(self, got: torch.Tensor, truth: torch.Tensor, baseline: torch.Tensor) -> bool:
        """Whether ``got`` (dtype of the call) is within the bound; NaN/inf never is."""
        got64, truth64 = got.detach().double(), truth.detach().double()
        if not bool(torch.isfinite(got64).all()):
            return False
        if got64.numel() == 0:
            return True
        err = (got64 - truth64).abs().max().item()
        base = (baseline.detach().double() - truth64).abs().max().item()
        return err <= self.bound(got.dtype, base, truth64.abs().max().item())


@dataclass(frozen=True)
class Op:
    """The declaration of one fused op (see the module docstring)."""

    name: str
    module: str  # the op file, e.g. "fastvit.kernels.norm"
    functions: tuple[str, ...]  # its public functions, names in ``module``
    dtypes: tuple[torch.dtype, ...]
    limits: dict  # argument -> (low, high or None), e.g. {"width": (0, 4096)}
    reference: Callable  # the plain PyTorch twin, in fastvit.kernels.reference
    supports_fn: Callable[..., str | None]
    auto_dtypes: tuple[torch.dtype, ...] = FLOATS  # what ``auto`` may pick the kernel for
    tolerance: Tolerance = field(default_factory=Tolerance)
    requires: str = ""  # e.g. "sm_90" for the TMA kernels
    notes: str = ""
    exported: bool = True  # its functions are ``fastvit.kernels.<name>`` (attention_probs: its module only)

    def supports(self, **call) -> str | None:
        """None when Triton can take the call described by keywords (``device``, ``dtype``, widths, ...),
        else the reason. Imports no Triton."""
        reason = self.supports_fn(**call)
        return TRITON_MISSING if not _TRITON_INSTALLED else reason

    @property
    def description(self) -> str:
        dtypes = "/".join(str(d).replace("torch.float", "fp").replace("torch.bfloat", "bf") for d in self.dtypes)
        limits = ", ".join(f"{k} {lo}-{hi}" if hi is not None else f"{k} >= {lo}" for k, (lo, hi) in self.limits.items())
        parts = [dtypes, limits, self.requires, self.notes]
        return ", ".join(p for p in parts if p)

    def describe(self) -> str:
        return f"{self.name}: {self.description} [{', '.join(self.functions)}]"


R = reference
_GEMM_LIMITS = {"in_features": (0, None), "out_features": (0, None)}
OPS: dict[str, Op] = {op.name: op for op in (
    Op("attention", "fastvit.kernels.flash_attention", ("attention", "attention_qkvpacked"), FLOATS,
       {"head_dim": (1, MAX_HEAD_DIM)}, R.attention_ref, supports_attention, auto_dtypes=HALF,
       notes="non-causal, any N (masked), no dropout"),
    Op("rope_attention", "fastvit.kernels.flash_rope_attention", ("rope_attention",), FLOATS,
       {"head_dim": (2, MAX_HEAD_DIM)}, R.rope_attention_ref, supports_rope_attention, auto_dtypes=HALF,
       notes="even head_dim, q/k rotated in-kernel (pairs interleaved or halves), prefix unrotated, "
             "tables fp32 without gradient"),
    Op("attention_probs", "fastvit.kernels.attention_probs", ("attention_probs",), FLOATS,
       {"head_dim": (1, MAX_HEAD_DIM)}, R.attention_probs_ref, supports_attention_probs, auto_dtypes=(),
       notes="softmax maps from the forward's lse, fp32 out, any strides", exported=False),
    Op("layer_norm", "fastvit.kernels.norm", ("layer_norm", "layer_norm_fork"), FLOATS, {"width": (0, MAX_HIDDEN)},
       R.layer_norm_ref, supports_layer_norm, notes="any strides, fp32 or x-dtype weights"),
    Op("add_layer_norm", "fastvit.kernels.norm", ("add_layer_norm",), FLOATS, {"width": (0, MAX_HIDDEN)},
       R.add_layer_norm_ref, supports_add_layer_norm, notes="any strides, fp32 or x-dtype weights"),
    Op("rms_norm", "fastvit.kernels.rms", ("rms_norm", "rms_norm_fork"), FLOATS, {"width": (0, MAX_HIDDEN)}, R.rms_norm_ref,
       supports_rms_norm, notes="LayerNorm's kernels without mean and bias; any strides, fp32 or x-dtype weight"),
    Op("linear_gelu", "fastvit.kernels.linear", ("linear_gelu",), FLOATS, _GEMM_LIMITS, R.linear_gelu_ref,
       supports_linear_gelu, notes="GELU none/tanh/quick in the epilogue"),
    Op("linear_swiglu", "fastvit.kernels.swiglu", ("linear_swiglu",), FLOATS, _GEMM_LIMITS, R.linear_swiglu_ref,
       supports_linear_swiglu, notes="silu(x W_g^T + b_g) * (x W_x^T + b_x), both GEMMs on one x tile; backward recomputes"),
    Op("linear_residual", "fastvit.kernels.linear", ("linear_residual",), FLOATS, _GEMM_LIMITS,
       R.linear_residual_ref, supports_linear_residual, notes="residual + scale * gamma * (x W^T + b)"),
    Op("linear_gelu_tma", "fastvit.kernels.linear_tma", ("linear_gelu_tma",), FLOATS, _GEMM_LIMITS,
       R.linear_gelu_ref, supports_linear_gelu_tma, requires="sm_90, 16-byte rows", notes="TMA descriptors"),
    Op("linear_residual_tma", "fastvit.kernels.linear_tma", ("linear_residual_tma",), FLOATS, _GEMM_LIMITS,
       R.linear_residual_ref, supports_linear_residual_tma, requires="sm_90, 16-byte rows",
       notes="TMA descriptors"),
    Op("mlp_residual", "fastvit.kernels.mlp", ("mlp_residual",), FLOATS,
       {"in_features": (0, None), "hidden_features": (0, None)}, R.mlp_residual_ref, supports_mlp_residual,
       notes="whole MLP branch; GELU's derivative fused in fc2's dgrad GEMM"),
    Op("varlen_attention", "fastvit.kernels.varlen_attention_op", ("varlen_attention",), FLOATS,
       {"head_dim": (1, MAX_HEAD_DIM)}, R.varlen_attention_ref, supports_varlen_attention, auto_dtypes=HALF,
       notes="packed sequences by int32 cu_seqlens, non-causal, no dropout"),
)}  # fmt: skip


def declaration(name: str) -> Op:
    """The :class:`Op` called ``name``; ValueError naming the known ops otherwise."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; known: {', '.join(OPS)}")
    return OPS[name]


def supports(name: str, **call) -> str | None:
    """``declaration(name).supports(**call)``."""
    return declaration(name).supports(**call)


def describe() -> list[str]:
    """One line per op for ``fastvit info``: what it supports, or why the kernels are unavailable."""
    if not _TRITON_INSTALLED:
        return [f"{name}: unavailable ({TRITON_MISSING})" for name in OPS]
    return [op.describe() for op in OPS.values()]


def public_functions() -> dict[str, str]:
    """Public function name -> its op file (what ``fastvit.kernels`` exports), from :data:`OPS`."""
    return {fn: op.module for op in OPS.values() if op.exported for fn in op.functions}


def by_module() -> dict[str, tuple[str, ...]]:
    """Op file (``"fastvit.kernels.norm"``) -> the ops it defines, in :data:`OPS` order. Each op file
    lists its kernels as ``KERNELS`` (pass -> kernel as launched) and its tuning tables as ``CONFIGS``
    (pass -> table) where it has any: what the GPU check's sweep reads."""
    found: dict[str, list[str]] = {}
    for op in OPS.values():
        found.setdefault(op.module, []).append(op.name)
    return {module: tuple(names) for module, names in found.items()}
