"""gpu-check's first step: the environment, written before anything that can hang, and a one-kernel launch.

Order: ``env.json`` with what needs no import (versions from package metadata,
Python, the cache folders, a C compiler with Python's headers), rewritten as
each probe ends; ``nvidia-smi``; then torch: on a GPU run, a GPU torch cannot
see is fatal (torch's own reason recorded; nothing then runs on the CPU under
a GPU's name); then one Triton kernel (fastvit's LayerNorm) compiled, launched
and checked, which is fatal when it fails (Triton cannot compile here). Last,
``fastvit info`` under ``FASTVIT_DISPATCH=torch`` (nothing measured or
compiled), bounded by the step's deadline. Exit 3 when the run cannot go on.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from .files import result_path, write_doc
from .runner import ROOT, Clock, injected_delay, log

FATAL = 3
CACHE_VARS = ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "FASTVIT_CACHE_DIR")
PACKAGES = ("torch", "triton", "numpy", "timm", "torchvision", "transformers", "pytest", "pytest-benchmark")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def compiler_check() -> tuple[bool, str]:
    """A C compiler and Python's headers (Triton builds a launcher per kernel signature with them)."""
    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    problems = []
    if not cc or not shutil.which(cc.split()[0]):
        problems.append("no C compiler (cc, gcc, clang or $CC) on PATH")
    if not header.exists():
        problems.append(f"no Python headers ({header} missing)")
    return (not problems), "; ".join(problems) or f"{cc}; {header}"


def cache_check() -> tuple[bool, str]:
    """Every cache folder named in the environment exists or can be made, and is writable."""
    problems, shown = [], []
    for var in CACHE_VARS:
        path = os.environ.get(var)
        if not path:
            continue
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            probe = Path(path) / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
            shown.append(f"{var}={path}")
        except OSError as e:
            problems.append(f"{var}={path}: {e}")
    return (not problems), "; ".join(problems) or ", ".join(shown) or "no cache folders set"


def _run(cmd, timeout: float, env=None) -> tuple[int | None, str]:
    """A command in its own process group, killed with its children after ``timeout``."""
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # fmt: skip
    except OSError as e:
        return 127, f"{type(e).__name__}: {e}"
    try:
        out, _ = proc.communicate(timeout=max(timeout, 0.5))
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out or ""


def _cuda_reason(torch) -> str:
    try:
        torch.cuda.init()
    except Exception as e:  # noqa: BLE001 - torch's reason is the point
        return f"{type(e).__name__}: {e}"
    return f"torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build {torch.version.cuda})"


def _smoke_launch(device: str) -> tuple[bool, str, float]:
    """Compile and launch one fastvit Triton kernel; (ok, detail, seconds)."""
    import torch
    import torch.nn.functional as F

    start = time.perf_counter()
    try:
        from fastvit import kernels

        x = torch.randn(4, 64, device=device)
        w, b = torch.ones(64, device=device), torch.zeros(64, device=device)
        got = kernels.layer_norm(x, w, b, 1e-6)
        if device == "cuda":
            torch.cuda.synchronize()
        err = (got - F.layer_norm(x, (64,), w, b, 1e-6)).abs().max().item()
    except Exception as e:  # noqa: BLE001 - Triton cannot compile or launch here: the reason is the result
        return False, f"{type(e).__name__}: {str(e).strip()[:600]}", time.perf_counter() - start
    seconds = time.perf_counter() - start
    return err < 1e-4, f"layer_norm (4, 64) fp32 on {device}: max error {err:.1e}, compile + launch {seconds:.1f} s", seconds


def step_env(a, clock: Clock) -> int:
    from fastvit.bench import make_record  # imports no torch

    path = result_path(a, "env")
    records: list[dict] = []
    details: dict = dict(status="running", python=sys.version, executable=sys.executable, platform=platform.platform(),
                         versions=_versions(), smoke=a.smoke,
                         environ={k: os.environ.get(k) for k in (*CACHE_VARS, "TRITON_INTERPRET", "FASTVIT_AUTOTUNE",
                                                                  "CUDA_VISIBLE_DEVICES", "TRITON_CACHE_AUTOTUNING")})  # fmt: skip

    def write(status=None):
        if status:
            details["status"] = status
        write_doc(path, list(records), details=details)

    delay = injected_delay()

    def check(name, ok, reason, fatal=False):
        if delay:  # the rehearsal's slow machine
            time.sleep(delay)
        records.append(make_record(name=name, kind="check", status="ok" if ok else "failed", reason=reason))
        log(f"{'ok' if ok else 'FAILED':<8} {name}: {reason}")
        write()
        return ok or not fatal

    write()  # first, before anything that can hang
    go_on = check("cache-dirs-writable", *cache_check(), fatal=True)
    go_on = check("c-compiler-and-python-headers", *compiler_check(), fatal=not a.smoke) and go_on
    for label, cmd in (
        ("nvidia_smi_csv", ["nvidia-smi", "--format=csv", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
                            "clocks.mem,clocks.max.mem,power.limit,power.draw,temperature.gpu,pstate,persistence_mode"]),
        ("nvidia_smi_clocks", ["nvidia-smi", "-q", "-d", "CLOCK,PERFORMANCE,POWER"]),
    ):  # fmt: skip
        code, out = _run(cmd, timeout=min(10.0, clock.left() / 6))
        details[label] = out if code is not None else f"timed out\n{out}"
        write()
    import torch

    device = "cpu" if a.smoke else "cuda"
    if not a.smoke:
        visible = torch.cuda.is_available()
        go_on = check("cuda-visible", visible, (f"{torch.cuda.get_device_name()} sm_{''.join(map(str, torch.cuda.get_device_capability()))}"
                      if visible else _cuda_reason(torch)), fatal=True) and go_on  # fmt: skip
    if go_on:
        ok, detail, _ = _smoke_launch(device)
        go_on = check("triton-one-kernel-launch", ok, detail, fatal=True) and go_on
    if go_on or a.smoke:
        from fastvit.bench import environment

        records.insert(0, make_record(name="environment", kind="env", status="ok", **environment(device)))
        write()
    if go_on and clock.left() > 5:
        env = dict(os.environ, FASTVIT_DISPATCH="torch")  # info lists candidates; it must not time or compile them here
        code, out = _run([sys.executable, "-m", "fastvit", "info"], timeout=min(30.0, clock.left() - 2), env=env)
        details["fastvit_info"] = out if code is not None else f"timed out\n{out}"
        log(f"--- fastvit info (exit {code})\n{out[-3000:]}")
    bad = [r for r in records if r["status"] != "ok"]
    write("fatal" if not go_on else "failed" if bad else "ok")
    return FATAL if not go_on else 1 if bad else 0
