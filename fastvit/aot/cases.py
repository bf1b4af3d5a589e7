"""Every op's ahead-of-time compile cases, by op: what the compile check (:mod:`fastvit.aot`) compiles.

Each op's cases are built from its kernels' launch rules (:mod:`.norm`,
:mod:`.attention`, :mod:`.linear`, :mod:`.swiglu` of this package) and the shapes of
:mod:`fastvit.shapes`; :data:`CASES` names, per op of :data:`fastvit.kernels.ops.OPS`,
the function that lists them. Imports Triton (through the op files).
"""

from __future__ import annotations

from fastvit.aot import attention as flash_attention_aot, linear as linear_aot, norm as norm_aot
from fastvit.aot import rope_attention as rope_attention_aot, swiglu as swiglu_aot, varlen_attention as varlen_attention_aot


def _norm_cases(op: str):
    def cases() -> list:
        # "layer_norm_fwd-...", qk-norm's per-head launches "layer_norm_fwd_qk-..." (the same op), and
        # "rms_norm_fork_bwd-..." (RMSNorm's fork: the backward adding the residual's gradient)
        passes = (f"{op}_fwd", f"{op}_bwd", f"{op}_fork_bwd")
        return [c for c in norm_aot.aot_cases() if c.name.split("-")[0].removesuffix("_qk") in passes]

    return cases


def gemm_case_op(case) -> str:
    """The op a GEMM case of :mod:`.linear` belongs to: TMA cases (descriptor arguments)
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


def _gemm_cases(op: str):
    def cases() -> list:
        return [c for c in linear_aot.aot_cases() if gemm_case_op(c) == op]

    return cases


# op -> the function listing its compile cases (layer_norm_fork launches layer_norm's and
# add_layer_norm's kernels: its cases are theirs, the "*_bwd-fp32-from-*" ones under autocast)
CASES = {
    "attention": flash_attention_aot.aot_cases,
    "rope_attention": rope_attention_aot.aot_cases,
    "attention_probs": flash_attention_aot.probs_cases,
    "layer_norm": _norm_cases("layer_norm"),
    "add_layer_norm": _norm_cases("add_layer_norm"),
    "rms_norm": _norm_cases("rms_norm"),
    "linear_gelu": _gemm_cases("linear_gelu"),
    "linear_swiglu": swiglu_aot.aot_cases,
    "linear_residual": _gemm_cases("linear_residual"),
    "linear_gelu_tma": _gemm_cases("linear_gelu_tma"),
    "linear_residual_tma": _gemm_cases("linear_residual_tma"),
    "mlp_residual": _gemm_cases("mlp_residual"),
    "varlen_attention": varlen_attention_aot.aot_cases,
}


def cases_of(op: str) -> list:
    """The compile cases of ``op``."""
    if op not in CASES:
        raise ValueError(f"unknown op {op!r}; known: {', '.join(CASES)}")
    return CASES[op]()


def all_cases() -> list:
    """Every op's compile cases, each once (ops that share a kernel share cases), by name."""
    seen, cases = set(), []
    for op in CASES:
        for case in CASES[op]():
            if str(case) not in seen:
                seen.add(str(case))
                cases.append(case)
    return cases
