"""Ahead-of-time compile cases of SwiGLU's fc1 kernel (:mod:`fastvit.kernels.swiglu`).

Every shipped configuration x {bf16, fp16} x {sm_80, sm_90} (each arch's first in the default
run, the others with ``-m slow``), with and without biases (EVA-02 and
DINOv3 have them, AIMv2 not), compiled as Triton specializes a launch on contiguous tensors: the
unit inner strides constant 1; pointers, N, K and the row strides divisible by 16 (every ViT
width and SwiGLU hidden width is: EVA-02 B 2048, DINOv3 B 2048, AIMv2 L 2816); M left unmarked
(197 tokens per image). Both halves of a packed fc1's weight (``GluMlp``) start 16-byte aligned
when the hidden width divides by 8, so they compile the same binary.
"""

from __future__ import annotations

from fastvit.aot import AotCase
from fastvit.kernels import swiglu, tuning

_linear_swiglu_fwd_kernel = swiglu.KERNELS["fwd"].fn
_POINTERS = ("X", "WG", "WX", "BG", "BX", "Y")
_UNITS = ("stride_xk", "stride_gk", "stride_vk", "stride_yn")
_DIVISIBLE = _POINTERS + ("N", "K", "stride_xm", "stride_gn", "stride_vn", "stride_ym")


def _signature(dtype: str) -> dict:
    """Pointers of ``dtype``; sizes and strides i32 (the unit strides constexpr, as Triton makes them); the rest constexpr."""
    ints = ("M", "N", "K", "M_BUCKET", *(n for n in _linear_swiglu_fwd_kernel.arg_names if n.startswith("stride_")))
    types = dict.fromkeys(_POINTERS, f"*{dtype}") | {n: "i32" for n in ints if n not in _UNITS}
    return {name: types.get(name, "constexpr") for name in _linear_swiglu_fwd_kernel.arg_names}


def aot_cases() -> list[AotCase]:
    cases = []
    for arch in ("sm80", "sm90"):
        entries = swiglu.FWD_CONFIGS[arch] + [e for e in swiglu.FWD_CONFIGS["default"] if e not in swiglu.FWD_CONFIGS[arch]]
        for entry in entries:
            meta, launch = tuning.split(entry)
            tile = "x".join(str(meta[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
            for dtype in ("bf16", "fp16"):
                for bias in (True, False):
                    constexprs = dict(meta, **dict.fromkeys(_UNITS, 1), HAS_BIAS=bias, INPUT_PRECISION="ieee",
                                      DOT_IN_FP32=False)  # fmt: skip
                    name = f"linear_swiglu_fwd{'' if bias else '_nobias'}-{dtype}-{tile}"
                    tier = "core" if entry is swiglu.FWD_CONFIGS[arch][0] else "wide"  # the rest with -m slow
                    cases.append(AotCase(name, _linear_swiglu_fwd_kernel, _signature(dtype), constexprs, arch,
                                         divisible=_DIVISIBLE, tier=tier, **launch))  # fmt: skip
    return cases
