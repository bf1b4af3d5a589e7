"""Every fused op's contract (:class:`~fastvit.kernels.contract.OpContract`), found in one place.

:data:`OPS` maps each op to the file of :mod:`fastvit.kernels` that declares
it (its ``CONTRACT``) and to the Triton-free module holding its
``supports_<op>``. :func:`contracts` / :func:`get` import the op files (and
so Triton); :func:`supports` never does: it answers "triton is not installed"
where Triton is missing and otherwise asks the op's ``supports_<op>``, the
same function its contract declares. Nothing here imports Triton at import.
"""

from __future__ import annotations

import importlib
import importlib.util

# op -> (the op file declaring its CONTRACT, the Triton-free module of its supports_<op>)
OPS: dict[str, tuple[str, str]] = {
    "attention": ("flash_attention", "attention_support"),
    "attention_probs": ("attention_probs", "attention_support"),
    "layer_norm": ("norm", "norm_support"),
    "add_layer_norm": ("norm", "norm_support"),
    "linear_gelu": ("linear", "linear_support"),
    "linear_residual": ("linear", "linear_support"),
    "linear_gelu_tma": ("linear_tma", "linear_support"),
    "linear_residual_tma": ("linear_tma", "linear_support"),
    "mlp_residual": ("mlp", "linear_support"),
}
TRITON_MISSING = "triton is not installed"


def _package() -> str:
    return __name__.rpartition(".")[0]


def _check_op(op) -> None:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; known: {', '.join(OPS)}")


def _find_triton() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except ValueError:  # sys.modules["triton"] is None: import blocked
        return False


# Looked up once, at import (finding the spec does not import triton), as the supports
# functions are: supports() then runs no import, so it traces under torch.compile.
_TRITON_INSTALLED = _find_triton()
_SUPPORTS = {
    op: getattr(importlib.import_module(f"{__name__.rpartition('.')[0]}.{support}"), f"supports_{op}")
    for op, (_, support) in OPS.items()
}


def triton_installed() -> bool:
    """Whether Triton can be imported (found, at fastvit's import, without importing it)."""
    return _TRITON_INSTALLED


def op_names() -> list[str]:
    return list(OPS)


def module_names() -> list[str]:
    """The op files, each once, in :data:`OPS` order."""
    return list(dict.fromkeys(module for module, _ in OPS.values()))


def _declared(module: str) -> tuple:
    declared = importlib.import_module(f"{_package()}.{module}").CONTRACT
    return declared if isinstance(declared, tuple) else (declared,)


def contracts() -> list:
    """Every op's contract, in :data:`OPS` order (imports the op files, and Triton)."""
    by_name = {c.name: c for module in module_names() for c in _declared(module)}
    missing = [op for op in OPS if op not in by_name]
    if missing:
        raise RuntimeError(f"ops listed in fastvit.kernels.registry.OPS without a CONTRACT: {missing}")
    return [by_name[op] for op in OPS]


def get(op: str):
    """The contract of ``op``."""
    _check_op(op)
    found = [c for c in _declared(OPS[op][0]) if c.name == op]
    if not found:
        raise RuntimeError(f"fastvit.kernels.{OPS[op][0]} declares no CONTRACT for {op!r}")
    return found[0]


def supports_function(op: str):
    """``supports_<op>`` of the op's Triton-free module (what its contract declares)."""
    _check_op(op)
    return _SUPPORTS[op]


def supports(op: str, **call) -> str | None:
    """None when fastvit's Triton kernel for ``op`` can take the call described by
    ``call`` (the keywords of the op's ``supports``: device, dtype, widths, ...),
    else the reason it cannot. Imports no Triton."""
    reason = supports_function(op)(**call)
    return TRITON_MISSING if not triton_installed() else reason


def aot_cases() -> list:
    """Every op's compile cases, each once (ops that share a kernel share cases), by name."""
    seen, cases = set(), []
    for contract in contracts():
        for case in contract.aot_cases():
            if str(case) not in seen:
                seen.add(str(case))
                cases.append(case)
    return cases


def bench_cases(bench: str | None = None) -> list:
    """Every op's benchmark cases, or those of ``test_<bench>`` in benchmarks/test_kernels.py."""
    return [case for contract in contracts() for case in contract.bench_cases() if bench in (None, case.bench)]


def describe() -> list[str]:
    """One line per op for ``fastvit info``: what it supports, or why the kernels are unavailable."""
    if not triton_installed():
        return [f"{op}: unavailable ({TRITON_MISSING})" for op in OPS]
    return [contract.describe() for contract in contracts()]
