"""The steps of ``fastvit gpu-check``, each run in its own child process:
``python -m fastvit.gpucheck.steps STEP --out DIR --stamp STAMP --budget SECONDS [--smoke]``.

A step writes its result file as it goes (after every case or configuration),
so a step cut off at its budget keeps what it measured. Exit status: 0 when
every check passed, 1 when one failed or errored (the results say which).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from .files import result_path, write_doc

ROOT = Path(__file__).resolve().parents[2]


def _log(*parts) -> None:
    print(*parts, flush=True)


def _run(cmd, timeout, env=None) -> tuple[int | None, str]:
    """Run ``cmd`` with output captured; (exit status or None on timeout, output)."""
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(timeout, 1))
        return proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, out
    except OSError as e:
        return 127, f"{type(e).__name__}: {e}"


def _device(smoke: bool) -> str:
    import torch

    return "cpu" if smoke or not torch.cuda.is_available() else "cuda"


# --------------------------------------------------------------------------- env


def step_env(a) -> int:
    """nvidia-smi (full query and clocks), ``fastvit info``, package versions."""
    from fastvit.bench import environment, make_record

    details: dict = {}
    for label, cmd in (
        ("nvidia_smi_csv", ["nvidia-smi", "--format=csv", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
                            "clocks.mem,clocks.max.mem,power.limit,power.draw,temperature.gpu,pstate,persistence_mode"]),
        ("nvidia_smi_clocks", ["nvidia-smi", "-q", "-d", "CLOCK,PERFORMANCE,POWER"]),
        ("nvidia_smi_q", ["nvidia-smi", "-q"]),
        ("fastvit_info", [sys.executable, "-m", "fastvit", "info"]),
    ):
        code, out = _run(cmd, timeout=min(30, a.budget / 3))
        details[label] = out if code is not None else f"timed out\n{out}"
        _log(f"--- {label} (exit {code})\n{out[-3000:]}")
    versions = {}
    for package in ("torch", "triton", "timm", "pytest", "pytest-benchmark", "matplotlib", "numpy", "transformers"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:  # noqa: BLE001 - not installed
            versions[package] = None
    details["versions"] = versions
    env = environment(_device(a.smoke))
    record = make_record(name="environment", kind="env", status="ok", **env)
    write_doc(result_path(a, "env"), [record], details=details)
    return 0


# --------------------------------------------------------------------------- tests


def _junit(path: Path) -> list[dict]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        status, reason = "ok", None
        for tag, label in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                status, reason = label, (node.get("message") or node.text or "")[:500]
                break
        cases.append(dict(name=f"{case.get('classname')}::{case.get('name')}", status=status, reason=reason,
                          seconds=float(case.get("time") or 0)))  # fmt: skip
    return cases


def step_tests(a) -> int:
    """The cuda-marked pytest suite: tests/kernels first, then the rest, each under what is left of the budget."""
    import tempfile

    from fastvit.bench import environment, make_record

    deadline = time.monotonic() + a.budget
    runs = [("kernels", ["tests/kernels"])]
    if not a.smoke:
        runs.append(("others", ["tests", "--ignore=tests/kernels"]))
    env = environment(_device(a.smoke))
    records, summary, failed = [], {}, False
    with tempfile.TemporaryDirectory() as tmp:
        for label, paths in runs:
            left = deadline - time.monotonic() - 3
            if left < 10:
                summary[label] = "not run: no time left"
                continue
            xml = Path(tmp) / f"{label}.xml"
            cmd = [sys.executable, "-m", "pytest", *paths, "-m", "cuda", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                   f"--junitxml={xml}", "-o", "junit_family=xunit1"]  # fmt: skip
            code, out = _run(cmd, timeout=left)
            _log(f"--- pytest {label} (exit {code})\n{out[-8000:]}")
            if code is None:
                summary[label] = f"timed out after {left:.0f} s"
                failed = True
            elif code not in (0, 5):  # 5: nothing collected
                summary[label] = f"pytest exit {code}"
                failed = True
            else:
                summary[label] = "ok" if code == 0 else "no tests collected"
            if xml.exists():
                for c in _junit(xml):
                    records.append(make_record(name=c["name"], kind="test", status=c["status"], reason=c["reason"],
                                               first_call_s=c["seconds"], **env))  # fmt: skip
            write_doc(result_path(a, "tests"), records, details={"runs": summary})
    failed = failed or any(r["status"] in ("failed", "error") for r in records)
    return 1 if failed else 0


# --------------------------------------------------------------------------- parity


def step_parity(a) -> int:
    """Every shipped launch configuration forced one by one; the fused model vs fp64; memcheck."""
    from . import configs, model

    device = _device(a.smoke)
    start = time.monotonic()
    deadline = start + a.budget
    records: list[dict] = []
    path = result_path(a, "parity")

    def emit(sweep_records):
        write_doc(path, [*sweep_records, *records])

    # The whole-model check first (one case, the most telling), then the config sweep, then memcheck
    # (time kept for it when the tool exists).
    try:
        records.extend(model.fused_model_parity(smoke=a.smoke, device=device))
    except Exception as e:  # noqa: BLE001 - recorded; the sweep still runs
        from fastvit.bench import environment, make_record

        records.append(make_record(name="fused-model-parity", kind="model_parity", status="error",
                                   reason=f"{type(e).__name__}: {e}"[:500], **environment(device)))  # fmt: skip
    emit([])
    memcheck_s = min(45.0, 0.3 * a.budget) if model.sanitizer_binary() and device == "cuda" else 0.0
    sweep = configs.sweep(smoke=a.smoke, device=device, emit=emit, deadline=deadline - memcheck_s - 5)
    emit(sweep)
    records.extend(model.memcheck(device=device, timeout=max(10.0, deadline - time.monotonic() - 3), log=_log))
    everything = [*sweep, *records]
    emit(sweep)
    bad = [r for r in everything if r["status"] in ("failed", "error")]  # a memcheck timeout is recorded, not a failure
    counts = {s: sum(r["status"] == s for r in everything) for s in ("ok", "failed", "error", "skipped", "timeout")}
    _log(f"parity: {counts}")
    for r in bad[:40]:
        _log(f"  {r['status']}: {r['name']}: {r['reason']}")
    return 1 if bad else 0


# --------------------------------------------------------------------------- models

# (variant, mode) in priority order: every eager variant first, then the compiled ones (each compile
# takes tens of seconds), the headline comparison (fused vs timm+compile) first.
_EAGER = ("fused", "sdpa", "auto", "reference", "timm")
_COMPILED = ("timm+compile", "fused+compile", "sdpa+compile", "auto+compile")
GPU_ORDER = tuple((v, m) for v in _EAGER for m in ("inference", "training")) + tuple(
    (v, m) for pair in zip(_COMPILED[::2], _COMPILED[1::2]) for m in ("inference", "training") for v in pair
)
SMOKE_ORDER = tuple((v, m) for v in ("reference", "sdpa", "auto", "fused", "timm", "sdpa+compile") for m in ("inference", "training"))


def step_models(a) -> int:
    """ViT-B/16 224 bf16 batch 256, inference and training step, across variants (``fastvit bench`` records)."""
    from fastvit.bench import cases as bench_cases
    from fastvit.bench import ModelCase, ModelContext, add_speedups, environment, make_record, prepare_device, run_model_case
    from fastvit.bench.records import write_results

    device = _device(a.smoke)
    prepare_device(device)
    if a.smoke:
        model, dtype, batch, overrides, rounds, warmup = "vit_tiny_patch16_224", "fp32", 2, (("img_size", 32), ("depth", 1)), 1, 0
        bench_cases.COMPILE_KWARGS = {"backend": "eager"}  # the +compile path without inductor's C++ build
        order = SMOKE_ORDER
    else:
        model, dtype, batch, overrides, rounds, warmup = "vit_base_patch16_224", "bf16", 256, (), 10, 2
        order = GPU_ORDER
    cases = [ModelCase(model, v, m, dtype, batch, overrides) for v, m in order]
    path = result_path(a, "models")
    env = environment(device)
    # Cases not reached before the step's budget ran out stay in the file as such.
    pending = [make_record(name=c.name, kind="model", status="skipped", reason="not reached within the gpu-check step's budget",
                           model=c.model, variant=c.variant, mode=c.mode, dtype=c.dtype, batch=c.batch, **env) for c in cases]  # fmt: skip
    write_results(path, pending, sys.argv)
    ctx = ModelContext(model, dtype, batch, device, overrides)
    records: list[dict] = []
    for i, case in enumerate(cases):
        started = time.monotonic()
        record = run_model_case(case, ctx, rounds=rounds, warmup=warmup)
        records.append(record)
        _log(f"{case.name}: {record['status']} {record['images_per_s'] or ''} img/s ({time.monotonic() - started:.1f} s)"
             + (f" {record['reason']}" if record["reason"] else ""))  # fmt: skip
        write_results(path, add_speedups(records + pending[i + 1:]), sys.argv)
    del ctx
    bad = [r for r in records if r["status"] == "error"]
    return 1 if bad or not records else 0


# --------------------------------------------------------------------------- kernels

# (label, pytest -k expression) in priority order; the GPU runs the non-slow grid's most telling part first.
# pytest-benchmark writes its JSON at the end of a session, so each group is its own session: the
# inductor baselines (tens of seconds of compiling each) come after the eager ones.
GPU_KERNEL_GROUPS = (
    ("attention", "test_attention and (N197 or N577) and D64"),
    ("layer_norm", "(test_layer_norm or test_norm_junction) and not compile"),
    ("linear", "(test_linear or test_mlp) and not compile"),
    ("residual_norm", "test_residual_norm and not compile"),
    ("inductor", "(test_layer_norm or test_norm_junction or test_linear or test_mlp or test_residual_norm) and compile"),
    ("attention-rest", "test_attention and not ((N197 or N577) and D64)"),
)
SMOKE_KERNEL_GROUPS = (
    ("attention", "N197-D64-bf16-fwd-sdpa-flash or N197-D64-bf16-fwd-triton"),
    ("layer_norm", "layer_norm-N768-fwd-triton and not add"),
    ("linear", "linear_residual-fwd-torch]"),
)


def step_kernels(a) -> int:
    """benchmarks/test_kernels.py in groups; their pytest-benchmark JSON merged into one file after each group."""
    import tempfile

    deadline = time.monotonic() + a.budget
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if a.smoke:
        env.update(FASTVIT_KERNEL_BENCH_SMOKE="1", TRITON_INTERPRET="1", FASTVIT_AUTOTUNE="0")
    path = result_path(a, "kernels")
    merged: dict = {}
    status: dict[str, str] = {}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for label, expr in SMOKE_KERNEL_GROUPS if a.smoke else GPU_KERNEL_GROUPS:
            left = deadline - time.monotonic() - 2
            if left < 10:
                status[label] = "not run: no time left"
                continue
            part = Path(tmp) / f"{label}.json"
            cmd = [sys.executable, "-m", "pytest", "benchmarks/test_kernels.py", "--benchmark-only", "-q", "-p", "no:cacheprovider",
                   "-p", "no:randomly", "-k", expr, f"--benchmark-json={part}"]  # fmt: skip
            code, out = _run(cmd, timeout=left, env=env)
            _log(f"--- kernels {label} (exit {code})\n{out[-4000:]}")
            status[label] = "timed out" if code is None else f"exit {code}"
            failed = failed or code not in (0, 5)
            if part.exists():
                doc = json.loads(part.read_text())
                if not merged:
                    merged = {k: v for k, v in doc.items() if k != "benchmarks"}
                    merged["benchmarks"] = []
                merged["benchmarks"].extend(doc.get("benchmarks", []))
            merged.setdefault("benchmarks", [])
            merged["fastvit_gpu_check"] = {"groups": status}
            tmp_path = path.with_name(path.name + ".tmp")
            tmp_path.write_text(json.dumps(merged, indent=1) + "\n")
            tmp_path.replace(path)
    return 1 if failed else 0


STEPS = {"env": step_env, "tests": step_tests, "parity": step_parity, "models": step_models, "kernels": step_kernels}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastvit.gpucheck.steps")
    p.add_argument("step", choices=tuple(STEPS))
    p.add_argument("--out", required=True)
    p.add_argument("--stamp", required=True)
    p.add_argument("--budget", type=float, required=True)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    return STEPS[a.step](a)


if __name__ == "__main__":
    sys.exit(main())
