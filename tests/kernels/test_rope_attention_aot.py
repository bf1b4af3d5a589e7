"""The fused rotary attention's compile cases (fastvit.aot.rope_attention) and the shapes they come from.

tests/kernels/test_aot.py compiles every case for sm_80 and sm_90 and fails any that spills
registers (cuobjdump, shipped with Triton); here: the cases are every shipped entry of the three
kernels' tables at head dim 64 in the default run, the shapes are the eva presets', and the
reason the sm_80 dK/dV kernel streams 16- or 32-row tiles still holds (a 64-row one spills).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastvit import shapes
from fastvit.aot import rope_attention as aot
from fastvit.kernels import flash_rope_attention as rope

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_rope_shapes_are_the_eva_presets():
    from fastvit.presets_eva import get_eva_config, list_eva_models

    rotary = [n for n in list_eva_models() if get_eva_config(n).use_rot_pos_emb]
    assert [s.preset for s in shapes.rope_shapes()] == rotary
    base, large, eva = shapes.rope_shapes("core")
    # DINOv3 at its native 256 px: 16 x 16 patches, a class token and 4 registers unrotated, half pairs
    assert (base.heads, base.head_dim, base.tokens, base.num_prefix, base.rotate_half) == (12, 64, 261, 5, True)
    assert (large.heads, large.tokens, large.num_prefix) == (16, 261, 5)
    # EVA-02-B at 224 / 14: 16 x 16 patches and a class token, interleaved pairs
    assert (eva.heads, eva.head_dim, eva.tokens, eva.num_prefix, eva.rotate_half) == (12, 64, 257, 1, False)
    assert any(s.per_head for s in shapes.rope_shapes())  # mixed RoPE's per-head tables
    with pytest.raises(ValueError, match="tier must be one of"):
        shapes.rope_shapes("all")


def test_cases_cover_every_shipped_entry_at_head_dim_64():
    """Default run: bf16, both pair layouts, both archs, each table's entries and its default entry."""
    cases = aot.aot_cases()
    assert len({str(c) for c in cases}) == len(cases)
    core = [c for c in cases if c.tier == "core"]
    for layout in ("d64-half", "d64-pairs"):
        for arch in aot.ARCHS:
            for name, pass_name in aot.KERNELS.items():
                table = rope.CONFIGS[pass_name]
                want = {(e["BLOCK_M"], e["BLOCK_N"], e["num_warps"], e["num_stages"]) for e in table[arch] + table["default"]}
                got = {(c.constexprs["BLOCK_M"], c.constexprs["BLOCK_N"], c.num_warps, c.num_stages) for c in core
                       if c.arch == arch and c.name.startswith(f"{name}-bf16-{layout}-m")}  # fmt: skip
                assert got == want, (layout, arch, name)
    # launched as a model launches: unit head-dim strides and EVA's one prefix token are constants
    eva = next(c for c in core if "pairs" in c.name)
    assert eva.constexprs["sq_d"] == 1 and eva.constexprs["num_prefix"] == 1 and eva.signature["T"] == "*fp32"
    assert {c.tier for c in cases if "fp16" in c.name or "heads" in c.name} == {"wide"}


_CHILD = """
import dataclasses, json
from fastvit.aot import compile_case, resource_usage
from fastvit.aot import rope_attention as aot
base = next(c for c in aot.aot_cases() if str(c) == "rope_attention_bwd_dkdv-bf16-d64-half-m16n128-sm80-w8s2")
out = {}
for label, case in (("shipped", base),
                    ("64 rows", dataclasses.replace(base, constexprs={**base.constexprs, "BLOCK_M": 64, "BLOCK_N": 64}))):
    out[label] = resource_usage(compile_case(case).asm["cubin"])
print(json.dumps(out))
"""


def test_sm80_backward_streams_16_rows_because_64_spill():
    """The sm_80 dK/dV kernel at head dim 64: the shipped 16-row streamed tile uses no stack, a 64-row
    one (the plain attention's choice) spills, so the table's reason is still the compiler's."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    usage = json.loads(proc.stdout.strip().splitlines()[-1])
    assert usage["shipped"] is not None, "cuobjdump (shipped with Triton) not found"
    assert usage["shipped"]["stack"] == 0 and usage["shipped"]["local"] == 0, usage
    assert usage["64 rows"]["stack"] > 64, usage
