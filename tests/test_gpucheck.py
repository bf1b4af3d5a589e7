"""fastvit gpu-check: the orchestration survives failing and hanging steps within its
budget, the config sweep finds and forces every shipped configuration, and the
parity rule catches a wrong result. The end-to-end ``--smoke`` run is CI's own
step (.ci/run); ``test_smoke_end_to_end`` runs it here under ``-m slow``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastvit import cli, compare
from fastvit import gpucheck
from fastvit.gpucheck import configs
from fastvit.kernels import norm, tuning

ROOT = Path(__file__).resolve().parents[1]


def _summary(out: Path) -> dict:
    (path,) = out.glob("*-summary.json")
    return json.loads(path.read_text())


# A fake step child: writes a plan of 2 and one record to its stream, then does what it is told.
_FAKE = """
import json, sys, time
path = sys.argv[1]
with open(path, "a") as f:
    f.write(json.dumps({"gpu_check": "plan", "planned": 2}) + "\\n")
    f.write(json.dumps({"name": "case-1", "kind": "parity", "status": "ok"}) + "\\n")
"""


def _fake(behaviour):
    def command(step, deadline, grace, args, stamp):
        path = Path(args.out) / f"{stamp}-{step}.jsonl"
        return [sys.executable, "-c", _FAKE + behaviour[step], str(path)]

    return command


def test_failing_hanging_and_empty_steps_are_recorded_and_the_next_step_runs(tmp_path, monkeypatch):
    behaviour = {
        "parity": "sys.exit(3)",  # crashes after one of two cases, no end line
        "models": "time.sleep(600)",  # hangs past its budget after one of two cases
        "kernels": "with open(path, 'a') as f: f.write(json.dumps({'name': 'case-2', 'kind': 'kernel', 'status': 'ok'}) + '\\n')",
        "tests": "open(path, 'w').close()",  # ran nothing, exit 0
    }
    monkeypatch.setattr(gpucheck, "SMOKE_BUDGETS", (("parity", 10), ("models", 4), ("kernels", 20), ("tests", 10)))
    monkeypatch.setattr(gpucheck, "_step_command", _fake(behaviour))
    code = cli.main(["gpu-check", "--smoke", "--out", str(tmp_path), "--budget", "60"])
    assert code == 1
    steps = {s["step"]: s for s in _summary(tmp_path)["details"]["steps"]}
    assert steps["parity"]["status"] == "failed" and "exit 3" in steps["parity"]["reason"]
    # cut off by the parent (SIGINT, then SIGKILL): partial, with the record it finished
    assert steps["models"]["status"] == "partial" and steps["models"]["reason"] == "1 of 2 cases"
    assert steps["models"]["budget_s"] <= steps["models"]["seconds"] < steps["models"]["budget_s"] + 12
    assert steps["kernels"]["status"] == "ok"
    assert steps["kernels"]["budget_s"] == 20  # a cut-off step carries nothing
    assert steps["tests"]["status"] == "failed" and steps["tests"]["reason"] == "ran nothing"
    log = next(tmp_path.glob("*-gpu-check.log")).read_text()
    assert "===== step models" in log and "===== models: partial: 1 of 2 cases" in log
    names = [r["name"] for r in _summary(tmp_path)["records"]]
    assert names.count("case-1") == 3 and "case-2" in names  # the streams' records are in the summary


def test_total_budget_bounds_every_step_and_no_time_is_never_ok(tmp_path, monkeypatch):
    monkeypatch.setattr(gpucheck, "SMOKE_BUDGETS", (("parity", 100), ("models", 100), ("kernels", 100)))
    monkeypatch.setattr(gpucheck, "_step_command", _fake({s: "time.sleep(600)" for s in ("parity", "models", "kernels")}))
    assert cli.main(["gpu-check", "--smoke", "--out", str(tmp_path), "--budget", "16"]) == 1
    steps = _summary(tmp_path)["details"]["steps"]
    assert steps[0]["budget_s"] == pytest.approx(16 / 3, abs=0.1)  # scaled: 100 of 300 s
    assert sum(s.get("seconds") or 0 for s in steps) < 16 + 15
    assert [s["status"] for s in steps] == ["partial"] * 3
    monkeypatch.setattr(gpucheck, "SMOKE_BUDGETS", (("parity", 100), ("models", 100)))
    assert cli.main(["gpu-check", "--smoke", "--out", str(tmp_path / "none"), "--budget", "5"]) == 1
    steps = _summary(tmp_path / "none")["details"]["steps"]
    assert [(s["status"], s["reason"][:7]) for s in steps] == [("skipped", "no time")] * 2


@pytest.mark.parametrize("argv, message", [
    (["--steps", "env,bogus"], "unknown steps"),
    (["--budget", "0"], "--budget must be > 0"),
])  # fmt: skip
def test_bad_options_exit_2(tmp_path, capsys, argv, message):
    assert cli.main(["gpu-check", "--smoke", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_unwritable_out_exits_2_before_running(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["gpu-check", "--smoke", "--out", str(blocker / "sub")]) == 2
    assert "cannot write to --out" in capsys.readouterr().err


def test_sweep_finds_every_shipped_norm_config():
    found = {name: cands for name, _, cands in configs.autotuners(norm)}
    assert set(found) == {"layer_norm_fwd_kernel", "layer_norm_bwd_kernel"}
    for name, table in (("layer_norm_fwd_kernel", norm.FWD_CONFIGS), ("layer_norm_bwd_kernel", norm.BWD_CONFIGS)):
        shipped = {tuple(sorted(e.items())) for e in tuning.selected_entries(table) + table["default"]}
        got = {tuple(sorted({**c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages}.items())) for c in found[name]}
        assert got == shipped, name


def test_forced_pins_and_restores():
    (_, fwd, fwd_c), (_, bwd, bwd_c) = sorted(configs.autotuners(norm), key=lambda t: t[0])[::-1]
    before = (list(fwd.configs), list(bwd.configs))
    with configs.forced(fwd, fwd_c[-1], [(bwd, bwd_c[0])]):
        assert fwd.configs == [fwd_c[-1]] and bwd.configs == [bwd_c[0]]
    assert (fwd.configs, bwd.configs) == before


def test_parity_rule_passes_the_kernel_and_fails_a_wrong_result():
    case = configs.make_case("layer_norm", "fp32", dict(rows=3, width=32), "cpu")
    got = case.run(case.inputs)
    ok, worst = configs.compare(case, got)
    assert ok, worst
    wrong = dict(got, dweight=got["dweight"] + 1e-2)
    ok, worst = configs.compare(case, wrong)
    assert not ok and worst["tensor"] == "dweight"
    ok, worst = configs.compare(case, dict(got, out=torch.full_like(got["out"], float("nan"))))
    assert not ok and worst["tensor"] == "out"


def test_sweep_records_every_config(monkeypatch):
    monkeypatch.setattr(configs, "SMOKE_SHAPES", {"norm": [dict(rows=2, width=16)]})
    emitted = []
    records = configs.sweep(("norm",), smoke=True, device="cpu", dtypes=("fp32",), emit=emitted.append)
    per_tuner = {name: len(c) for name, _, c in configs.autotuners(norm)}
    assert len(records) == sum(per_tuner.values()) * 2  # two ops
    assert all(r["status"] == "ok" and r["kind"] == "parity" for r in records), [r["reason"] for r in records]
    assert emitted and len(emitted[-1]) == len(records)


@pytest.mark.slow
def test_smoke_end_to_end(tmp_path):
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) <= 8 and all(f.startswith("cpu-smoke-") for f in files), files
    for f in files:
        if f.endswith(".json"):
            compare.load_records(tmp_path / f)  # every file reads as a result file
    models = compare.load_records(next(tmp_path.glob("*-summary.json")))
    assert {r["variant"] for r in models if r["status"] == "ok"} >= {"reference", "sdpa", "auto"}


def test_the_cuda_test_selection_is_collected_and_small():
    """The tests step names its CUDA tests by id: every id must exist (a renamed test would make pytest
    exit 4 and the step run nothing) and the selection stays near its ~30-compile size."""
    from fastvit.gpucheck.steps import GPU_TESTS

    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *GPU_TESTS],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert len(collected) == len(GPU_TESTS) <= 20, collected


def test_help_log_and_docs_agree_on_the_budgets(tmp_path, monkeypatch, capsys):
    """One set of figures: the default budgets in the help, in the log's first line and in docs/gpu-check.md."""
    assert sum(b for _, b in gpucheck.GPU_BUDGETS) == gpucheck.GPU_DEFAULT_BUDGET <= 480
    assert sum(b for _, b in gpucheck.SMOKE_BUDGETS) <= gpucheck.SMOKE_DEFAULT_BUDGET
    with pytest.raises(SystemExit):
        cli.main(["gpu-check", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    gpu, smoke = f"{gpucheck.GPU_DEFAULT_BUDGET:.0f}", f"{gpucheck.SMOKE_DEFAULT_BUDGET:.0f}"
    assert f"default {gpu} on a GPU, {smoke} with --smoke" in help_text
    monkeypatch.setattr(gpucheck, "_step_command", _fake({"parity": ""}))
    cli.main(["gpu-check", "--smoke", "--steps", "parity", "--out", str(tmp_path)])
    first = next(tmp_path.glob("*-gpu-check.log")).read_text().splitlines()[0]
    assert f"budget {smoke} s" in first and "--smoke (CPU, toy shapes)" in first
    docs = (ROOT / "docs" / "gpu-check.md").read_text()
    assert f"`--budget` of {gpu} s" in docs and f"its budget is {smoke} s" in docs
    for step, budget in gpucheck.GPU_BUDGETS:
        assert re.search(rf"\| `{step}` \|.*\| {budget} \|", docs), step
