"""The variable-length attention kernels in the compile check (sm_80 and sm_90, head dims 64 and 72).

tests/kernels/test_aot.py compiles every case of fastvit.aot.varlen_attention in its default run
and fails any that spills registers; here: those cases are every shipped table entry at both head
dims, in both 16-bit dtypes, for both architectures, and the entries the tables leave out (their
comments say they spill at head dim 72) still spill, so the record cannot drift from the compiler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastvit.aot import varlen_attention as aot
from fastvit.aot.cases import all_cases, cases_of
from fastvit.kernels import varlen_attention_op as va

ARCHS = ("sm80", "sm90")
TABLES = {"varlen_attention_fwd": va.FWD_CONFIGS, "varlen_attention_bwd_dkdv": va.DKDV_CONFIGS,
          "varlen_attention_bwd_dq": va.DQ_CONFIGS}  # fmt: skip
# (arch, kernel, BLOCK_M, BLOCK_N, num_warps, num_stages) left out of the tables: spills at head dim 72
LEFT_OUT = {
    ("sm90", "varlen_attention_fwd", 64, 64, 4, 3): 48,
    ("sm90", "varlen_attention_bwd_dkdv", 32, 128, 8, 2): 32,
    ("sm80", "varlen_attention_bwd_dq", 64, 64, 8, 2): 88,
    ("sm90", "varlen_attention_bwd_dq", 32, 64, 4, 2): 56,  # the "default" entry, checked on sm_80 only
}  # fmt: skip


def _key(case):
    c = case.constexprs
    return (case.arch, case.name.split("-")[0], c["BLOCK_M"], c["BLOCK_N"], case.num_warps, case.num_stages)


def test_cases_cover_every_entry_at_head_dims_64_and_72():
    cases = cases_of("varlen_attention")
    assert cases == aot.aot_cases() and all(c.tier == ("core" if "-bf16-" in c.name else "wide") for c in cases)
    names = [str(c) for c in cases]
    assert len(names) == len(set(names))
    assert set(names) <= {str(c) for c in all_cases()}
    for arch in ARCHS:
        for dtype in aot.DTYPES:
            for head_dim in (64, 72):
                assert f"varlen_attention_bwd_delta-{dtype}-d{head_dim}-{arch}-w4s1" in names
                for kernel, table in TABLES.items():
                    extra = [e for e in table["default"] if e not in table[arch]] if arch == "sm80" else []
                    entries = table[arch] + extra
                    for e in entries:
                        name = (f"{kernel}-{dtype}-d{head_dim}-m{e['BLOCK_M']}n{e['BLOCK_N']}-{arch}"
                                f"-w{e['num_warps']}s{e['num_stages']}")  # fmt: skip
                        assert name in names, name
    # each compiled as the packed-qkv launch specializes it: unit head-dim strides, head stride 72 unaligned
    fwd72 = next(c for c in cases if c.name.startswith("varlen_attention_fwd-bf16-d72-"))
    assert fwd72.constexprs["sq_d"] == 1 and "sq_h" not in fwd72.divisible and "sq_t" in fwd72.divisible
    assert fwd72.signature["CU_SEQLENS"] == "*i32" and "total" not in fwd72.divisible
    shipped = {_key(c) for c in cases if "BLOCK_N" in c.constexprs}
    assert not shipped & set(LEFT_OUT)


_CHILD = """
import json, sys
from fastvit.aot import compile_case, resource_usage, varlen_attention as aot
from fastvit.kernels import varlen_attention_op as va
from fastvit.kernels._attention_tiles import backward_head_tiles, head_tiles
fn = {"varlen_attention_fwd": va.KERNELS["fwd"].fn, "varlen_attention_bwd_dkdv": va.KERNELS["bwd_dkdv"].fn,
      "varlen_attention_bwd_dq": va.KERNELS["bwd_dq"].fn}
out = {}
for arch, kernel, bm, bn, warps, stages in json.loads(sys.argv[1]):
    tiles = head_tiles(72) if kernel.endswith("_fwd") else backward_head_tiles(72, arch)
    extra = dict(NEG_SCALE=False) if kernel.endswith("_fwd") else {}
    constexprs = dict(HEAD_DIM=72, PRECISION="ieee", INTERPRET=False, BLOCK_D=tiles[0], BLOCK_D2=tiles[1],
                      BLOCK_M=bm, BLOCK_N=bn, **extra)
    case = aot._case("left-out", fn[kernel], "bf16", arch, constexprs, dict(num_warps=warps, num_stages=stages),
                     aot.launch_ints(72, 16))
    out["|".join(map(str, (arch, kernel, bm, bn, warps, stages)))] = resource_usage(compile_case(case).asm["cubin"])
print(json.dumps(out))
"""


def _triton_version() -> tuple[int, int]:
    import triton

    return tuple(int(p) for p in triton.__version__.split(".")[:2])


@pytest.mark.skipif(_triton_version() < (3, 8), reason="the record was measured with Triton >= 3.8's compiler "
                    "(3.6, the GPU machines', compiles the sm_90 dK/dV 32x128 entry without spilling)")
def test_left_out_entries_still_spill():
    """Compiled as the check would compile them (bf16, head dim 72), each left-out entry spills more
    than the check tolerates: the tables' comments are what the compiler says."""
    from fastvit.aot import SPILL_TOLERANCE

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(list(LEFT_OUT))], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    usage = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(usage) == len(LEFT_OUT)
    for name, report in usage.items():
        if report is None:
            pytest.skip("cuobjdump (shipped with Triton) not found")
        assert max(report["stack"], report["local"]) > SPILL_TOLERANCE, (name, report)
