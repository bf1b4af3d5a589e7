"""What every gpu-check step shares: its absolute deadline, its stream, the case loop,
pytest children stopped with SIGINT, the verdict, and the rehearsal's injected delay.

A step child gets ``--deadline`` as a wall-clock time (seconds since the epoch,
set by the parent when it starts the child, before the child imports anything),
so the child and the parent agree when it ends. The child stops starting work
``grace`` seconds before it, so it can stop a pytest child with SIGINT (pytest
and pytest-benchmark write their JUnit XML and benchmark JSON on SIGINT, not
on SIGTERM or SIGKILL), wait for it, and write its end line in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from .files import BAD, Stream

ROOT = Path(__file__).resolve().parents[2]
DELAY_ENV = "FASTVIT_GPUCHECK_DELAY"  # rehearsal: seconds slept before each case (a slow GPU, simulated)
STREAM_ENV = "FASTVIT_GPUCHECK_STREAM"  # the pytest plugin's stream file
GROUP_ENV = "FASTVIT_GPUCHECK_GROUP"


def log(*parts) -> None:
    print(*parts, flush=True)


def injected_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV) or 0))
    except ValueError:
        return 0.0


class Cut(Exception):
    """The step's deadline came before its next case."""


class Clock:
    """The step's deadline (wall clock) less the grace it keeps to stop children and write its end."""

    def __init__(self, deadline: float, grace: float):
        self.deadline, self.grace = float(deadline), float(grace)

    def left(self) -> float:
        """Seconds of work left (already less the grace)."""
        return self.deadline - self.grace - time.time()

    def check(self, need: float = 0.0) -> None:
        if self.left() <= need:
            raise Cut()


def verdict(records: list[dict], planned: int | None, cut: bool) -> tuple[str, str | None]:
    """A step's status from what it wrote: never ``ok`` for a step that ran nothing or was cut off.

    ``timeout`` (cut off before its first case), ``partial`` (cut off after n of
    m cases), ``failed`` (a check failed or errored: the reason names how many,
    and says partial when it was also cut), ``skipped`` (every case skipped:
    nothing measured), ``failed`` with "ran nothing" (no case at all), else ``ok``.
    """
    done = len(records)
    bad = [r for r in records if r.get("status") in BAD]
    of = f"{done} of {planned if planned is not None else '?'}"
    if bad:
        return "failed", f"{len(bad)} failed or errored" + (f"; partial: {of}" if cut else "")
    if cut:
        return ("partial", f"{of} cases") if done else ("timeout", f"cut off before its first case (0 of {planned if planned is not None else '?'})")
    if not done:
        return "failed", "ran nothing"
    if all(r.get("status") == "skipped" for r in records):
        return "skipped", "every case skipped: " + str(records[0].get("reason") or "")[:200]
    if planned is not None and done < planned:
        return "partial", f"{of} cases"
    return "ok", None


def run_cases(stream: Stream, clock: Clock, cases: Iterable[tuple[str, Callable[[], list[dict]]]], *, need=lambda name: 0.0) -> bool:
    """Run ``(name, fn)`` cases in order, streaming each record ``fn`` returns; False when cut off first."""
    delay = injected_delay()
    for name, fn in cases:
        try:
            clock.check(need(name) + delay)
        except Cut:
            log(f"cut: no time for {name} ({clock.left():.1f} s left)")
            return False
        if delay:
            time.sleep(delay)
        started = time.monotonic()
        for record in fn():
            stream.record(record)
            log(f"{record['status']:<8} {record['name']} ({time.monotonic() - started:.1f} s)"
                + (f": {record['reason']}" if record.get("reason") else ""))  # fmt: skip
    return True


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default, so Python turns it into KeyboardInterrupt
    there (a process started in the background of a shell inherits SIGINT ignored, and Python keeps it so)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_group(cmd, **kwargs) -> subprocess.Popen:
    """``cmd`` in a new process group (session) of its own that SIGINT can stop."""
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=_default_sigint, **kwargs)


def stop_group(proc: subprocess.Popen, grace: float) -> int | None:
    """SIGINT to the child's process group, ``grace`` seconds to finish, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=max(wait, 0.5))
        except subprocess.TimeoutExpired:
            continue
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def run_pytest(args: list[str], *, clock: Clock, stream: Stream, label: str, env: dict | None = None) -> dict:
    """pytest in its own process group, its output going to the log as it goes, its cases streamed by
    :mod:`fastvit.gpucheck.plugin`; stopped with SIGINT and a grace period at the step's deadline.
    ``{"code": exit status or None, "cut": bool}``."""
    env = dict(env or os.environ)
    env.update({STREAM_ENV: str(stream.path), GROUP_ENV: label})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", *args, "-p", "fastvit.gpucheck.plugin", "-p", "no:cacheprovider",
           "-p", "no:randomly", "-q", "-rfE"]  # fmt: skip
    log(f"--- pytest {label}: {' '.join(args)} ({clock.left():.0f} s left)")
    proc = popen_group(cmd, cwd=ROOT, env=env)
    try:
        code = proc.wait(timeout=max(clock.left(), 0.1))
        return dict(code=code, cut=False)
    except subprocess.TimeoutExpired:
        log(f"--- pytest {label}: deadline; SIGINT, {clock.grace:.0f} s grace")
        return dict(code=stop_group(proc, clock.grace * 0.7), cut=True)
    except BaseException:
        stop_group(proc, clock.grace * 0.7)
        raise
