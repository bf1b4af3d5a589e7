"""gpu-check keeps what it measured when a step is cut off: the verdict rules, the stream file,
the error gate, SIGINT keeping pytest's JUnit XML and benchmark JSON (a real pytest child),
a rehearsal in which every step is cut mid-way (real step children, a slow GPU simulated on
the CPU), and a GPU run without a GPU stopping at the environment step."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from fastvit import cli
from fastvit import gpucheck
from fastvit.gpucheck.files import Stream, read_stream
from fastvit.gpucheck.gates import MODEL_BOUND, gate, worst_first
from fastvit.gpucheck.runner import Clock, run_pytest, verdict


def _ok(n):
    return [dict(name=f"c{i}", status="ok") for i in range(n)]


@pytest.mark.parametrize("records, planned, cut, expected", [
    (_ok(3), 3, False, ("ok", None)),
    (_ok(2), 5, True, ("partial", "2 of 5 cases")),
    ([], 5, True, ("timeout", "cut off before its first case (0 of 5)")),
    ([], None, False, ("failed", "ran nothing")),
    (_ok(2), 5, False, ("partial", "2 of 5 cases")),  # ended early without saying it was cut: still not ok
    (_ok(1) + [dict(name="x", status="failed")], 9, True, ("failed", "1 failed or errored; partial: 2 of 9")),
    ([dict(name="m", status="skipped", reason="compute-sanitizer not found")], 1, False,
     ("skipped", "every case skipped: compute-sanitizer not found")),
])  # fmt: skip
def test_verdict_is_never_ok_for_a_step_cut_off_or_empty(records, planned, cut, expected):
    assert verdict(records, planned, cut) == expected


def test_stream_appends_lines_and_a_torn_last_line_is_ignored(tmp_path):
    s = Stream(tmp_path / "x.jsonl")
    s.plan(3)
    s.record(dict(name="a", status="ok"))
    s.record(dict(name="b", status="failed"))
    with open(s.path, "a") as f:
        f.write('{"name": "c", "sta')  # a write cut by a kill
    got = read_stream(s.path)
    assert [r["name"] for r in got["records"]] == ["a", "b"] and got["planned"] == 3 and got["end"] is None and got["torn"]
    s2 = Stream(tmp_path / "y.jsonl")
    s2.plan(1)
    s2.end("ok")
    assert read_stream(s2.path)["end"]["status"] == "ok"


def test_gate_fails_a_fast_wrong_row_and_leaves_others():
    row = dict(name="fused/inference", kind="model", status="ok", dtype="bf16", images_per_s=9e9)
    assert gate(dict(row, max_rel_err=MODEL_BOUND["bf16"] / 2))["status"] == "ok"
    bad = gate(dict(row, max_rel_err=0.5))
    assert bad["status"] == "failed" and "over the bf16 bound" in bad["reason"] and bad["images_per_s"] == 9e9
    assert gate(dict(row, max_rel_err=float("nan")))["status"] == "failed"
    assert gate(dict(row, kind="kernel", dtype="fp16", max_rel_err=0.1))["status"] == "failed"
    assert gate(dict(row, status="skipped", max_rel_err=None))["status"] == "skipped"
    assert gate(dict(row, kind="test", max_rel_err=1.0))["status"] == "ok"  # no bound for other kinds
    assert [r["name"] for r in worst_first([dict(name="a", status="ok"), dict(name="b", status="error"),
                                            dict(name="c", status="failed")])] == ["c", "b", "a"]  # fmt: skip


_PYTEST_CHILD = '''
import time

def test_fast(benchmark):
    benchmark.extra_info.update(name="fast-sum", kind="kernel", status="ok", dtype="fp16", max_rel_err=0.5)
    benchmark.pedantic(lambda: sum(range(100)), rounds=3, iterations=1)

def test_quick():
    pass

def test_hangs():
    time.sleep(300)
'''


def test_sigint_at_the_deadline_keeps_pytests_junit_xml_and_benchmark_json(tmp_path):
    test_file = tmp_path / "test_child.py"
    test_file.write_text(_PYTEST_CHILD)
    xml, bench = tmp_path / "out.xml", tmp_path / "bench.json"
    stream = Stream(tmp_path / "stream.jsonl")
    start = time.time()
    clock = Clock(start + 30, grace=6)
    ran = run_pytest([str(test_file), f"--junitxml={xml}", f"--benchmark-json={bench}"],
                     clock=clock, stream=stream, label="sigint")  # fmt: skip
    assert ran["cut"] and ran["code"] == 2, ran  # 2: interrupted (SIGINT), not killed
    assert time.time() - start < 30
    cases = {c.get("name"): c for c in __import__("xml.etree.ElementTree").etree.ElementTree.parse(xml).getroot().iter("testcase")}
    assert {"test_fast", "test_quick"} <= set(cases)
    doc = json.loads(bench.read_text())
    assert [b["extra_info"]["name"] for b in doc["benchmarks"]] == ["fast-sum"]
    got = read_stream(stream.path)
    by_name = {r["name"]: r for r in got["records"]}
    assert got["planned"] == 3
    assert by_name["fast-sum"]["status"] == "failed"  # error 0.5 over the fp16 kernel bound: gated as it streamed
    assert any(n.endswith("test_quick") and r["status"] == "ok" for n, r in by_name.items())
    assert verdict(got["records"], got["planned"], cut=True)[0] == "failed"


def test_rehearsal_every_step_cut_off_mid_way_keeps_its_records(tmp_path, monkeypatch):
    # 20 s a step (env: 10), 3 s slept before every case: no step can run all it plans (env: 3 checks
    # and torch's import; the others plan more than 20 s of cases).
    budgets = (("env", 10),) + tuple((s, 20) for s in ("parity", "models", "kernels", "tests", "sweep"))
    monkeypatch.setattr(gpucheck, "SMOKE_BUDGETS", budgets)
    started = time.monotonic()
    code = cli.main(["gpu-check", "--rehearse", "3", "--out", str(tmp_path), "--budget", "110"])
    assert code == 1
    assert time.monotonic() - started < 110 + 25
    summary = json.loads(next(tmp_path.glob("cpu-rehearsal-*-summary.json")).read_text())
    steps = {s["step"]: s for s in summary["details"]["steps"]}
    assert list(steps) == ["env", "parity", "models", "kernels", "tests", "sweep"]
    partial = 0
    for name, s in steps.items():
        assert s["status"] in ("partial", "timeout"), s
        if name == "env":
            env = json.loads(next(tmp_path.glob("*-env.json")).read_text())
            assert env["details"]["status"] == "running" and env["details"]["versions"]["torch"]  # written first
            continue
        got = read_stream(next(tmp_path.glob(f"*-{name}.jsonl")))
        if s["status"] == "partial":
            n = int(re.match(r"(\d+) of", s["reason"]).group(1))
            assert n == len(got["records"]) > 0 and (got["planned"] is None or n < got["planned"]), (name, s, got["planned"])
            assert s["reason"] == f"{n} of {'?' if got['planned'] is None else got['planned']} cases"
            partial += 1
        else:
            assert not got["records"]
    assert partial >= 2, steps  # not every step may start its first case on a loaded machine; most do
    assert len(list(tmp_path.iterdir())) <= 8


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run on a machine without a GPU")
def test_a_gpu_run_without_a_gpu_stops_at_env_with_torchs_reason(tmp_path, capsys):
    code = cli.main(["gpu-check", "--out", str(tmp_path), "--steps", "env,parity,models"])
    assert code == 1
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files and all(f.startswith("nogpu-") for f in files), files  # no file named after a GPU
    env = json.loads(next(tmp_path.glob("*-env.json")).read_text())
    check = next(r for r in env["records"] if r["name"] == "cuda-visible")
    assert check["status"] == "failed" and check["reason"]
    steps = {s["step"]: s for s in json.loads(next(tmp_path.glob("*-summary.json")).read_text())["details"]["steps"]}
    assert steps["env"]["status"] == "failed"
    assert [steps[s]["status"] for s in ("parity", "models")] == ["skipped", "skipped"]
    assert not list(tmp_path.glob("*-parity.jsonl"))  # nothing ran on the CPU in the GPU's place
