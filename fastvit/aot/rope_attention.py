"""Ahead-of-time compile cases of the fused rotary attention (:mod:`fastvit.kernels.flash_rope_attention`).

Compiled as Triton specializes the launch an eva-family model makes: q, k, v (B, H, N, D) views
of the packed (B, N, 3, H, D) qkv projection, the output and dO views of a (B, N, H, D) buffer,
dq / dk / dv fresh contiguous tensors, one fp32 table shared by the heads (head stride 0) or one
per head (mixed RoPE). An integer equal to 1 becomes a constant (the head-dim strides, EVA's one
prefix token) and one divisible by 16 carries that hint, as the launch's values give them.

The core tier is the shapes of :data:`fastvit.shapes.CORE_ROPE_PRESETS` at head dim 64 (DINOv3:
261 tokens, 5 prefix tokens, half pairs; EVA-02: 257 tokens, a class token, interleaved pairs)
in bf16: every shipped configuration of the forward, dK/dV and dQ kernels for sm_80 and sm_90;
the check fails any that spills. The "wide" tier (``-m slow``) adds them in fp16, and the eva
presets' other layout at that head dim in bf16 (per-head tables: mixed RoPE). See
:data:`HEAD_DIMS` for the head dims left out. The delta kernel is the plain attention's, compiled
with its cases.
"""

from __future__ import annotations

from fastvit import shapes
from fastvit.aot import AotCase
from fastvit.kernels import flash_rope_attention as rope
from fastvit.kernels._rope_tiles import full_block, half_block
from fastvit.kernels.tuning import split

ARCHS = ("sm80", "sm90")
# The head dims compiled: 64, that of all but 4 rotary eva presets. At 96 (timm's SBB RoPE ViTs
# without a class token) and 128 (DINOv3 ViT-7B) the kernels compile too, but half the entries
# spill (mostly the backward's, on both archs; Triton 3.9: 24 B to 4.4 KB): those launches run,
# slower, and are not part of the check.
HEAD_DIMS = (64,)
KERNELS = {"rope_attention_fwd": "fwd", "rope_attention_bwd_dkdv": "bwd_dkdv", "rope_attention_bwd_dq": "bwd_dq"}


def _layouts(tier: str) -> list[shapes.RopeShape]:
    """One shape per (head_dim, rotate_half, per_head) class of the tier's presets (the first) at
    :data:`HEAD_DIMS`; the wide tier only those the core tier lacks."""
    found: dict[tuple, shapes.RopeShape] = {}
    for s in shapes.rope_shapes(tier):
        if s.head_dim not in HEAD_DIMS:
            continue
        found.setdefault((s.head_dim, s.rotate_half, s.per_head), s)
    if tier == "wide":
        core = {key for key in (_key(s) for s in _layouts("core"))}
        return [s for key, s in found.items() if key not in core]
    return list(found.values())


def _key(s: shapes.RopeShape) -> tuple:
    return (s.head_dim, s.rotate_half, s.per_head)


def launch_ints(s: shapes.RopeShape) -> dict:
    """The integer arguments of the launch at shape ``s``, by argument name (strides in elements)."""
    h, d, n = s.heads, s.head_dim, s.tokens
    packed = (n * 3 * h * d, d, 3 * h * d, 1)  # (B, H, N, D) view of qkv
    merged = (n * h * d, d, h * d, 1)  # view of a (B, N, H, D) buffer
    fresh = (h * n * d, n * d, d, 1)  # contiguous (B, H, N, D)
    ints = dict(num_heads=h, n=n, num_prefix=s.num_prefix, st_n=d // 2,
                st_h=(n - s.num_prefix) * (d // 2) if s.per_head else 0)  # fmt: skip
    for prefix, strides in (("sq", packed), ("sk", packed), ("sv", packed), ("so", merged), ("sdo", merged),
                            ("sdq", fresh), ("sdk", fresh), ("sdv", fresh)):  # fmt: skip
        ints.update({f"{prefix}_{axis}": v for axis, v in zip("bhnd", strides)})
    return ints


def _case(label: str, fn, dtype: str, arch: str, constexprs: dict, launch: dict, ints: dict, tier: str) -> AotCase:
    constexprs = {**constexprs, **{name: 1 for name in fn.arg_names if ints.get(name) == 1}}

    def kind(name):
        if name in constexprs:
            return "constexpr"
        if name in ("LSE", "DELTA", "T"):
            return "*fp32"
        if name.isupper():
            return f"*{dtype}"
        return "fp32" if name.endswith("scale") else "i32"

    signature = {name: kind(name) for name in fn.arg_names}
    divisible = tuple(n for n, t in signature.items() if t.startswith("*") or (t == "i32" and ints[n] % 16 == 0))
    return AotCase(label, fn, signature, constexprs, arch, **launch, divisible=divisible, tier=tier)


def aot_cases() -> list[AotCase]:
    """Every shipped entry of the three kernels' tables (and the "default" one) at each layout."""
    layouts = [("core", "bf16", s) for s in _layouts("core")]
    layouts += [("wide", "fp16", s) for s in _layouts("core")] + [("wide", "bf16", s) for s in _layouts("wide")]
    cases = []
    for tier, dtype, s in layouts:
        ints = launch_ints(s)
        head = dict(HEAD_DIM=s.head_dim, BLOCK_H=half_block(s.head_dim), BLOCK_D=full_block(s.head_dim),
                    ROTATE_HALF=s.rotate_half, PRECISION="ieee", INTERPRET=False)  # fmt: skip
        layout = f"d{s.head_dim}-{'half' if s.rotate_half else 'pairs'}{'-heads' if s.per_head else ''}"
        for arch in ARCHS:
            for name, pass_name in KERNELS.items():
                table, fn = rope.CONFIGS[pass_name], rope.KERNELS[pass_name].fn
                for entry in table[arch] + [e for e in table["default"] if e not in table[arch]]:
                    meta, launch = split(entry)
                    label = f"{name}-{dtype}-{layout}-m{meta['BLOCK_M']}n{meta['BLOCK_N']}"
                    cases.append(_case(label, fn, dtype, arch, {**head, **meta}, launch, ints, tier))
    return cases
