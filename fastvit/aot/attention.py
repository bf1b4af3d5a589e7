"""Ahead-of-time compile cases for the attention kernels (see fastvit.aot).

Each case is compiled as Triton specializes the launch the models make: q, k, v
are (B, H, N, D) views of the packed (B, N, 3, H, D) qkv projection, the
output and dO views of a (B, N, H, D) buffer, dq/dk/dv views of one packed
gradient. An integer argument equal to 1 becomes a constant (the head-dim
strides) and one divisible by 16 carries that hint, exactly as the launch's
values give them: at head dim 72 the head stride (72) is *not* marked, so the
check compiles the loads that such a launch really runs.

Head dims 64 (ViT-S/B/L), 72 (SigLIP so400m), 80 (ViT-H, CLIP-H) and 128, in
bf16 and fp16 (and, in the "wide" tier compiled with ``-m slow``, the giant
presets' 88, 96 and 104 in bf16), every shipped configuration of every kernel that is not recorded
to spill there (those the autotuner prunes, see :mod:`fastvit.kernels.attention_spills`),
for sm_80 and sm_90, with the head tiles the launcher picks there (the backward's differ
on sm_80, see _attention_tiles.backward_head_tiles). fp32 has no cases: ``auto`` does not route fp32 to these kernels
(their tables are tuned for 16-bit tiles, and fp32 tiles of that size spill).
"""

from __future__ import annotations

import triton

from fastvit import shapes
from fastvit.kernels import attention_probs, flash_attention as fa
from fastvit.kernels._attention_tiles import backward_head_tiles, head_tiles
from fastvit.aot import AotCase
from fastvit.kernels.attention_spills import spill_bytes
from fastvit.kernels.tuning import split

# (head_dim, heads, tokens) of the core presets (fastvit.shapes), and the kernel's largest head dim.
MODEL_SHAPES = (*shapes.attention_shapes("core"), (128, 16, 577))
DTYPES = ("bf16", "fp16")
# The other presets' head dims (CLIP-g 88, SigLIP giant-opt 96, CLIP-G 104): the same kernels at
# other tile classes, bf16 only, in the "wide" tier (compiled with -m slow).
_CORE_HEAD_DIMS = {shape[0] for shape in MODEL_SHAPES}
WIDE_SHAPES = tuple(shape for shape in shapes.attention_shapes("wide") if shape[0] not in _CORE_HEAD_DIMS)
WIDE_DTYPES = ("bf16",)
# The entries recorded to spill (fastvit.kernels.attention_spills.SPILLS, which the autotuner
# prunes) are left out of the cases, so the check stays a real gate; pruned_cases() compiles them
# for the test that proves they still spill. At the core head dims only the sm_80 backward has any.


def _signature(fn, dtype: str, constexprs: dict) -> dict:
    """Triton types of ``fn``'s arguments: upper-case names are tensors (LSE and
    DELTA fp32), ``*scale`` are fp32, the rest i32 sizes and strides."""

    def kind(name):
        if name in constexprs:
            return "constexpr"
        if name in ("LSE", "DELTA"):
            return "*fp32"
        if name.isupper():
            return f"*{dtype}"
        return "fp32" if name.endswith("scale") else "i32"

    return {name: kind(name) for name in fn.arg_names}


def launch_ints(head_dim: int, heads: int, tokens: int, batch: int = 64) -> dict:
    """The integer arguments of a ViT launch, by argument name (strides in elements)."""
    packed = (tokens * 3 * heads * head_dim, head_dim, 3 * heads * head_dim, 1)  # (B, H, N, D) view of qkv
    merged = (tokens * heads * head_dim, head_dim, heads * head_dim, 1)  # view of a (B, N, H, D) buffer
    ints = dict(num_heads=heads, n_q=tokens, n_kv=tokens)
    for prefix, strides in (("sq", packed), ("sk", packed), ("sv", packed), ("so", merged), ("sdo", merged),
                            ("sdq", packed), ("sdk", packed), ("sdv", packed)):  # fmt: skip
        ints.update({f"{prefix}_{axis}": s for axis, s in zip("bhnd", strides)})
    return ints


def _case(label, fn, dtype, arch, constexprs, launch, ints, **kwargs) -> AotCase:
    """Integers equal to 1 become constexprs and those divisible by 16 carry the
    hint, as Triton specializes them; every pointer is 16-byte aligned (the
    packed q, k, v start H * D elements apart)."""
    constexprs = {**constexprs, **{n: 1 for n in fn.arg_names if ints.get(n) == 1}}
    signature = _signature(fn, dtype, constexprs)
    divisible = tuple(
        n for n, t in signature.items() if t.startswith("*") or (t == "i32" and ints[n] % 16 == 0)
    )
    return AotCase(label, fn, signature, constexprs, arch, **launch, divisible=divisible, **kwargs)


def _all_cases() -> list[tuple[AotCase, int | None]]:
    """Every (case, recorded spill bytes or None) of the shipped tables at MODEL_SHAPES."""
    tuned = (
        ("attention_fwd", fa.KERNELS["fwd"].fn, fa.CONFIGS["fwd"], dict(NEG_SCALE=False)),
        ("attention_bwd_dkdv", fa.KERNELS["bwd_dkdv"].fn, fa.CONFIGS["bwd_dkdv"], {}),
        ("attention_bwd_dq", fa.KERNELS["bwd_dq"].fn, fa.CONFIGS["bwd_dq"], {}),
    )
    delta_meta, delta_launch = split(fa.DELTA_CONFIG)
    cases = []
    shapes = [(shape, DTYPES, "core") for shape in MODEL_SHAPES] + [(shape, WIDE_DTYPES, "wide") for shape in WIDE_SHAPES]
    for (head_dim, heads, tokens), dtypes, tier in shapes:
        ints = launch_ints(head_dim, heads, tokens)
        for dtype in dtypes:
            for arch in ("sm80", "sm90"):
                head = dict(HEAD_DIM=head_dim, PRECISION="ieee", INTERPRET=False)
                fwd_tiles, bwd_tiles = head_tiles(head_dim), backward_head_tiles(head_dim, arch)
                cases.append((_case(
                    f"attention_bwd_delta-{dtype}-d{head_dim}", fa.KERNELS["bwd_delta"], dtype, arch,
                    dict(HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)), **delta_meta), delta_launch, ints,
                    tensor_core_op=None, tier=tier,
                ), None))  # fmt: skip
                for name, fn, table, extra in tuned:
                    for entry in table[arch] + [e for e in table["default"] if e not in table[arch]]:
                        meta, launch = split(entry)
                        spilled = spill_bytes(arch, name, head_dim, entry)
                        label = f"{name}-{dtype}-d{head_dim}-m{meta['BLOCK_M']}n{meta['BLOCK_N']}"
                        tiles = dict(zip(("BLOCK_D", "BLOCK_D2"), fwd_tiles if name == "attention_fwd" else bwd_tiles))
                        case = _case(label, fn, dtype, arch, {**head, **tiles, **extra, **meta}, launch, ints, tier=tier)
                        cases.append((case, spilled))
    return cases


def aot_cases() -> list[AotCase]:
    """The compile check's cases: every shipped entry the autotuner can launch there."""
    return [case for case, spilled in _all_cases() if spilled is None]


def pruned_cases(tiers=("core", "wide")) -> list[AotCase]:
    """The entries recorded to spill, which the autotuner prunes at that head dim (not in the check)."""
    return [case for case, spilled in _all_cases() if spilled is not None and case.tier in tiers]


def known_spills() -> dict:
    """(arch, head_dim, kernel, BLOCK_M, BLOCK_N, num_warps, num_stages) -> recorded stack bytes, at every shape."""
    found = {}
    for case, spilled in _all_cases():
        if spilled is not None:
            c = case.constexprs
            kernel = case.name.split("-")[0]
            found[(case.arch, c["HEAD_DIM"], kernel, c["BLOCK_M"], c["BLOCK_N"], case.num_warps, case.num_stages)] = spilled
    return found


def probs_cases() -> list[AotCase]:
    """attention_probs' kernel (the maps ``fastvit analyze`` draws) for sm_80 and sm_90: bf16 at head_dim 128 (the largest tile) and fp16 at 80
    (a masked head dim), compiled as a launch on a packed qkv specializes it (unit head-dim
    and key-column strides, the rest divisible by 16)."""
    fn = attention_probs.KERNELS["fwd"]
    BLOCK_M, BLOCK_N, NUM_WARPS = attention_probs.BLOCK_M, attention_probs.BLOCK_N, attention_probs.NUM_WARPS
    cases = []
    for dtype, head_dim in (("bf16", 128), ("fp16", 80)):
        constexprs = dict(HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)), UPCAST=False,
                          BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, sq_d=1, sk_d=1, sp_n=1)  # fmt: skip
        signature = {}
        for name in fn.arg_names:
            if name in constexprs:
                signature[name] = "constexpr"
            elif name in ("LSE", "P"):
                signature[name] = "*fp32"
            elif name.isupper():
                signature[name] = f"*{dtype}"
            else:
                signature[name] = "fp32" if name == "qk_scale" else "i32"
        divisible = tuple(n for n, t in signature.items() if t.startswith("*") or (t == "i32" and n.startswith("s")))
        for arch in ("sm80", "sm90"):
            cases.append(AotCase(f"attention_probs-{dtype}-d{head_dim}", fn, signature, constexprs, arch,
                                 num_warps=NUM_WARPS, num_stages=1, divisible=divisible))  # fmt: skip
    return cases
