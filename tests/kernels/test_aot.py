"""Every shipped kernel configuration compiles for sm_80 and sm_90, fits shared
memory, uses the tensor cores and spills no registers (see fastvit.kernels.aot). The per-kernel test
files check that their ``aot_cases()`` cover every entry of their tables."""

import importlib

import pytest

from fastvit.kernels.aot import SPILL_TOLERANCE, check_cases

MODULES = ("flash_attention", "norm", "linear")
CASES = [case for m in MODULES for case in importlib.import_module(f"fastvit.kernels.{m}").aot_cases()]


@pytest.fixture(scope="module")
def reports(request):
    """Compile the selected cases once, in child processes (a process running the
    Triton interpreter cannot compile for a GPU)."""
    names = [str(item.callspec.params["case"]) for item in request.session.items
             if getattr(item, "originalname", None) == "test_aot_compiles" and hasattr(item, "callspec")]  # fmt: skip
    return check_cases(list(MODULES), names)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_aot_compiles(case, reports):
    report = reports[str(case)]
    assert "error" not in report, report["error"]
    assert report["tensor_core_op"] == case.expected_op()
    # check_case fails a spilling kernel; the usage must have been read for that to mean anything
    assert report["usage"] is not None, "cuobjdump (shipped with Triton) not found: spills were not checked"
    usage = report["usage"]
    assert max(usage["local"], usage["stack"]) <= SPILL_TOLERANCE and 0 < usage["registers"] <= 255
