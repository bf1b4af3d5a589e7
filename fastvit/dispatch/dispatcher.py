"""The dispatcher: the first call for a key picks a candidate, later calls reuse the pick.

:meth:`Dispatcher.choose` in order:

Every choice is keyed by (policy, op, GPU, the op's key, mode): the mode is
"training" when autograd records the call (:func:`~fastvit.dispatch.policy.mode_of`),
else "inference", so training never reuses an inference-time choice.

1. Inside graph capture (``torch.compiler.is_compiling()`` or CUDA graph
   capture) nothing is measured or recorded: the choice recorded for the key
   by an earlier eager call is returned, else the first torch candidate.
2. Inputs not on CUDA: the first torch candidate.
3. A choice already made in this process for the key: reused.
4. Policy ``torch``: the first torch candidate that supports the call;
   ``kernel``: the first supporting kernel candidate, else torch (forced: not
   checked, not timed). Neither reads nor writes the disk cache, so a forced
   policy always wins over it.
5. Policy ``measure``: the disk cache's entry when it names a candidate that
   still supports the call; else every supporting kernel candidate must first
   agree with PyTorch's on this call (:mod:`fastvit.dispatch.gate`): one that
   does not is disqualified, its error recorded in the choice's ``errors`` and
   ``reasons``, and warned about once (:class:`KernelMismatchWarning`). Then each
   candidate left is timed by ``timer(fn, args) -> seconds``: under
   ``torch.no_grad`` for an inference call, forward + backward for a training
   one (``fn`` wrapped by :func:`forward_backward`). A candidate that raises
   loses, with its error recorded. The fastest torch candidate is kept unless a
   kernel beats it by more than :data:`~fastvit.dispatch.policy.MARGIN`; equal
   times keep declaration order. The result is written to the disk cache.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from . import gate
from .cache import DiskCache, cache_dir, software_versions
from .policy import MARGIN, Candidate, mode_of, normalize_key
from .tables import unbind_all
from .policy import policy as read_policy

SOURCES = ("measured", "cache", "policy", "only", "unprepared")


class KernelMismatchWarning(UserWarning):
    """A kernel candidate disagreed with PyTorch on a measured call and was disqualified (warned once per op and kernel)."""


class UnpreparedWarning(UserWarning):
    """Compiled code met an ``auto`` layer with no bound choice for its call: it runs PyTorch's ops (warned once)."""

_DEFAULT_DIR = object()

# The default timer's budget per candidate: a first call (compilation, autotuning),
# WARMUP more, then ROUNDS rounds of at least ROUND_S each; the median round.
ROUNDS = 5
WARMUP = 2
ROUND_S = 0.002


@dataclass
class Choice:
    """What was chosen for one (op, GPU, key), and why."""

    op: str
    key: tuple
    device: str
    chosen: str
    kind: str
    source: str  # measured | cache | policy | only | unprepared
    policy: str
    times: dict[str, float | None] = field(default_factory=dict)  # seconds per call; None when it raised
    reasons: dict[str, str] = field(default_factory=dict)  # why a candidate was skipped, disqualified or lost by raising
    last_used: int = 0
    mode: str = "inference"  # inference | training (timed forward + backward)
    errors: dict[str, dict] = field(default_factory=dict)  # kernel -> the gate's verdict: ok, error, torch_error, allowed

    def as_dict(self) -> dict[str, Any]:
        return dict(op=self.op, key=list(self.key), device=self.device, chosen=self.chosen, kind=self.kind, source=self.source,
                    policy=self.policy, mode=self.mode, times=dict(self.times), reasons=dict(self.reasons),
                    errors={k: dict(v) for k, v in self.errors.items()})


def _first_tensor(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    return None


def cuda_inputs(args) -> bool:
    """The default device predicate: the call's first tensor is a CUDA tensor."""
    t = _first_tensor(args)
    return t is not None and t.is_cuda


def in_capture() -> bool:
    """True while dynamo traces or a CUDA graph is being captured (no choice may be made then)."""
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def default_timer(fn: Callable, args: tuple) -> float:
    """Seconds per call of ``fn(*args)`` by the benchmarks' method (:func:`fastvit.timing.time_case`:
    CUDA events on a GPU, a synchronised first call, warm-up, the median round) with a short budget
    (:data:`ROUNDS` rounds of at least :data:`ROUND_S`), leaving the peak-memory statistics alone."""
    from fastvit.timing import time_case

    device = "cuda" if cuda_inputs(args) else "cpu"
    timing = time_case(fn, [tuple(args)], device=device, rounds=ROUNDS, warmup=WARMUP, min_round_s=ROUND_S, track_memory=False)
    return timing.median_s


def forward_backward(fn: Callable) -> Callable:
    """``fn`` as one training step for the timer: forward on fresh leaves of the args (keeping which require grad),
    then backward from all-ones output gradients. ``__wrapped__`` is ``fn``."""

    @functools.wraps(fn)
    def step(*args):
        leaves = tuple(a.detach().requires_grad_() if isinstance(a, torch.Tensor) and a.requires_grad else a for a in args)
        outs = [o for o in gate._tensors(fn(*leaves)) if o.requires_grad]
        if outs:
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    return step


def _error_text(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"raised {type(e).__name__}: {lines[0] if lines else ''}"[:300]


class Dispatcher:
    """Chooses among candidates per (op, GPU, key); see the module docstring.

    Everything it depends on can be injected (tests run on the CPU with them):
    ``timer(fn, args) -> seconds``; ``cache_dir`` (None: memory only; default
    :func:`~fastvit.dispatch.cache.cache_dir`); ``policy`` (None: read
    ``$FASTVIT_DISPATCH`` on each call); ``on_cuda(args) -> bool`` (the device
    predicate); ``device_name(args) -> str`` (the GPU name in keys);
    ``versions`` (the software versions the disk cache is keyed by);
    ``margin`` (the kernel's required lead over torch, a fraction);
    ``check`` (False: skip the correctness gate -- only for tests of the timing logic itself).
    """

    def __init__(self, *, timer: Callable | None = None, cache_dir=_DEFAULT_DIR, policy: str | None = None,
                 on_cuda: Callable | None = None, device_name: Callable | None = None,
                 versions: dict[str, str] | None = None, margin: float = MARGIN, check: bool = True):
        if policy is not None:
            read_policy(policy)  # validate now: a bad value fails here, not on the first forward
        if not (isinstance(margin, (int, float)) and 0 <= margin < 1):
            raise ValueError(f"margin: expected a fraction in [0, 1), got {margin!r}")
        self.timer = timer or default_timer
        self._cache_dir = cache_dir
        self._policy = policy
        self.on_cuda = on_cuda or cuda_inputs
        self._device_name = device_name
        self._versions = versions
        self.margin = float(margin)
        self.check = bool(check)
        self._warned: set[tuple[str, str]] = set()
        self._unprepared: dict[tuple, Choice] = {}
        self._disk: DiskCache | None = None
        self._memory: dict[tuple, Choice] = {}
        self._latest: dict[tuple, Choice] = {}  # (op, device, key) -> the last choice made, any policy
        self._names: dict[int, str] = {}
        self._clock = 0
        self._lock = threading.RLock()

    # -- public --------------------------------------------------------------------------------

    @property
    def disk(self) -> DiskCache:
        if self._disk is None:
            folder = cache_dir() if self._cache_dir is _DEFAULT_DIR else self._cache_dir
            self._disk = DiskCache(folder, self._versions if self._versions is not None else software_versions())
        return self._disk

    def policy(self) -> str:
        return read_policy(self._policy)

    def choose(self, op: str, key: tuple, candidates: Sequence[Candidate], args: tuple, *, timer: Callable | None = None) -> Candidate:
        """The candidate to run ``op`` for this call (see the module docstring); ``timer`` overrides
        the dispatcher's for this call's measurement, if one is needed."""
        if in_capture():
            return self._recorded(op, key, candidates, args)
        pol = self.policy()
        key = normalize_key(key)
        mode = mode_of(args)
        if not self.on_cuda(args):
            return self._off_cuda(pol, op, key, mode, candidates, args)
        device = self.device_name(args)
        rec = self._memory.get((pol, op, device, key, mode))
        if rec is not None:
            found = _named(candidates, rec.chosen)
            if found is not None:
                self._clock += 1
                rec.last_used = self._clock
                return found
        with self._lock:
            return self._decide(pol, op, device, key, mode, _check(op, candidates), tuple(args), timer or self.timer)

    def choices(self, since: int | None = None) -> list[dict[str, Any]]:
        """The choices made in this process (used after ``since``, a :meth:`mark`), oldest first; compiled
        calls that found no bound choice are listed too, with source "unprepared"."""
        recs = sorted([*self._memory.values(), *self._unprepared.values()], key=lambda r: r.last_used)
        return [r.as_dict() for r in recs if since is None or r.last_used > since]

    def note_unprepared(self, op: str, key: tuple, mode: str, chosen: Candidate) -> None:
        """Record (and warn once) that compiled code runs ``chosen`` (PyTorch's) for a call no eager pass bound."""
        slot = (op, key, mode)
        if slot in self._unprepared:
            return
        self._clock += 1
        why = "no choice was bound before compiling: call fastvit.prepare(model, example) first (or use fastvit.compile)"
        self._unprepared[slot] = Choice(op, key, "compiled", chosen.name, chosen.kind, "unprepared", self.policy(),
                                        reasons={"*": why}, last_used=self._clock, mode=mode)
        if len(self._unprepared) == 1:
            warnings.warn(f"fastvit auto: compiled code runs PyTorch's ops for {op} {list(key)} ({mode}) and every other "
                          f"unprepared call; {why}", UnpreparedWarning, stacklevel=2)

    def mark(self) -> int:
        """A point in time for :meth:`choices` ``(since=...)``."""
        return self._clock

    def reset(self) -> None:
        """Forget this process's choices (the disk cache stays)."""
        self._memory.clear()
        self._latest.clear()
        self._unprepared.clear()
        if self is _CURRENT:
            unbind_all()

    def device_name(self, args) -> str:
        if self._device_name is not None:
            return str(self._device_name(args))
        t = _first_tensor(args)
        index = t.device.index if t is not None and t.device.index is not None else torch.cuda.current_device()
        name = self._names.get(index)
        if name is None:
            name = self._names[index] = torch.cuda.get_device_name(index)
        return name

    # -- internals -----------------------------------------------------------------------------

    def _recorded(self, op, key, candidates, args) -> Candidate:
        """Inside capture: the last recorded choice for the key, else the first torch candidate."""
        if self.on_cuda(args):
            rec = self._latest.get((op, self._captured_device(args), normalize_key(key), mode_of(args)))
            if rec is not None:
                found = _named(candidates, rec.chosen)
                if found is not None:
                    return found
        return _first_torch(candidates)

    def _captured_device(self, args) -> str | None:
        if self._device_name is not None:
            return str(self._device_name(args))
        t = _first_tensor(args)
        return None if t is None or t.device.index is None else self._names.get(t.device.index)

    def _record(self, pol, op, device, key, mode, chosen: Candidate, source, times=None, reasons=None, errors=None) -> Candidate:
        self._clock += 1
        rec = Choice(op, key, device, chosen.name, chosen.kind, source, pol, dict(times or {}), dict(reasons or {}), self._clock,
                     mode, dict(errors or {}))
        self._memory[(pol, op, device, key, mode)] = rec
        self._latest[(op, device, key, mode)] = rec
        return chosen

    def _off_cuda(self, pol, op, key, mode, candidates, args) -> Candidate:
        t = _first_tensor(args)
        device = t.device.type if t is not None else "cpu"
        chosen = _first_torch(candidates)
        if (pol, op, device, key, mode) not in self._memory:
            _check(op, candidates)
            why = f"inputs are on {device}: off CUDA every op runs PyTorch's implementation"
            self._record(pol, op, device, key, mode, chosen, "policy", reasons={c.name: why for c in candidates if c is not chosen})
        return chosen

    def _supported(self, candidates, args) -> tuple[list[Candidate], dict[str, str]]:
        ok, reasons = [], {}
        for c in candidates:
            try:
                why = c.supports(*args) if c.supports is not None else None
            except Exception as e:  # noqa: BLE001 - a broken supports() only disqualifies its candidate
                why = f"supports() {_error_text(e)}"
            if why is None:
                ok.append(c)
            else:
                reasons[c.name] = str(why)
        return ok, reasons

    def _decide(self, pol, op, device, key, mode, candidates, args, timer) -> Candidate:
        supported, reasons = self._supported(candidates, args)
        torch_ok = [c for c in supported if c.kind == "torch"]
        if pol == "measure":
            entry = self.disk.get(op, device, key, mode)
            cached = None if entry is None else _named(supported, entry["chosen"])
            if cached is not None:
                times = entry.get("times") if isinstance(entry.get("times"), dict) else {}
                saved = entry.get("reasons") if isinstance(entry.get("reasons"), dict) else {}
                errors = entry.get("errors") if isinstance(entry.get("errors"), dict) else {}
                return self._record(pol, op, device, key, mode, cached, "cache", times, {**saved, **reasons}, errors)
        errors: dict[str, dict] = {}
        if pol == "measure" and self.check and any(c.kind == "kernel" for c in supported):
            supported = self._gate(op, candidates, supported, args, mode, reasons, errors)
        if pol != "measure" or len(supported) <= 1:
            if pol == "kernel":
                pick = next((c for c in supported if c.kind == "kernel"), None) or (torch_ok or [None])[0]
            elif pol == "torch":
                pick = (torch_ok or [None])[0]
            else:  # one candidate left (or none): nothing to compare
                pick = (supported or [None])[0]
            source = "policy" if pol != "measure" else "only"
            return self._record(pol, op, device, key, mode, pick or _first_torch(candidates), source, reasons=reasons, errors=errors)
        times: dict[str, float | None] = {}
        training = mode == "training"
        with torch.enable_grad() if training else torch.no_grad():
            for c in supported:
                try:
                    seconds = float(timer(forward_backward(c.fn) if training else c.fn, args))
                    if not math.isfinite(seconds) or seconds < 0:
                        raise ValueError(f"the timer returned {seconds!r} seconds")
                    times[c.name] = seconds
                except Exception as e:  # noqa: BLE001 - a candidate that fails loses; forward goes on
                    times[c.name] = None
                    reasons[c.name] = _error_text(e)
        pick = self._fastest(supported, times)
        if pick is None:  # every candidate raised: run the torch one, whose error is the real one
            return self._record(pol, op, device, key, mode, (torch_ok or supported)[0], "measured", times, reasons, errors)
        self.disk.put(op, device, key, mode, dict(chosen=pick.name, times=times, reasons=reasons, errors=errors))
        return self._record(pol, op, device, key, mode, pick, "measured", times, reasons, errors)

    def _gate(self, op, candidates, supported, args, mode, reasons, errors) -> list[Candidate]:
        """``supported`` less the kernels that disagree with PyTorch's candidate on this call (recorded, warned once)."""
        kernels = [c for c in supported if c.kind == "kernel"]
        baseline = next((c for c in supported if c.kind == "torch"), None) or _first_torch(candidates)
        verdicts = gate.check(baseline, kernels, args, training=mode == "training")
        for c in kernels:
            v = verdicts[c.name]
            if v.error is not None:
                errors[c.name] = v.as_dict()
            if v.ok:
                continue
            reasons[c.name] = v.reason()
            if (op, c.name) not in self._warned:
                self._warned.add((op, c.name))
                warnings.warn(f"fastvit auto: the {c.name} kernel for {op} is not used: {v.reason()} "
                              f"(fastvit.dispatch.choices() lists it)", KernelMismatchWarning, stacklevel=4)
        return [c for c in supported if c.kind != "kernel" or verdicts[c.name].ok]

    def _fastest(self, supported, times) -> Candidate | None:
        """The fastest torch candidate unless a kernel beats it by more than the margin (ties: declaration order)."""
        timed = [c for c in supported if times.get(c.name) is not None]
        best = {}
        for kind in ("torch", "kernel"):
            of_kind = [c for c in timed if c.kind == kind]
            best[kind] = min(of_kind, key=lambda c: times[c.name]) if of_kind else None  # min keeps the first of equals
        if best["torch"] is None or best["kernel"] is None:
            return best["torch"] or best["kernel"]
        if times[best["kernel"].name] < times[best["torch"].name] * (1.0 - self.margin):
            return best["kernel"]
        return best["torch"]


def _named(candidates, name: str) -> Candidate | None:
    for c in candidates:
        if c.name == name:
            return c
    return None


def _first_torch(candidates) -> Candidate:
    for c in candidates:
        if c.kind == "torch":
            return c
    return candidates[0]


def _check(op, candidates) -> tuple[Candidate, ...]:
    if not isinstance(op, str) or not op:
        raise TypeError(f"dispatch op: expected a non-empty string, got {op!r}")
    candidates = tuple(candidates)
    if not candidates or not all(isinstance(c, Candidate) for c in candidates):
        raise TypeError(f"dispatch {op!r}: expected a non-empty sequence of fastvit.dispatch.Candidate")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"dispatch {op!r}: candidate names must be unique, got {names}")
    if not any(c.kind == "torch" for c in candidates):
        raise ValueError(f"dispatch {op!r}: needs at least one torch candidate (the fallback), got kinds {[c.kind for c in candidates]}")
    return candidates


# -- the process-wide dispatcher ---------------------------------------------------------------

# Made at import (cheap: nothing is read until a choice is needed), so a trace never constructs one.
_CURRENT = Dispatcher()


def get_dispatcher() -> Dispatcher:
    return _CURRENT


def set_dispatcher(dispatcher: Dispatcher | None) -> Dispatcher:
    """Install ``dispatcher`` process-wide (None: a fresh default one); returns the previous one."""
    global _CURRENT
    if dispatcher is not None and not isinstance(dispatcher, Dispatcher):
        raise TypeError(f"set_dispatcher: expected a fastvit.dispatch.Dispatcher or None, got {type(dispatcher).__name__}")
    previous, _CURRENT = _CURRENT, dispatcher if dispatcher is not None else Dispatcher()
    unbind_all()  # no layer keeps a choice made under the previous dispatcher's rules
    return previous


@contextlib.contextmanager
def using(dispatcher: Dispatcher):
    """``with using(Dispatcher(timer=...)):`` -- the process-wide dispatcher for a block."""
    previous = set_dispatcher(dispatcher)
    try:
        yield dispatcher
    finally:
        set_dispatcher(previous)


def choose(op: str, key: tuple, candidates: Sequence[Candidate], args: tuple, *, timer: Callable | None = None) -> Candidate:
    """The candidate to run ``op`` for ``args`` (see :class:`Dispatcher`)."""
    return get_dispatcher().choose(op, key, candidates, args, timer=timer)


def choices(since: int | None = None) -> list[dict[str, Any]]:
    """The process-wide dispatcher's choices: op, key, device, chosen, kind, source, policy, times, reasons."""
    return get_dispatcher().choices(since)


def mark() -> int:
    return get_dispatcher().mark()
