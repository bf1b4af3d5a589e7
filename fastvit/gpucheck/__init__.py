"""``fastvit gpu-check`` (``scripts/gpu_check.sh``): first contact with a GPU in one command.

Steps, in priority order, each a child process with its own time budget
(unused time carries over to the next step; the total stays within
``--budget``, 480 s by default):

1. ``env``: ``nvidia-smi`` (query, clocks, power), ``fastvit info``, versions.
2. ``tests``: the ``cuda``-marked pytest suite, ``tests/kernels`` first (JUnit -> records).
3. ``parity``: the fused ViT-B's logits and parameter gradients vs the fp64
   model; ``compute-sanitizer --tool memcheck`` on a small case of every op;
   then every shipped launch configuration forced one by one at ViT shapes
   (197/257/577 tokens, head dims 64/72/80, widths 768/1024/1280), bf16 and
   fp16, forward and backward (:mod:`.configs`).
4. ``models``: ViT-B/16 224 bf16 batch 256, inference and training step:
   fastvit ``fused``, ``sdpa``, ``auto``, ``reference`` (eager attention),
   ``timm``, each eager then compiled (``fastvit bench`` records: MFU, parity).
5. ``kernels``: ``benchmarks/test_kernels.py`` in priority groups (attention vs
   SDPA's backends, LayerNorm GB/s vs torch and inductor, fused GEMMs vs
   cuBLAS + epilogue and inductor).

A step that fails, crashes or runs out of time is recorded in the summary and
the next step runs. Results go to ``--out`` (default ``$OUT``, else
``bench-out/gpu-check``) as at most seven files, ``<gpu>-<date>-{summary,env,
tests,parity,models,kernels}.json`` plus ``<gpu>-<date>-gpu-check.log``; each
is written as its step goes. ``--smoke`` runs the same steps on the CPU at toy
shapes with the Triton interpreter (CI runs it). Exit status 0 when every step
passed, 1 otherwise, 2 for bad options.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .files import log_path, write_doc

# (step, seconds) in priority order: on a GPU the total is 470 s of the 480 s default budget.
GPU_BUDGETS = (("env", 20), ("tests", 90), ("parity", 140), ("models", 140), ("kernels", 80))
SMOKE_BUDGETS = (("env", 60), ("tests", 120), ("parity", 300), ("models", 240), ("kernels", 300))
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


def _child_env(smoke: bool) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if smoke:
        env.update(TRITON_INTERPRET="1", FASTVIT_AUTOTUNE="0", CUDA_VISIBLE_DEVICES="", OPENBLAS_NUM_THREADS="1")
    else:
        env.pop("TRITON_INTERPRET", None)
    return env


def _step_command(step: str, budget: float, args, stamp: str) -> list[str]:
    return [sys.executable, "-m", "fastvit.gpucheck.steps", step, "--out", str(args.out), "--stamp", stamp,
            "--budget", f"{budget:.0f}"] + (["--smoke"] if args.smoke else [])  # fmt: skip


def _run_step(step: str, budget: float, args, stamp: str, log) -> tuple[str, int | None, float]:
    """Run one step's child under ``budget`` seconds; (status, exit code, seconds)."""
    cmd = _step_command(step, budget, args, stamp)
    start = time.monotonic()
    log.write(f"\n===== step {step}: budget {budget:.0f} s, {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}\n")
    log.flush()
    child = subprocess.Popen(cmd, cwd=ROOT, env=_child_env(args.smoke), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)  # fmt: skip
    try:
        code = child.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        _kill(child)
        return "timeout", None, time.monotonic() - start
    return ("ok" if code == 0 else "failed"), code, time.monotonic() - start


def _kill(child: subprocess.Popen) -> None:
    """Stop the step's whole process group (pytest and compile workers included)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(args: argparse.Namespace) -> int:
    budgets = SMOKE_BUDGETS if args.smoke else GPU_BUDGETS
    if args.steps:
        unknown = sorted(set(args.steps) - {s for s, _ in budgets})
        if unknown:
            print(f"fastvit gpu-check: error: unknown steps {unknown}; valid: {', '.join(s for s, _ in budgets)}", file=sys.stderr)
            return 2
        budgets = tuple((s, b) for s, b in budgets if s in args.steps)
    total = args.budget if args.budget is not None else (sum(b for _, b in budgets) + 10 if args.smoke else 480.0)
    if total <= 0:
        print("fastvit gpu-check: error: --budget must be > 0", file=sys.stderr)
        return 2
    out = Path(args.out or os.environ.get("OUT") or "bench-out/gpu-check")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").write_text("")
        (out / ".write-test").unlink()
    except OSError as e:
        print(f"fastvit gpu-check: error: cannot write to {out}: {e}", file=sys.stderr)
        return 2
    args.out = out
    stamp = f"{'cpu' if args.smoke else _gpu_slug()}-{_dt.date.today().isoformat()}"
    scale = min(1.0, total / max(1, sum(b for _, b in budgets)))
    began = time.monotonic()
    steps = []
    with open(log_path(out, stamp), "a") as log:
        log.write(f"fastvit gpu-check {'--smoke ' if args.smoke else ''}budget {total:.0f} s -> {out}\n")
        carry = 0.0
        for step, base in budgets:
            left = total - (time.monotonic() - began)
            budget = min(base * scale + carry, left)
            if budget < 5:
                steps.append(dict(step=step, status="not run", reason="no time left", budget_s=round(budget, 1)))
                continue
            status, code, seconds = _run_step(step, budget, args, stamp, log)
            carry = max(0.0, budget - seconds)
            steps.append(dict(step=step, status=status, exit=code, budget_s=round(budget, 1), seconds=round(seconds, 1)))
            print(f"gpu-check: {step:<8} {status:<8} {seconds:6.1f} s (budget {budget:.0f} s)", flush=True)
            _write_summary(out, stamp, steps, total, began)
    _write_summary(out, stamp, steps, total, began)
    _print_headline(out, stamp)
    files = sorted(p.name for p in out.glob(f"{stamp}-*"))
    print(f"gpu-check: {time.monotonic() - began:.0f} s; results in {out}: {', '.join(files)}")
    return 0 if all(s["status"] == "ok" for s in steps) else 1


def _print_headline(out: Path, stamp: str) -> None:
    """Counts of the checks by status, and the model table, from the files written."""
    import json

    for part in ("tests", "parity"):
        path = out / f"{stamp}-{part}.json"
        try:
            records = json.loads(path.read_text())["records"]
        except (OSError, ValueError, KeyError):
            continue
        counts: dict[str, int] = {}
        for r in records:
            counts[r.get("status")] = counts.get(r.get("status"), 0) + 1
        print(f"gpu-check: {part}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=str)))
        for r in [r for r in records if r.get("status") in ("failed", "error")][:10]:
            print(f"  {r['status']}: {r['name']}: {(r.get('reason') or '')[:200]}")
    try:
        from fastvit.bench import format_table

        records = json.loads((out / f"{stamp}-models.json").read_text())["records"]
        print(format_table(records))
    except Exception:  # noqa: BLE001 - no models file (step not run) or an unreadable one: nothing to show
        pass


def _write_summary(out, stamp, steps, total, began) -> None:
    from fastvit.bench import make_record

    records = [make_record(name=s["step"], kind="step", status=s["status"], reason=s.get("reason") or
                           (None if s.get("exit") in (0, None) else f"exit {s['exit']}"), first_call_s=s.get("seconds"))
               for s in steps]  # fmt: skip
    details = dict(budget_s=total, elapsed_s=round(time.monotonic() - began, 1), steps=steps, argv=sys.argv)
    write_doc(Path(out) / f"{stamp}-summary.json", records, details=details)


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("gpu-check", help="one-command GPU check: env, parity of every launch config, model and kernel benchmarks",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", help="result folder (default: $OUT, else bench-out/gpu-check)")
    p.add_argument("--smoke", action="store_true", help="CPU, Triton interpreter, toy shapes: the same steps end to end")
    p.add_argument("--budget", type=float, help="total seconds (default 480 on a GPU; step budgets scale down to fit)")
    p.add_argument("--steps", type=_split, help="comma-separated subset of env,tests,parity,models,kernels")
    p.set_defaults(func=run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastvit")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["gpu-check", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


__all__ = ["add_parser", "main", "run"]
