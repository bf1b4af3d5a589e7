"""Ahead-of-time compile cases of the LayerNorm kernels (:mod:`fastvit.kernels.norm`).

:func:`launch_spec` states how :func:`~fastvit.kernels.norm.layer_norm_fwd`
and ``layer_norm_bwd`` launch a kernel on contiguous ``(rows, width)`` tensors: the
constexprs (``BLOCK_M``, ``BLOCK_N`` from the width) and which integer
arguments Triton will specialize as divisible by 16 (the row strides and ``N``
when the width divides by 16, as every ViT width does: that is what turns the
row loads into 128-bit vector loads). :func:`aot_cases` compiles each kernel
at every shipped configuration of every architecture table, for every width
the presets use (and 1152, SigLIP So400m), so the check compiles the binaries
the models run. Widths that give the same binary (768 and 1024 share
``BLOCK_N = 1024``) compile once.
"""

from __future__ import annotations

from fastvit import shapes
from fastvit.kernels import norm, tuning
from fastvit.aot import AotCase, divisible_args
from fastvit.kernels.norm import BWD_CONFIGS, FWD_CONFIGS, GPU_ROW_TILE, block_sizes

# The raw @triton.jit functions under the autotuners.
_layer_norm_fwd_kernel = norm.KERNELS["fwd"].fn
_layer_norm_bwd_kernel = norm.KERNELS["bwd"].fn

# Every preset width (fastvit.shapes: ViT-Ti 192 ... CLIP-gigantic 1664); the core tier's compile in
# every default test run at every config and dtype, the other widths are "wide" (-m slow).
AOT_WIDTHS = shapes.widths("wide")
CORE_WIDTHS = shapes.widths("core")
ARCHS = ("sm80", "sm90")
DTYPES = ("bf16", "fp16")
# name -> (kernel, flag constexpr, its value, configs table)
KERNELS = {
    "layer_norm_fwd": (_layer_norm_fwd_kernel, "HAS_RESIDUAL", False, FWD_CONFIGS),
    "add_layer_norm_fwd": (_layer_norm_fwd_kernel, "HAS_RESIDUAL", True, FWD_CONFIGS),
    "layer_norm_bwd": (_layer_norm_bwd_kernel, "HAS_DS", False, BWD_CONFIGS),
    "add_layer_norm_bwd": (_layer_norm_bwd_kernel, "HAS_DS", True, BWD_CONFIGS),
    # RMSNorm (fastvit.kernels.rms): the same kernels with IS_RMS (no mean, no bias)
    "rms_norm_fwd": (_layer_norm_fwd_kernel, "HAS_RESIDUAL", False, FWD_CONFIGS),
    "rms_norm_bwd": (_layer_norm_bwd_kernel, "HAS_DS", False, BWD_CONFIGS),
    "rms_norm_fork_bwd": (_layer_norm_bwd_kernel, "HAS_DS", True, BWD_CONFIGS),  # the residual's gradient added
}


def _signature(kernel, ptr: str, out: str | None = None) -> dict:
    """Triton types: activations and weights ``ptr`` (the forward's OUT and the
    backward's DOUT ``out``, default ``ptr``), stats and partial sums fp32, sizes and strides i32."""
    if kernel is _layer_norm_fwd_kernel:
        pointers = dict(X=ptr, Y=ptr, W=ptr, B=ptr, S=ptr, OUT=out or ptr, MEAN="*fp32", RSTD="*fp32")
        ints = ("stride_x", "stride_y", "stride_s", "stride_out", "stride_x_inner", "M", "N")
        tail = dict(eps="fp32", BLOCK_M="constexpr", BLOCK_N="constexpr", HAS_RESIDUAL="constexpr", IS_RMS="constexpr")
    else:
        pointers = dict(DOUT=out or ptr, DS=ptr, X=ptr, W=ptr, MEAN="*fp32", RSTD="*fp32", DX=ptr,
                        DW_PARTIAL="*fp32", DB_PARTIAL="*fp32")  # fmt: skip
        ints = ("stride_dout", "stride_ds", "stride_x", "stride_dx", "stride_x_inner", "M", "N", "rows_per_program")
        tail = dict(BLOCK_M="constexpr", BLOCK_N="constexpr", HAS_DS="constexpr", ROW_STAGES="constexpr",
                    IS_RMS="constexpr")  # fmt: skip
    # rows_inner is 1 (a constant to Triton) for every layout but qk-norm's (see qk_norm_cases)
    types = {**pointers, **{k: "i32" for k in ints}, **tail, "rows_inner": "constexpr"}
    return {name: types[name] for name in kernel.arg_names}


def launch_spec(name: str, dtype: str, width: int, meta: dict | None = None, in_dtype: str | None = None) -> dict:
    """Keyword arguments of :class:`AotCase` (fn, signature, constexprs, divisible)
    for kernel ``name`` launched on contiguous ``dtype`` rows of ``width``.

    ``in_dtype``: the residual stream's dtype when it differs from the normalized
    output's (an fp32 stream normalized into a bf16/fp16 GEMM input, under
    autocast): the forward reads x (and weights) in it and stores ``dtype``; the
    backward reads ``dtype`` dout and x, ds, weights in it and writes dx in it
    (a block norm's fork, ``layer_norm_fork``, adds the fp32 residual gradient).
    ``meta``: the config entry's constexprs (``ROW_STAGES`` for the backward).
    The row count and rows per program depend on the batch and are not marked.
    """
    fn, flag, on, _ = KERNELS[name]
    block_m, block_n = block_sizes(width, GPU_ROW_TILE)
    ptr = f"*{in_dtype or dtype}"
    signature = _signature(fn, ptr, f"*{dtype}")
    if fn is _layer_norm_fwd_kernel and not on:
        signature["S"] = signature["OUT"]  # the launcher passes the output as the unused S
    if fn is _layer_norm_bwd_kernel and not on:
        signature["DS"] = signature["DOUT"]  # and dout as the unused DS
    values = {k: width for k in signature if k.startswith("stride_") or k == "N"}
    constexprs = dict(BLOCK_M=block_m, BLOCK_N=block_n, rows_inner=1, IS_RMS=name.startswith("rms_"), **{flag: on},
                      **(meta or {}))  # fmt: skip
    return dict(fn=fn, signature=signature, constexprs=constexprs, divisible=divisible_args(signature, values))


def _ptx_checks(name: str, width: int, meta: dict, launch: dict, in_dtype: str | None) -> dict:
    """At widths that divide by 16 the loads are vectors, not scalar loads of the
    element type (the pointers-only compile showed 32 ``ld.global.b16`` per bf16
    row tile). The 1-d weight/bias loads can only be vectors when each thread
    holds 2+ of their ``BLOCK_N`` elements (not at ViT-Ti's 192 with 8 warps:
    256 threads, one element each): there only the row tiles must be vector
    loads. The backward's pipelined loop copies 16-byte chunks asynchronously
    (``cp.async.cg``); the fp32 mean/rstd it loads are one scalar per row, so only
    16-bit scalar loads count there."""
    if width % 16:
        return {}
    _, block_n = block_sizes(width, GPU_ROW_TILE)
    checks = {}
    if block_n >= 2 * 32 * launch.get("num_warps", 4):
        # the backward's fp32 mean/rstd are scalar b32 loads: there the half dout's b16 ones count
        wide = in_dtype == "fp32" and not name.endswith("_bwd")
        checks["forbid_ptx"] = ("ld.global.b32" if wide else "ld.global.b16",)
    if name.endswith("_bwd"):
        if meta.get("ROW_STAGES", 1) > 1:
            checks["expect_ptx"] = ("cp.async.cg.shared.global",)
    elif "forbid_ptx" not in checks:
        checks["expect_ptx"] = ("ld.global.v4",)  # the (BLOCK_M, BLOCK_N) row tiles
    return checks


def _tier(name: str, dtype: str, width: int, first: bool) -> str:
    """The case's tier: "core" (compiled in every default run) at the core widths; RMSNorm's (LayerNorm's kernels again,
    with IS_RMS) there only in bf16 at each arch's first configuration; the rest "wide" (-m slow)."""
    if width not in CORE_WIDTHS or (name.startswith("rms_") and (dtype != "bf16" or not first)):
        return "wide"
    return "core"


def _shipped(table: dict, arch: str) -> list[dict]:
    """An architecture's entries and the "default" ones (used there with autotuning off), each once."""
    entries = []
    for entry in table[arch] + table["default"]:
        if entry not in entries:
            entries.append(entry)
    return entries


def aot_cases() -> list[AotCase]:
    """Every kernel x shipped config x {sm80, sm90} x {bf16, fp16} x preset width (LayerNorm's and
    RMSNorm's), plus the plain forward from an fp32 input into a half output and both backwards
    from a half dout into fp32 gradients (block norms under autocast, their fork's
    backward included), for LayerNorm and RMSNorm (its fork's backward too); one case per distinct
    binary; :func:`_tier` says which compile by default."""
    cases, seen = [], set()
    for arch in ARCHS:
        for name, (fn, _, _, table) in KERNELS.items():
            for entry in _shipped(table, arch):
                meta, launch = tuning.split(entry)
                for dtype in DTYPES:
                    # core widths first: a wide width that compiles to the same binary is then the duplicate
                    for width in sorted(AOT_WIDTHS, key=lambda w: w not in CORE_WIDTHS):
                        in_dtypes = (None,) if name == "add_layer_norm_fwd" else (None, "fp32")
                        for in_dtype in in_dtypes:
                            spec = launch_spec(name, dtype, width, meta, in_dtype)
                            key = (arch, name, dtype, in_dtype, tuple(sorted(spec["constexprs"].items())),
                                   spec["divisible"], tuple(sorted(launch.items())))  # fmt: skip
                            if key in seen:
                                continue
                            seen.add(key)
                            mixed = ("fp32-from-" if name.endswith("_bwd") else "fp32-to-") if in_dtype else ""
                            label = f"{name}-{mixed}{dtype}-N{width}"
                            if "ROW_STAGES" in meta:
                                label += f"-r{meta['ROW_STAGES']}"
                            cases.append(AotCase(
                                name=label, arch=arch, tensor_core_op=None, **spec, **launch,
                                **_ptx_checks(name, width, meta, launch, in_dtype),
                                tier=_tier(name, dtype, width, entry is table[arch][0]),
                            ))  # fmt: skip
    return cases + qk_norm_cases()


# qk-norm: (head_dim, heads) of the core presets (fastvit.shapes): ViT-B (64, 12), SigLIP So400m (72, 16),
# ViT-H / CLIP-H (80, 16)
QK_NORM_HEADS = shapes.qk_norm_layouts("core")


def qk_norm_cases() -> list[AotCase]:
    """LayerNorm forward and backward over the in-place q / k slice of a packed qkv, bf16, at each
    arch's first configuration: ``rows_inner = heads`` (not the constant 1) and row strides
    ``(3 * heads * head_dim, head_dim)``, the divisibility those values have (72 is not a multiple of 16)."""
    cases = []
    for arch in ARCHS:
        for name in ("layer_norm_fwd", "layer_norm_bwd"):
            fn, _, _, table = KERNELS[name]
            meta, launch = tuning.split(_shipped(table, arch)[0])
            for head_dim, heads in QK_NORM_HEADS.items():
                spec = launch_spec(name, "bf16", head_dim, meta)
                spec["signature"]["rows_inner"] = "i32"
                del spec["constexprs"]["rows_inner"]
                values = {k: head_dim for k in spec["signature"] if k.startswith("stride_")}
                values |= dict(N=head_dim, stride_x=3 * heads * head_dim, rows_inner=heads)
                spec["divisible"] = divisible_args(spec["signature"], values)
                cases.append(AotCase(name=f"{name}_qk-bf16-hd{head_dim}", arch=arch, tensor_core_op=None, **spec,
                                     **launch))  # fmt: skip
    return cases
