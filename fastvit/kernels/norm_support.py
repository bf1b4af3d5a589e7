"""What the Triton LayerNorm kernels take (:mod:`fastvit.kernels.norm`), importable without Triton.

:func:`supports_layer_norm` / :func:`supports_add_layer_norm` are the ops'
contract ``supports``; :mod:`.norm` checks its inputs against the same
:data:`MAX_HIDDEN` and :data:`DTYPES`. Also the ops' AOT and benchmark cases.
"""

from __future__ import annotations

import torch

from fastvit.kernels.contract import bench_case, device_reason, dtype_reason, first_reason, size_reason

# Largest hidden size: a program keeps whole rows in registers (ViT-H is 1280).
MAX_HIDDEN = 4096
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _params_reason(dtype, weight_dtype) -> str | None:
    if weight_dtype is None or weight_dtype in (dtype, torch.float32):
        return None
    return f"weight_dtype {weight_dtype} is neither x's dtype {dtype} nor torch.float32"


def supports_layer_norm(*, device, dtype, width, weight_dtype=None, out_dtype=None, interpret=None) -> str | None:
    """None when :func:`fastvit.kernels.layer_norm` takes x of ``dtype`` with last dim ``width``
    (any leading dims, any strides), weight/bias of ``weight_dtype`` (default x's), output in
    ``out_dtype`` (default x's), else why not."""
    return first_reason(
        device_reason(device, interpret),
        dtype_reason("dtype", dtype, DTYPES),
        size_reason("width", width, 0, MAX_HIDDEN),
        _params_reason(dtype, weight_dtype),
        None if out_dtype is None else dtype_reason("out_dtype", out_dtype, DTYPES),
    )


def supports_add_layer_norm(*, device, dtype, width, weight_dtype=None, interpret=None) -> str | None:
    """None when :func:`fastvit.kernels.add_layer_norm` takes x and y of ``dtype`` and ``width``."""
    return supports_layer_norm(device=device, dtype=dtype, width=width, weight_dtype=weight_dtype, interpret=interpret)


def _aot_cases_of(op: str) -> list:
    from fastvit.kernels.norm_aot import aot_cases

    # "layer_norm_fwd-...", and qk-norm's per-head launches "layer_norm_fwd_qk-..." (the same op)
    return [c for c in aot_cases() if c.name.split("-")[0].removesuffix("_qk") in (f"{op}_fwd", f"{op}_bwd")]


def layer_norm_aot_cases() -> list:
    return _aot_cases_of("layer_norm")


def add_layer_norm_aot_cases() -> list:
    return _aot_cases_of("add_layer_norm")


NORM_PROVIDERS = ("torch", "torch.compile", "triton")
BENCH_WIDTHS = (768, 1024)
MODES = ("fwd", "fwd+bwd")


def _norm_bench_cases(op: str) -> list:
    return [bench_case(op, "layer_norm", f"{op}-N{width}-{mode}-{provider}", op=op, width=width, mode=mode,
                       provider=provider)
            for width in BENCH_WIDTHS for mode in MODES for provider in NORM_PROVIDERS]  # fmt: skip


def layer_norm_bench_cases() -> list:
    """LayerNorm, and a block's norm at its residual junction, forward+backward: ``(LN(x), x)`` with both
    outputs' gradients summed at ``x`` -- torch's autograd add against ``layer_norm_fork``'s one launch."""
    junction = [bench_case("layer_norm", "norm_junction", f"junction-N{width}-{provider}", width=width, provider=provider)
                for width in BENCH_WIDTHS for provider in ("torch", "torch.compile", "triton-fork")]  # fmt: skip
    return _norm_bench_cases("layer_norm") + junction


def add_layer_norm_bench_cases() -> list:
    """add + LayerNorm, and the seam it competes at: from fc2's input to the next block's
    normalized input, as linear_residual + layer_norm ("triton-epilogue"), cuBLAS +
    add_layer_norm ("cublas+add-norm"), torch and torch.compile."""
    seam = [bench_case("add_layer_norm", "residual_norm", f"{provider}-{mode}", provider=provider, mode=mode)
            for mode in MODES for provider in ("torch", "torch.compile", "triton-epilogue", "cublas+add-norm")]  # fmt: skip
    return _norm_bench_cases("add_layer_norm") + seam
