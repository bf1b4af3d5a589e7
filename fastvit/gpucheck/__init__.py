"""``fastvit gpu-check`` (``scripts/gpu_check.sh``): first contact with a GPU in one command.

Steps, most decisive first, each a child process with an absolute deadline
(unused time carries over to the next step; the total stays within
``--budget``: 450 s by default on a GPU, 900 s with ``--smoke``):

1. ``env``: env.json first; cache folders, a C compiler with Python headers,
   nvidia-smi; torch must see the GPU (else the run stops, with torch's
   reason); one Triton kernel compiled and launched; ``fastvit info``.
2. ``parity``: every implementation the model can dispatch to on this GPU
   (fastvit's kernels, the Hopper TMA GEMM on sm_90, PyTorch's) at ViT-B's
   shape, forward and backward vs fp64; the fused ViT-B vs the fp64 model.
3. ``models``: ViT-B/16 224 bf16 batch 256: every variant's inference (fused,
   timm+compile, fused+compile, auto, sdpa, timm, auto+compile, sdpa+compile),
   then the eager training steps, then the compiled ones; MFU; each row's
   error vs the fp32 model.
4. ``kernels``: ``benchmarks/test_kernels.py`` in priority groups.
5. ``tests``: a selection of the ``cuda`` tests sized to the step (~30 compiles).
6. ``sweep``: every shipped launch configuration forced one by one at ViT
   shapes, then ``compute-sanitizer --tool memcheck``.

Every case is appended to its step's ``.jsonl`` file as it finishes; pytest
runs are stopped with SIGINT and a grace period. A step reports ``ok`` only
when it ran all it planned and every check passed; otherwise ``partial``
(cut off after n of m cases), ``timeout`` (cut off before its first),
``skipped`` (no time, or the environment failed), ``failed``. A model or
kernel row over its error bound is ``failed`` whatever its speed, and the
report lists failures first. Results: at most 8 files in ``--out`` (default
``$OUT``, else ``bench-out/gpu-check``), ``<gpu>-<date>-{env.json,
parity.jsonl, models.jsonl, kernels.jsonl, tests.jsonl, sweep.jsonl,
summary.json, gpu-check.log}``. Triton, inductor and fastvit's dispatch
caches live in ``--cache`` (default ``.cache-gpucheck`` in the checkout,
git-ignored), so a rerun on the same machine skips compiling.

``--smoke``: the same steps on the CPU, Triton interpreter, toy shapes (CI
runs it; its timings are labelled toy, never measurements). ``--rehearse S``:
a smoke run that sleeps S seconds before every case, a slow GPU simulated, so
cut-offs can be tested. Exit status 0 when every step is ok, 1 otherwise, 2
for bad options.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import subprocess
import sys
import time
from pathlib import Path

from .files import BAD, STREAMS, log_path, read_stream, write_doc

# (step, seconds) in priority order; the GPU's add up to the 450 s default, 30 s inside 8 minutes for the
# last step's grace and the summary (docs/gpu-check.md: the estimates behind each figure).
GPU_BUDGETS = (("env", 20), ("parity", 70), ("models", 190), ("kernels", 75), ("tests", 75), ("sweep", 20))
SMOKE_BUDGETS = (("env", 60), ("parity", 120), ("models", 240), ("kernels", 180), ("tests", 90), ("sweep", 200))
GPU_DEFAULT_BUDGET = 450.0
SMOKE_DEFAULT_BUDGET = 900.0
MIN_STEP_S = 3.0  # below this (plus the grace) a step is not started: "skipped: no time"
ROOT = Path(__file__).resolve().parents[2]


def _gpu_slug() -> str:
    """File-name label of the first GPU ("h100-sxm", ...), read with nvidia-smi (no CUDA context here)."""
    from fastvit.bench.hardware import device_slug

    try:
        name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip().splitlines()[0]  # fmt: skip
    except (OSError, subprocess.SubprocessError, IndexError):
        return "nogpu"
    return device_slug({"device_type": "cuda", "device": name})


def cache_env(cache: Path) -> dict:
    """Cache folders of Triton, inductor and fastvit's dispatch, and Triton's autotuning results, in ``cache``."""
    return dict(TRITON_CACHE_DIR=str(cache / "triton"), TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"),
                FASTVIT_CACHE_DIR=str(cache / "fastvit"), TRITON_CACHE_AUTOTUNING="1", FASTVIT_GPUCHECK_CACHE=str(cache))  # fmt: skip


def _child_env(args) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **cache_env(args.cache))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.smoke:
        env.update(TRITON_INTERPRET="1", FASTVIT_AUTOTUNE="0", CUDA_VISIBLE_DEVICES="", OPENBLAS_NUM_THREADS="1")
    else:
        env.pop("TRITON_INTERPRET", None)
    if args.rehearse:
        env["FASTVIT_GPUCHECK_DELAY"] = str(args.rehearse)
    return env


def _step_command(step: str, deadline: float, grace: float, args, stamp: str) -> list[str]:
    return [sys.executable, "-m", "fastvit.gpucheck.steps", step, "--out", str(args.out), "--stamp", stamp,
            "--deadline", f"{deadline:.3f}", "--grace", f"{grace:.1f}"] + (["--smoke"] if args.smoke else [])  # fmt: skip


def _grace(budget: float, smoke: bool) -> float:
    """Seconds a step keeps to stop pytest with SIGINT and write its end line."""
    return max(1.0, min(10.0 if not smoke else 6.0, 0.15 * budget))


def _run_step(step: str, budget: float, args, stamp: str, log) -> dict:
    """Start the step's child with an absolute deadline; at the deadline, SIGINT its group, a grace, then SIGKILL."""
    from .runner import popen_group, stop_group

    grace = _grace(budget, args.smoke)
    if step in STREAMS:  # the step's file exists whatever happens to its child
        (args.out / f"{stamp}-{step}.jsonl").touch()
    start, deadline = time.monotonic(), time.time() + budget
    log.write(f"\n===== step {step}: budget {budget:.0f} s, ends by {_dt.datetime.fromtimestamp(deadline, _dt.timezone.utc).isoformat(timespec='seconds')}\n")
    log.flush()
    child = popen_group(_step_command(step, deadline, grace, args, stamp), cwd=ROOT, env=_child_env(args), stdout=log,
                        stderr=subprocess.STDOUT)  # fmt: skip
    interrupted = False
    try:
        code = child.wait(timeout=max(deadline - time.time(), 0.1))
    except subprocess.TimeoutExpired:
        interrupted = True
        code = stop_group(child, grace)
    except BaseException:
        stop_group(child, grace)
        raise
    return dict(step=step, exit=code, interrupted=interrupted, budget_s=round(budget, 1), seconds=round(time.monotonic() - start, 1))


def _judge(out: Path, stamp: str, run: dict, smoke: bool) -> dict:
    """The step's status from what its child wrote (never ``ok`` for a step cut off or that ran nothing)."""
    from .runner import verdict

    step = run["step"]
    if step == "env":
        import json

        try:
            doc = json.loads((out / f"{stamp}-env.json").read_text())
            details, records = doc["details"], doc["records"]
        except (OSError, ValueError, KeyError):
            details, records = {}, []
        status = details.get("status")
        passed = {r.get("name") for r in records if r.get("status") == "ok"}
        # A GPU run goes on only once torch has seen the GPU and Triton has compiled and launched a kernel.
        fatal = status == "fatal" or (not smoke and not {"cuda-visible", "triton-one-kernel-launch"} <= passed)
        if status in ("ok", "failed", "fatal"):
            return dict(run, status="ok" if status == "ok" else "failed", fatal=fatal,
                        reason=None if status == "ok" else f"env checks failed{' (fatal: the run stops)' if fatal else ''}")
        if run["interrupted"]:
            return dict(run, status="timeout", fatal=fatal, reason=f"env did not finish (last state: {status or 'no env.json'})")
        return dict(run, status="failed", fatal=fatal, reason=f"exit {run['exit']}, env.json incomplete")
    got = read_stream(out / f"{stamp}-{step}.jsonl")
    end = got["end"]
    if end is not None:
        return dict(run, status=end["status"], reason=end.get("reason"), records=len(got["records"]), planned=got["planned"])
    status, reason = verdict(got["records"], got["planned"], cut=run["interrupted"])
    if not run["interrupted"] and run["exit"] != 0:
        status, reason = "failed", f"exit {run['exit']} with no end line; {reason or 'records kept'}"
    return dict(run, status=status, reason=reason, records=len(got["records"]), planned=got["planned"])


def collect(out: Path, stamp: str) -> list[dict]:
    """Every record the steps wrote (env.json's and the streams'), failures first."""
    import json

    from .gates import worst_first

    records = []
    try:
        records += json.loads((out / f"{stamp}-env.json").read_text())["records"]
    except (OSError, ValueError, KeyError):
        pass
    for step in STREAMS:
        records += read_stream(out / f"{stamp}-{step}.jsonl")["records"]
    return worst_first(records)


def _write_summary(out: Path, stamp: str, steps: list[dict], total: float, began: float, args) -> None:
    from fastvit.bench import make_record

    step_records = [make_record(name=s["step"], kind="step", status=s["status"], reason=s.get("reason"),
                                first_call_s=s.get("seconds")) for s in steps]  # fmt: skip
    details = dict(budget_s=total, elapsed_s=round(time.monotonic() - began, 1), steps=steps, argv=sys.argv,
                   smoke=bool(args.smoke), rehearse=args.rehearse, cache=str(args.cache))  # fmt: skip
    write_doc(out / f"{stamp}-summary.json", [*collect(out, stamp), *step_records], details=details)


def _shown(s: dict) -> str:
    return s["status"] + (f": {s['reason']}" if s.get("reason") else "")


def _print_report(out: Path, stamp: str, steps: list[dict], smoke: bool) -> None:
    """Failures first, then the steps, then the model table (labelled when it is a toy run)."""
    records = collect(out, stamp)
    bad = [r for r in records if r.get("status") in BAD]
    if bad:
        print(f"gpu-check: {len(bad)} FAILED or errored checks (correctness gates speed):")
        for r in bad[:25]:
            print(f"  {r['status']}: {r['name']}: {(r.get('reason') or '')[:240]}")
    for s in steps:
        print(f"gpu-check: {s['step']:<8} {_shown(s)} ({s.get('seconds', 0):.0f} s of {s.get('budget_s', 0):.0f})")
    models = [r for r in records if r.get("kind") == "model"]
    if models:
        from fastvit.bench import format_table

        if smoke:
            print("SMOKE RUN: toy model on the CPU, each case timed once -- these figures are not measurements")
        print(format_table(models))


def run(args: argparse.Namespace) -> int:
    if args.rehearse is not None:
        if args.rehearse <= 0:
            print("fastvit gpu-check: error: --rehearse must be > 0 seconds", file=sys.stderr)
            return 2
        args.smoke = True
    budgets = SMOKE_BUDGETS if args.smoke else GPU_BUDGETS
    if args.steps:
        unknown = sorted(set(args.steps) - {s for s, _ in budgets})
        if unknown:
            print(f"fastvit gpu-check: error: unknown steps {unknown}; valid: {', '.join(s for s, _ in budgets)}", file=sys.stderr)
            return 2
        budgets = tuple((s, b) for s, b in budgets if s in args.steps)
    total = args.budget if args.budget is not None else (SMOKE_DEFAULT_BUDGET if args.smoke else GPU_DEFAULT_BUDGET)
    if total <= 0:
        print("fastvit gpu-check: error: --budget must be > 0", file=sys.stderr)
        return 2
    out = Path(args.out or os.environ.get("OUT") or "bench-out/gpu-check")
    args.cache = Path(args.cache or os.environ.get("FASTVIT_GPUCHECK_CACHE") or ROOT / ".cache-gpucheck").resolve()
    for label, folder in (("--out", out), ("--cache", args.cache)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ".write-test").write_text("")
            (folder / ".write-test").unlink()
        except OSError as e:
            print(f"fastvit gpu-check: error: cannot write to {label} {folder}: {e}", file=sys.stderr)
            return 2
    args.out = out
    stamp = f"cpu-{'rehearsal' if args.rehearse else 'smoke'}" if args.smoke else _gpu_slug()
    stamp = f"{stamp}-{_dt.date.today().isoformat()}"
    scale = min(1.0, total / max(1, sum(b for _, b in budgets)))
    began = time.monotonic()
    steps: list[dict] = []
    mode = f"--rehearse {args.rehearse:g} (smoke, a slow GPU simulated)" if args.rehearse else "--smoke (CPU, toy shapes)" if args.smoke else "GPU"
    with open(log_path(out, stamp), "a", buffering=1) as log:
        log.write(f"fastvit gpu-check {mode}: budget {total:.0f} s, steps {', '.join(s for s, _ in budgets)} -> {out}\n")
        carry, fatal = 0.0, None
        for step, base in budgets:
            left = total - (time.monotonic() - began)
            budget = min(base * scale + carry, left)
            if fatal:
                steps.append(dict(step=step, status="skipped", reason=f"not run: {fatal}", budget_s=0.0, seconds=0.0))
            elif budget < MIN_STEP_S + _grace(budget, args.smoke):
                steps.append(dict(step=step, status="skipped", reason=f"no time ({max(budget, 0):.1f} s left)",
                                  budget_s=round(max(budget, 0), 1), seconds=0.0))  # fmt: skip
            else:
                result = _judge(out, stamp, _run_step(step, budget, args, stamp, log), args.smoke)
                carry = max(0.0, budget - result["seconds"]) if result["status"] == "ok" else 0.0
                if result.get("fatal") and not args.smoke:
                    fatal = ("the env step did not establish a CUDA GPU that torch can use and Triton can compile for "
                             "(see env.json); nothing runs on the CPU in its place")
                steps.append(result)
            log.write(f"===== {step}: {_shown(steps[-1])}\n")
            print(f"gpu-check: {step:<8} {_shown(steps[-1])}", flush=True)
            _write_summary(out, stamp, steps, total, began, args)
    _print_report(out, stamp, steps, args.smoke)
    files = sorted(p.name for p in out.glob(f"{stamp}-*"))
    print(f"gpu-check: {time.monotonic() - began:.0f} s; results in {out}: {', '.join(files)}")
    return 0 if all(s["status"] == "ok" for s in steps) else 1


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("gpu-check", help="one-command GPU check: env, op parity, model and kernel benchmarks, tests, config sweep",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", help="result folder (default: $OUT, else bench-out/gpu-check)")
    p.add_argument("--cache", help="Triton / inductor / dispatch cache folder (default: .cache-gpucheck in the checkout)")
    p.add_argument("--smoke", action="store_true", help="CPU, Triton interpreter, toy shapes: the same steps end to end (figures are not measurements)")
    p.add_argument("--rehearse", type=float, metavar="S", help="a smoke run sleeping S seconds before every case (a slow GPU, simulated)")
    p.add_argument("--budget", type=float, help=f"total seconds (default {GPU_DEFAULT_BUDGET:.0f} on a GPU, {SMOKE_DEFAULT_BUDGET:.0f} with --smoke; step budgets scale down to fit)")
    p.add_argument("--steps", type=_split, help="comma-separated subset of env,parity,models,kernels,tests,sweep")
    p.set_defaults(func=run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastvit")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["gpu-check", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


__all__ = ["add_parser", "collect", "main", "run"]
