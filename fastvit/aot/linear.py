"""Ahead-of-time compile cases of the GEMM kernels (:mod:`linear`, :mod:`linear_tma`).

Three families, all checked by :mod:`fastvit.aot` (fits shared memory,
tensor cores, no spills) for sm_80 and sm_90:

1. **Every shipped configuration** of the pointer kernel x epilogue x
   {bf16, fp16}, compiled as Triton specializes ViT's contiguous, 16-byte
   aligned tensors (unit inner strides constant; pointers, N, K and row
   strides divisible by 16; M = batch * 197 not), plus the training variants of
   the residual epilogue (fp32 residual stream, per-sample scale; and with an
   fp32 LayerScale gamma) and the GELU-gradient epilogue of fc2's
   input-gradient GEMM, whose B operand is fc2's weight read transposed (unit
   stride along N, not K); its tanh and quick forms at each arch's first tile.
2. **The real launches** at ViT widths (:data:`LAUNCH_SHAPES`: 768/3072 ViT-B,
   1024/4096 ViT-L, 1152/4304 SigLIP so400m, 1280/5120 ViT-H) for M = 197 (batch 1) and
   256 * 197: :func:`launch_specialization` derives which arguments are
   constant 1 and which divisible by 16 from the argument values those
   launches pass, with Triton's rule, so the compiled binary is the one that
   runs. Launches that specialize identically compile once (and not at all
   when a shipped case already has their binary): every width above
   is a multiple of 16 (4304 = 16 * 269), so they differ only by M's
   divisibility; 4304 % 64 != 0 is handled by the kernel's masks, which are
   compiled in whatever N is.
3. **The Hopper TMA candidate** (sm_90 only): each of its configurations x
   epilogue x {bf16, fp16}. Its descriptors carry no divisibility to state.
"""

from __future__ import annotations

from fastvit import shapes
from fastvit.kernels import linear, linear_tma, tuning
from fastvit.aot import AotCase
from fastvit.kernels.linear import EPILOGUES, GEMM_CONFIGS
from fastvit.kernels.linear_bwd import GELU_BWD_CONFIG
from fastvit.kernels.linear_tma import TMA_CONFIGS, epilogue_split

_linear_fwd_kernel = linear.KERNELS["fwd"].fn
_linear_gelu_bwd_kernel = linear.KERNELS["bwd"]
_linear_tma_fwd_kernel = linear_tma.KERNELS["fwd"]

_POINTERS = ("X", "W", "BIAS", "RES", "Y", "PRE", "SCALE", "GAMMA")
_INTS = ("M", "N", "K", "ROWS_PER_SCALE", "M_BUCKET", "stride_xm", "stride_xk", "stride_wn", "stride_wk",
         "stride_rm", "stride_rn", "stride_ym", "stride_yn")  # fmt: skip
# Arguments Triton never specializes (do_not_specialize)
_NOT_SPECIALIZED = ("M_BUCKET",)
# (in_features D, hidden H) of the MLPs whose launches are compiled: the core presets' (fastvit.shapes)
LAUNCH_SHAPES = {f"D{d}": (d, h) for d, h in shapes.mlp_shapes("core")}
LAUNCH_ROWS = (197, 256 * 197)
TMA_OP = "cp.async.bulk.tensor"

# Contiguous ViT tensors (fc1, fc2 forward): unit stride along K, N, N, N.
_UNIT_STRIDES = ("stride_xk", "stride_wk", "stride_rn", "stride_yn")
_DIVISIBLE = _POINTERS + ("N", "K", "stride_xm", "stride_wn", "stride_rm", "stride_ym")
# fc2's input-gradient GEMM: B is W2 (N_out, H) read as (H, N_out)^T, unit stride along N.
_GRAD_UNIT_STRIDES = ("stride_xk", "stride_wn", "stride_rn", "stride_yn")
_GRAD_DIVISIBLE = _POINTERS + ("N", "K", "stride_xm", "stride_wk", "stride_rm", "stride_ym")


def launch_values(kind: str, rows: int, d_in: int, hidden: int) -> dict[str, int]:
    """Integer arguments ``_linear_fwd_kernel`` receives for one MLP GEMM on contiguous tensors.

    ``kind``: "fc1" (D -> H, GELU), "fc2" (H -> D, residual) or "grad"
    (fc2's input gradient: (M, D) @ W2 (D, H), GELU-gradient epilogue).
    """
    if kind == "fc1":
        n, k, w_strides = hidden, d_in, (d_in, 1)
    elif kind == "fc2":
        n, k, w_strides = d_in, hidden, (hidden, 1)
    elif kind == "grad":
        n, k, w_strides = hidden, d_in, (1, hidden)  # W2.t() of the (D, H) weight
    else:
        raise ValueError(f"kind must be 'fc1', 'fc2' or 'grad', got {kind!r}")
    return dict(M=rows, N=n, K=k, ROWS_PER_SCALE=197, M_BUCKET=1 << (rows - 1).bit_length(),
                stride_xm=k, stride_xk=1, stride_wn=w_strides[0], stride_wk=w_strides[1],
                stride_rm=n, stride_rn=1, stride_ym=n, stride_yn=1)  # fmt: skip


def launch_specialization(values: dict[str, int]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(arguments Triton makes the constant 1, arguments it marks divisible by 16) for these values.

    Triton's launch-time rule for integer arguments: 1 becomes a constant,
    a multiple of 16 gets the divisibility hint. Pointers to tensors from the
    caching allocator are 16-byte aligned.
    """
    ints = {k: v for k, v in values.items() if k not in _NOT_SPECIALIZED}
    units = tuple(k for k, v in ints.items() if v == 1)
    divisible = _POINTERS + tuple(k for k, v in ints.items() if v != 1 and v % 16 == 0)
    return units, divisible


def _gemm_signature(dtype: str, residual_dtype: str | None = None, units: tuple[str, ...] = (),
                    gamma_dtype: str | None = None) -> dict:  # fmt: skip
    """Argument types of ``_linear_fwd_kernel`` on ``dtype`` tensors (residual and output ``residual_dtype``)."""
    types = dict.fromkeys(("X", "W", "BIAS", "PRE"), f"*{dtype}")
    types |= dict.fromkeys(("RES", "Y"), f"*{residual_dtype or dtype}")
    types["SCALE"] = "*fp32"
    types["GAMMA"] = f"*{gamma_dtype or dtype}"
    types |= {name: "i32" for name in _INTS if name not in units}
    return {name: types.get(name, "constexpr") for name in _linear_fwd_kernel.arg_names}


def _tile(meta: dict) -> str:
    return "x".join(str(meta[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))


def _gemm_case(name, dtype, meta, launch, arch, epilogue, *, units, divisible, residual_dtype=None, scaled=False,
               gamma_dtype=None, tier="core"):  # fmt: skip
    constexprs = dict(
        meta, **dict.fromkeys(units, 1), EPILOGUE=epilogue, HAS_BIAS=not epilogue.endswith("_grad"),
        STORE_PRE=epilogue == "gelu", HAS_SCALE=scaled, HAS_GAMMA=gamma_dtype is not None, INPUT_PRECISION="ieee",
        DOT_IN_FP32=False,
    )  # fmt: skip
    signature = _gemm_signature(dtype, residual_dtype, units, gamma_dtype)
    return AotCase(name, _linear_fwd_kernel, signature, constexprs, arch, divisible=divisible, tier=tier, **launch)


def _shipped_cases() -> list[AotCase]:
    cases = []
    for dtype in ("bf16", "fp16"):
        for arch in ("sm80", "sm90"):
            for entry in GEMM_CONFIGS[arch] + GEMM_CONFIGS["default"]:
                meta, launch = tuning.split(entry)
                tile = _tile(meta)
                common = dict(units=_UNIT_STRIDES, divisible=_DIVISIBLE)
                # The variants issue 14 added (quick GELU, LayerScale) compile by default at each arch's
                # first tile; at the others they are "wide" cases (-m slow), to keep CI's compile time.
                extra = "core" if entry is GEMM_CONFIGS[arch][0] else "wide"
                for epilogue in EPILOGUES:
                    cases.append(_gemm_case(f"linear_{epilogue}-{dtype}-{tile}", dtype, meta, launch, arch, epilogue,
                                            tier=extra if epilogue == "gelu_quick" else "core", **common))  # fmt: skip
                # Training under autocast with stochastic depth: fp32 residual stream, per-sample scale.
                cases.append(_gemm_case(f"linear_residual_scaled_fp32res-{dtype}-{tile}", dtype, meta, launch, arch,
                                        "residual", residual_dtype="fp32", scaled=True, **common))  # fmt: skip
                # The same with LayerScale (DINOv2, DeiT III): an fp32 gamma master weight.
                cases.append(_gemm_case(f"linear_residual_gamma_scaled_fp32res-{dtype}-{tile}", dtype, meta, launch,
                                        arch, "residual", residual_dtype="fp32", scaled=True, gamma_dtype="fp32",
                                        tier=extra, **common))  # fmt: skip
                cases.append(_gemm_case(f"linear_gelu_grad-{dtype}-{tile}", dtype, meta, launch, arch, "gelu_grad",
                                        units=_GRAD_UNIT_STRIDES, divisible=_GRAD_DIVISIBLE))  # fmt: skip
                if dtype == "bf16" and entry is GEMM_CONFIGS[arch][0]:  # the other derivatives at the first tile
                    for grad in ("gelu_tanh_grad", "gelu_quick_grad"):
                        cases.append(_gemm_case(f"linear_{grad}-{dtype}-{tile}", dtype, meta, launch, arch, grad,
                                                units=_GRAD_UNIT_STRIDES, divisible=_GRAD_DIVISIBLE))  # fmt: skip
            for approximate in ("none", "tanh", "quick"):
                signature = dict.fromkeys(("DOUT", "PRE", "DH"), f"*{dtype}")
                signature |= {"numel": "i32", "APPROXIMATE": "constexpr", "BLOCK": "constexpr"}
                cases.append(AotCase(
                    name=f"linear_gelu_bwd_{approximate}-{dtype}", fn=_linear_gelu_bwd_kernel, signature=signature,
                    constexprs=dict(APPROXIMATE=approximate, BLOCK=GELU_BWD_CONFIG["BLOCK"]), arch=arch,
                    num_warps=GELU_BWD_CONFIG["num_warps"], num_stages=1, tensor_core_op=None,
                ))  # fmt: skip
    return cases


_KIND_EPILOGUE = {"fc1": "gelu", "fc2": "residual", "grad": "gelu_grad"}


def _binary_key(case: AotCase) -> tuple:
    """What decides the compiled binary: two cases with the same key compile the same code."""
    return (case.fn, case.arch, tuple(sorted(case.signature.items())), tuple(sorted(case.constexprs.items())),
            frozenset(case.divisible or ()), case.num_warps, case.num_stages)  # fmt: skip


def launch_cases(existing: list[AotCase] | None = None) -> list[AotCase]:
    """Family 2: the first configuration of each arch at the real ViT launches, bf16.

    A launch whose binary is already among ``existing`` (the shipped cases by
    default: M = 197 specializes exactly as they do) adds no case.
    """
    seen = {_binary_key(c) for c in (_shipped_cases() if existing is None else existing)}
    cases = []
    for arch in ("sm80", "sm90"):
        meta, launch = tuning.split(GEMM_CONFIGS[arch][0])
        for kind, epilogue in _KIND_EPILOGUE.items():
            for d_in, hidden in LAUNCH_SHAPES.values():
                for rows in LAUNCH_ROWS:
                    units, divisible = launch_specialization(launch_values(kind, rows, d_in, hidden))
                    m = "M16" if "M" in divisible else "Modd"
                    name = f"linear_{kind}_launch-bf16-{_tile(meta)}-{m}"
                    case = _gemm_case(name, "bf16", meta, launch, arch, epilogue, units=units, divisible=divisible,
                                      residual_dtype="fp32" if kind == "fc2" else None,
                                      scaled=kind == "fc2")  # fmt: skip
                    if _binary_key(case) not in seen:
                        seen.add(_binary_key(case))
                        cases.append(case)
    return cases


def tma_signature(meta: dict, dtype: str, out_dtype: str | None = None) -> dict:
    bm, bn, bk = meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"]
    out = out_dtype or dtype
    sub_n = bn // epilogue_split(4 if out == "fp32" else 2)
    types = {
        "X_DESC": f"tensordesc<{dtype}[{bm}, {bk}]>", "W_DESC": f"tensordesc<{dtype}[{bn}, {bk}]>",
        "Y_DESC": f"tensordesc<{out}[{bm}, {sub_n}]>", "PRE_DESC": f"tensordesc<{dtype}[{bm}, {sub_n}]>",
        "BIAS": f"*{dtype}", "RES": f"*{out}", "SCALE": "*fp32", "GAMMA": "*fp32",
    }  # fmt: skip
    types |= dict.fromkeys(("M", "N", "K", "ROWS_PER_SCALE", "stride_rm"), "i32")
    return {name: types.get(name, "constexpr") for name in _linear_tma_fwd_kernel.arg_names}


def tma_cases() -> list[AotCase]:
    """Family 3: the TMA kernel on sm_90, each configuration x epilogue x {bf16, fp16}."""
    cases = []
    for dtype in ("bf16", "fp16"):
        for entry in TMA_CONFIGS["sm90"]:
            meta, launch = tuning.split(entry)
            variants = [("gelu", "gelu", None, False, False), ("gelu_tanh", "gelu_tanh", None, False, False),
                        ("gelu_quick", "gelu_quick", None, False, False), ("residual", "residual", None, False, False),
                        ("residual_scaled_fp32res", "residual", "fp32", True, False),
                        ("residual_gamma_scaled_fp32res", "residual", "fp32", True, True)]  # fmt: skip
            for label, epilogue, out_dtype, scaled, gamma in variants:
                new = label in ("gelu_quick", "residual_gamma_scaled_fp32res")
                tier = "wide" if new and (dtype != "bf16" or entry is not TMA_CONFIGS["sm90"][0]) else "core"
                constexprs = dict(
                    meta, stride_rn=1, EPILOGUE=epilogue, HAS_BIAS=True, STORE_PRE=epilogue == "gelu",
                    HAS_SCALE=scaled, HAS_GAMMA=gamma, INPUT_PRECISION="ieee", DOT_IN_FP32=False, NUM_PROGRAMS=132,
                    SPLIT=epilogue_split(4 if out_dtype == "fp32" else 2),
                )  # fmt: skip
                divisible = ("BIAS", "RES", "SCALE", "GAMMA", "N", "K", "stride_rm")
                cases.append(AotCase(f"linear_tma_{label}-{dtype}-{_tile(meta)}", _linear_tma_fwd_kernel,
                                     tma_signature(meta, dtype, out_dtype), constexprs, "sm90", divisible=divisible,
                                     tier=tier, **launch))  # fmt: skip
    return cases


def aot_cases() -> list[AotCase]:
    shipped = _shipped_cases()
    return shipped + launch_cases(shipped) + tma_cases()
