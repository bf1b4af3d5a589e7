"""What the fused-GEMM ops take (:mod:`.linear`, :mod:`.linear_tma`, :mod:`.mlp`), importable without Triton.

The ``supports`` of their contracts, the split of :mod:`.linear_aot`'s compile
cases between the ops (by the epilogue each case compiles), and their
benchmark cases. :mod:`.linear_checks` raises on the same :data:`DTYPES`.
"""

from __future__ import annotations

import torch

from fastvit.kernels.contract import bench_case, device_reason, dtype_reason, first_reason, size_reason

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# The ``approximate`` values of the GELU epilogue (gemm_epilogue.GELU_EPILOGUE's keys).
GELU_APPROXIMATIONS = ("none", "tanh", "quick")
TMA_MIN_CAPABILITY = (9, 0)


def _approximate_reason(approximate) -> str | None:
    if approximate in GELU_APPROXIMATIONS:
        return None
    return f"approximate {approximate!r} is not one of {', '.join(map(repr, GELU_APPROXIMATIONS))}"


def _residual_reason(dtype, residual_dtype) -> str | None:
    if residual_dtype is None or residual_dtype in (dtype, torch.float32):
        return None
    return f"residual_dtype {residual_dtype} is neither the GEMM's dtype {dtype} nor torch.float32"


def _dropout_reason(dropout_p) -> str | None:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise TypeError(f"dropout_p must be a float, got {type(dropout_p).__name__}")
    return "element-wise dropout on the branch is active (the epilogue has none)" if dropout_p > 0 else None


def _gemm_reason(device, dtype, in_features, out_features, interpret) -> str | None:
    return first_reason(
        device_reason(device, interpret),
        dtype_reason("dtype", dtype, DTYPES),
        size_reason("in_features", in_features, 0),
        size_reason("out_features", out_features, 0),
    )


def supports_linear_gelu(*, device, dtype, in_features, out_features, approximate="none", interpret=None):
    """None when :func:`fastvit.kernels.linear_gelu` takes x (..., in_features) of ``dtype``
    and an (out_features, in_features) weight on ``device``, else why not."""
    return first_reason(_gemm_reason(device, dtype, in_features, out_features, interpret),
                        _approximate_reason(approximate))  # fmt: skip


def supports_linear_residual(*, device, dtype, in_features, out_features, residual_dtype=None, dropout_p=0.0,
                             interpret=None):  # fmt: skip
    """None when :func:`fastvit.kernels.linear_residual` takes such a call: the residual in the
    GEMM's dtype or fp32, and no element-wise dropout on the branch (``dropout_p``)."""
    return first_reason(_dropout_reason(dropout_p), _gemm_reason(device, dtype, in_features, out_features, interpret),
                        _residual_reason(dtype, residual_dtype))  # fmt: skip


def supports_mlp_residual(*, device, dtype, in_features, hidden_features, out_features=None, approximate="none",
                          residual_dtype=None, dropout_p=0.0, interpret=None):  # fmt: skip
    """None when :func:`fastvit.kernels.mlp_residual` takes fc1 (hidden, in) and fc2 (out, hidden)."""
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
    """:func:`supports_linear_gelu` plus the TMA kernel's needs (``capability``: the GPU's
    (major, minor), read from ``device`` when not given)."""
    reason = supports_linear_gelu(device=device, dtype=dtype, in_features=in_features, out_features=out_features,
                                  approximate=approximate, interpret=interpret)  # fmt: skip
    return reason or _tma_reason(device, dtype, in_features, out_features, dtype, capability)


def supports_linear_residual_tma(*, device, dtype, in_features, out_features, residual_dtype=None, dropout_p=0.0,
                                 capability=None, interpret=None):  # fmt: skip
    reason = supports_linear_residual(device=device, dtype=dtype, in_features=in_features, out_features=out_features,
                                      residual_dtype=residual_dtype, dropout_p=dropout_p, interpret=interpret)  # fmt: skip
    return reason or _tma_reason(device, dtype, in_features, out_features, residual_dtype or dtype, capability)


# -- compile cases: linear_aot's cases, split by what each compiles --------------------------


def case_op(case) -> str:
    """The op an AOT case of :mod:`.linear_aot` belongs to: TMA cases (descriptor arguments)
    to the ``*_tma`` ops; GEMM epilogues ``*_grad`` (GELU's derivative in fc2's input-gradient
    GEMM) to mlp_residual, ``residual*`` to linear_residual, GELU ones and the GELU backward
    kernel to linear_gelu."""
    epilogue = case.constexprs.get("EPILOGUE")
    tma = "X_DESC" in case.signature
    if epilogue is None:
        return "linear_gelu"
    if epilogue.endswith("_grad"):
        return "mlp_residual"
    kind = "linear_residual" if epilogue.startswith("residual") else "linear_gelu"
    return kind + "_tma" if tma else kind


def aot_cases_of(op: str) -> list:
    from fastvit.kernels.linear_aot import aot_cases

    return [c for c in aot_cases() if case_op(c) == op]


def linear_gelu_aot_cases() -> list:
    return aot_cases_of("linear_gelu")


def linear_residual_aot_cases() -> list:
    return aot_cases_of("linear_residual")


def linear_gelu_tma_aot_cases() -> list:
    return aot_cases_of("linear_gelu_tma")


def linear_residual_tma_aot_cases() -> list:
    return aot_cases_of("linear_residual_tma")


def mlp_residual_aot_cases() -> list:
    return aot_cases_of("mlp_residual")


# -- benchmark cases -------------------------------------------------------------------------

MODES = ("fwd", "fwd+bwd")


def _linear_bench(op: str, kernel: str, providers: tuple) -> list:
    return [bench_case(op + kernel, "linear", f"{op}-{mode}-{provider}", op=op, mode=mode, provider=provider)
            for mode in MODES for provider in providers]  # fmt: skip


def linear_gelu_bench_cases() -> list:
    """ViT-B's fc1 (768 -> 3072) at 256 x 197 rows: the pointer kernel vs torch and torch.compile."""
    return _linear_bench("linear_gelu", "", ("torch", "torch.compile", "triton"))


def linear_residual_bench_cases() -> list:
    """ViT-B's fc2 (3072 -> 768) plus the residual add."""
    return _linear_bench("linear_residual", "", ("torch", "torch.compile", "triton"))


def linear_gelu_tma_bench_cases() -> list:
    return _linear_bench("linear_gelu", "_tma", ("tma",))


def linear_residual_tma_bench_cases() -> list:
    return _linear_bench("linear_residual", "_tma", ("tma",))


def mlp_residual_bench_cases() -> list:
    """A whole MLP branch: fused (GELU's derivative in fc2's dgrad GEMM) vs two ops, torch, torch.compile."""
    return [bench_case("mlp_residual", "mlp", f"{provider}-{mode}", provider=provider, mode=mode)
            for mode in MODES for provider in ("torch", "torch.compile", "triton-two-ops", "triton-mlp")]  # fmt: skip

