"""Timing one call pattern (the benchmarks' and `auto`'s method): warm-up, then timed rounds over rotating input buffers.

:class:`Timer` times rounds (CUDA events on a GPU, ``perf_counter`` on the
CPU); :func:`time_case` warms up, sizes the rounds and returns a
:class:`Timing` (median and friends). :func:`pedantic_measure` lets
pytest-benchmark drive the same rounds. :func:`parity` is the error figure
recorded beside the time.

Several cases are compared fairly by :func:`prepare_case` (first call and
warm-up of each) followed by :func:`measure_interleaved`: round by round, each
case's round in turn, the order rotated every round, so a machine that speeds
up or slows down during the run (turbo, other work, thermal limits) biases no
case's ratio to another's. ``clock`` is the CPU timer; tests replace it.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence


def clock() -> float:
    """Seconds from an arbitrary origin: what CPU rounds are timed with (tests monkeypatch it)."""
    return time.perf_counter()


def machine_load() -> tuple[float | None, int]:
    """(1-minute load average or None where the OS has none, cores this process may use)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return load, cores


class Timer:
    """Calls ``step(*inputs[i % len(inputs)])`` with i counting up, so consecutive
    calls read different buffers, and times rounds of ``iters_per_round`` calls.

    On CUDA a round is timed with a pair of CUDA events and ends with a
    synchronisation, so it measures GPU time and nothing leaks into the next
    round; on the CPU with ``time.perf_counter``. :attr:`times` holds seconds
    per call, one entry per round. ``round`` is what pytest-benchmark's
    ``pedantic`` calls (with ``sync`` as its setup).
    """

    def __init__(self, step: Callable, inputs: Sequence[tuple], device: str):
        if not inputs:
            raise ValueError("Timer needs at least one input buffer")
        self.step, self.inputs, self.cuda = step, list(inputs), device == "cuda"
        self.iters_per_round = 1
        self.times: list[float] = []
        self.calls = 0

    def call(self):
        args = self.inputs[self.calls % len(self.inputs)]
        self.calls += 1
        return self.step(*args)

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def round(self) -> float:
        k = self.iters_per_round
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(k):
                self.call()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3 / k
        else:
            t0 = clock()
            for _ in range(k):
                self.call()
            seconds = (clock() - t0) / k
        self.times.append(seconds)
        return seconds

    def timed_call(self) -> tuple[Any, float]:
        """One synchronised call and its wall time (for the first call and the round-size estimate)."""
        self.sync()
        t0 = clock()
        out = self.call()
        self.sync()
        return out, clock() - t0


def measure_rounds(timer: Timer, rounds: int) -> None:
    """The plain measurement loop (the CLI's); pytest uses :func:`pedantic_measure` instead."""
    for _ in range(rounds):
        timer.round()


def pedantic_measure(benchmark) -> Callable[[Timer, int], None]:
    """A ``measure`` for :func:`time_case` that lets pytest-benchmark drive the rounds.

    pytest-benchmark's own statistics are the wall time of each round (which
    ends in a synchronisation); the figures in ``extra_info`` come from the
    same rounds' CUDA-event times.
    """

    def measure(timer: Timer, rounds: int) -> None:
        benchmark.pedantic(timer.round, setup=timer.sync, rounds=rounds, warmup_rounds=0, iterations=1)

    return measure


@dataclass
class Timing:
    times: list[float]  # seconds per call, one per round
    iters_per_round: int
    warmup_iters: int
    first_call_s: float
    peak_mem_bytes: int | None
    check: Any = None  # what ``check`` returned for the first call's output
    load_avg: float | None = None  # the machine's 1-minute load average when the rounds ended
    cpu_count: int | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)


def time_case(
    step: Callable,
    inputs: Sequence[tuple],
    *,
    device: str,
    rounds: int,
    warmup: int,
    measure: Callable[[Timer, int], None] | None = None,
    check: Callable[[Any], Any] | None = None,
    min_round_s: float | None = None,
    track_memory: bool = True,
) -> Timing:
    """Warm up, then time ``rounds`` rounds of ``step`` over the rotating ``inputs``.

    Warm-up (outside the measurement): one synchronised first call (compilation
    and autotuning happen here; its wall time is ``first_call_s``; ``check``
    sees its output, e.g. to measure parity) and ``warmup`` more calls, the
    last one timed to size the rounds: a round makes ``ceil(min_round_s / t)``
    calls (default 20 ms on CUDA, one call on the CPU) so short kernels are not
    dominated by the per-round synchronisation. Peak memory (CUDA) is reset
    after the warm-up and read after the rounds (``track_memory=False``
    leaves the process's peak-memory statistics alone; ``peak_mem_bytes`` is then None).
    """
    case = prepare_case(step, inputs, device=device, warmup=warmup, check=check, min_round_s=min_round_s)
    memory = device == "cuda" and track_memory
    if memory:
        import torch

        torch.cuda.reset_peak_memory_stats()
    (measure or measure_rounds)(case.timer, rounds)
    case.timer.sync()
    if memory:
        import torch

        case.peak_mem_bytes = torch.cuda.max_memory_allocated()
    return case.timing()


@dataclass
class PreparedCase:
    """A case after its first call and warm-up, ready for timed rounds."""

    timer: Timer
    warmup_iters: int
    first_call_s: float
    check: Any = None
    peak_mem_bytes: int | None = None
    holder: Any = None  # what the caller keeps alive with the case (its model, optimizer)

    def timing(self) -> Timing:
        if not self.timer.times:
            raise RuntimeError("the measurement ran no rounds")
        load, cores = machine_load()
        return Timing(list(self.timer.times), self.timer.iters_per_round, self.warmup_iters, self.first_call_s,
                      self.peak_mem_bytes, self.check, load, cores)  # fmt: skip


def prepare_case(
    step: Callable,
    inputs: Sequence[tuple],
    *,
    device: str,
    warmup: int,
    check: Callable[[Any], Any] | None = None,
    min_round_s: float | None = None,
) -> PreparedCase:
    """The first call (``check`` sees its output) and the warm-up of :func:`time_case`; rounds not yet timed."""
    timer = Timer(step, inputs, device)
    out, first_call_s = timer.timed_call()
    checked = check(out) if check is not None else None
    del out
    estimate = first_call_s
    for i in range(max(warmup, 1)):
        if i == max(warmup, 1) - 1:
            _, estimate = timer.timed_call()
        else:
            timer.call()
    if min_round_s is None:
        min_round_s = 0.02 if device == "cuda" else 0.0
    timer.iters_per_round = max(1, min(1000, math.ceil(min_round_s / max(estimate, 1e-9))))
    timer.sync()
    return PreparedCase(timer, max(warmup, 1) + 1, first_call_s, checked)


def measure_interleaved(timers: Sequence[Timer], rounds: int, on_error: Callable[[int, BaseException], None] | None = None) -> None:
    """``rounds`` rounds of every timer, interleaved: round r runs the timers in their order rotated by r.

    Each timer thus sees the same stretch of the run, and runs first (right
    after another case's work) as often as the others, so neither a drifting
    machine nor the order the cases were given in biases their ratios. A timer
    whose round raises is reported to ``on_error(index, exception)`` (or the
    exception propagates when there is none) and left out of later rounds.
    """
    live = list(range(len(timers)))
    for r in range(rounds):
        if not live:
            return
        shift = r % len(live)
        for i in live[shift:] + live[:shift]:
            try:
                timers[i].round()
            except Exception as e:
                if on_error is None:
                    raise
                live.remove(i)
                on_error(i, e)


def parity(out, ref) -> dict[str, float]:
    """max |out - ref| and that over max |ref| (a norm-wise relative error that zero logits cannot blow up)."""
    diff = (out.detach().double() - ref.detach().double()).abs().max().item()
    scale = ref.detach().double().abs().max().item()
    return dict(max_abs_err=diff, max_rel_err=diff / scale if scale > 0 else diff)


def _timing_fields(timing: Timing) -> dict[str, Any]:
    return dict(
        ms_per_iter=timing.median_s * 1e3, round_ms=[t * 1e3 for t in timing.times], rounds=len(timing.times),
        iters_per_round=timing.iters_per_round, warmup_iters=timing.warmup_iters,
        first_call_s=timing.first_call_s, peak_mem_bytes=timing.peak_mem_bytes,
        spread=(max(timing.times) - min(timing.times)) / timing.median_s if timing.median_s > 0 and len(timing.times) > 1 else None,
        load_avg=timing.load_avg, cpu_count=timing.cpu_count,
    )
