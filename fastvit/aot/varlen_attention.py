"""Ahead-of-time compile cases for the variable-length attention kernels (see fastvit.aot).

Each case is compiled as Triton specializes the launch a NaFlex model makes: q, k, v are
(T, H, D) views of the packed (T, 3, H, D) qkv projection, the output, dO and the gradients
contiguous (T, H, D). Integer arguments equal to 1 (the head-dim strides) become constants,
those divisible by 16 carry the hint; the packed row count ``total``, ``max_seqlen`` and its
bucket vary per batch and are left unmarked, so the binary is the one any batch runs.

Head dims 64 (NaFlexViT-B, SigLIP 2 B) and 72 (SigLIP 2 so400m), bf16 (the default run) and
fp16 (``-m slow``: the same tiles and instructions), every entry of every table for sm_80 and
sm_90 (the "default" entries for sm_80) with the head tiles the launcher picks there. Every case must compile without spilling (tests/kernels/test_aot.py); the
tables hold no entry that does.
"""

from __future__ import annotations

import triton

from fastvit.aot import AotCase
from fastvit.kernels import varlen_attention_op as va
from fastvit.kernels._attention_tiles import backward_head_tiles, head_tiles
from fastvit.kernels.tuning import split

# (head_dim, heads) of the NaFlex models the kernel serves.
SHAPES = ((64, 12), (72, 16))
DTYPES = ("bf16", "fp16")
ARCHS = ("sm80", "sm90")


def _signature(fn, dtype: str, constexprs: dict) -> dict:
    """Upper-case names are tensors (LSE, DELTA fp32; CU_SEQLENS int32), ``*scale`` fp32, the rest i32."""

    def kind(name):
        if name in constexprs:
            return "constexpr"
        if name in ("LSE", "DELTA"):
            return "*fp32"
        if name == "CU_SEQLENS":
            return "*i32"
        if name.isupper():
            return f"*{dtype}"
        return "fp32" if name.endswith("scale") else "i32"

    return {name: kind(name) for name in fn.arg_names}


def launch_ints(head_dim: int, heads: int) -> dict:
    """The integer arguments a NaFlex launch fixes, by name (strides in elements)."""
    packed = (3 * heads * head_dim, head_dim, 1)  # (T, H, D) view of the (T, 3, H, D) qkv
    dense = (heads * head_dim, head_dim, 1)  # a contiguous (T, H, D) tensor
    ints = dict(num_heads=heads)
    for prefix, strides in (("sq", packed), ("sk", packed), ("sv", packed), ("so", dense), ("sdo", dense),
                            ("sdq", dense), ("sdk", dense), ("sdv", dense)):  # fmt: skip
        ints.update({f"{prefix}_{axis}": s for axis, s in zip("thd", strides)})
    return ints


def _case(label, fn, dtype, arch, constexprs, launch, ints, **kwargs) -> AotCase:
    constexprs = {**constexprs, **{n: 1 for n in fn.arg_names if ints.get(n) == 1}}
    signature = _signature(fn, dtype, constexprs)
    divisible = tuple(n for n, t in signature.items()
                      if t.startswith("*") or (t == "i32" and n in ints and ints[n] % 16 == 0))  # fmt: skip
    return AotCase(label, fn, signature, constexprs, arch, **launch, divisible=divisible, **kwargs)


def _entries(table: dict, arch: str) -> list[dict]:
    """``arch``'s entries; on sm_80 also the "default" ones, which GPUs outside the tables (Turing,
    consumer Blackwell) launch: their mma path is Ampere's, not Hopper's warp-group one."""
    extra = [e for e in table["default"] if e not in table[arch]] if arch == "sm80" else []
    return table[arch] + extra


def aot_cases() -> list[AotCase]:
    """Every shipped entry of the forward, dK/dV and dQ tables, and the delta kernel, at SHAPES."""
    tuned = (
        ("varlen_attention_fwd", va.KERNELS["fwd"].fn, va.CONFIGS["fwd"], dict(NEG_SCALE=False)),
        ("varlen_attention_bwd_dkdv", va.KERNELS["bwd_dkdv"].fn, va.CONFIGS["bwd_dkdv"], {}),
        ("varlen_attention_bwd_dq", va.KERNELS["bwd_dq"].fn, va.CONFIGS["bwd_dq"], {}),
    )
    delta_meta, delta_launch = split(va.DELTA_CONFIG)
    cases = []
    for head_dim, heads in SHAPES:
        ints = launch_ints(head_dim, heads)
        for dtype in DTYPES:
            tier = "core" if dtype == "bf16" else "wide"
            for arch in ARCHS:
                cases.append(_case(
                    f"varlen_attention_bwd_delta-{dtype}-d{head_dim}", va.KERNELS["bwd_delta"], dtype, arch,
                    dict(HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)), **delta_meta),
                    delta_launch, ints, tensor_core_op=None, tier=tier,  # a row reduction: no product
                ))  # fmt: skip
                head = dict(HEAD_DIM=head_dim, PRECISION="ieee", INTERPRET=False)
                for name, fn, table, extra in tuned:
                    tiles = head_tiles(head_dim) if name.endswith("_fwd") else backward_head_tiles(head_dim, arch)
                    for entry in _entries(table, arch):
                        meta, launch = split(entry)
                        label = f"{name}-{dtype}-d{head_dim}-m{meta['BLOCK_M']}n{meta['BLOCK_N']}"
                        constexprs = {**head, **dict(zip(("BLOCK_D", "BLOCK_D2"), tiles)), **extra, **meta}
                        cases.append(_case(label, fn, dtype, arch, constexprs, launch, ints, tier=tier))
    return cases

