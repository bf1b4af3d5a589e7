"""Every shipped kernel configuration compiles for sm_80 and sm_90, fits shared
memory, uses the tensor cores and spills no registers (see fastvit.aot).
The cases are every op's (fastvit.aot.cases, built from fastvit.shapes;
tests/kernels/test_ops.py proves each declared op has some here). The
per-kernel test files check that the cases cover every entry of their tables."""

import pytest

from fastvit.aot.cases import all_cases
from fastvit.aot import SPILL_TOLERANCE, check_cases

CASES = all_cases()
# "wide" cases (more widths, same kernels) compile only with -m slow.
PARAMS = [pytest.param(c, id=str(c), marks=pytest.mark.slow if getattr(c, "tier", "core") == "wide" else ()) for c in CASES]


@pytest.fixture(scope="module")
def reports(request):
    """Compile the selected cases once, in child processes (a process running the
    Triton interpreter cannot compile for a GPU)."""
    names = [str(item.callspec.params["case"]) for item in request.session.items
             if getattr(item, "originalname", None) == "test_aot_compiles" and hasattr(item, "callspec")]  # fmt: skip
    return check_cases(names)


@pytest.mark.parametrize("case", PARAMS)
def test_aot_compiles(case, reports):
    report = reports[str(case)]
    assert "error" not in report, report["error"]
    assert report["tensor_core_op"] == case.expected_op()
    # check_case fails a spilling kernel; the usage must have been read for that to mean anything
    assert report["usage"] is not None, "cuobjdump (shipped with Triton) not found: spills were not checked"
    usage = report["usage"]
    assert max(usage["local"], usage["stack"]) <= SPILL_TOLERANCE and 0 < usage["registers"] <= 255
    assert set(report["expect_ptx"]) == set(case.expect_ptx) and all(report["expect_ptx"].values())


def test_case_names_are_unique():
    names = [str(c) for c in CASES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


_PROBE = """
import dataclasses, sys
from fastvit.aot import norm as norm_aot
from fastvit.aot import check_case
case = next(c for c in norm_aot.aot_cases() if c.name == "layer_norm_fwd-bf16-N768" and c.arch == "sm90")
check_case(case)  # passes as declared
for label, bad in (("pointers-only divisibility", dataclasses.replace(case, divisible=None)),
                   ("an instruction the kernel lacks", dataclasses.replace(case, expect_ptx=("wgmma.mma_async",)))):
    try:
        check_case(bad)
    except AssertionError as e:
        print("caught", label, "|", e)
    else:
        sys.exit(f"check_case passed {label}")
"""


def test_check_case_fails_wrong_divisibility_and_missing_instructions():
    """The PTX checks can fail: the norm forward compiled with only its pointers marked
    divisible (what the check used to compile) issues scalar loads, which the case forbids."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "caught pointers-only divisibility | " in proc.stdout and "ld.global.b16" in proc.stdout
    assert "caught an instruction the kernel lacks" in proc.stdout


def test_check_cases_refuses_unknown_names():
    with pytest.raises(TypeError, match="list of case names"):
        check_cases("attention_fwd-bf16-d64-m128n64-sm90-w8s3")
    assert check_cases([]) == {}
    with pytest.raises(ValueError, match="no op declares"):
        check_cases(["no-such-kernel-sm90-w4s3"], workers=1)
