"""The correctness gate: a kernel may be chosen only where it agrees with PyTorch on the measured call.

The rule is flash-attention's: run the call three ways -- the kernel, PyTorch's
candidate (the first torch candidate that takes the call) in the same
precision, and a float64 reference -- and accept the kernel when, for every
output (and, for a training call, every input gradient),

    max|kernel - ref| <= 2 * max|torch - ref| + FLOOR[dtype] * max(1, max|ref|)

(twice PyTorch's own error, plus a small floor at the reference's scale: one
unit in the last place for bf16 and fp16, 1e-5 for fp32, whose GPU reductions
differ from run to run by more than an ulp). A candidate whose declaration
carries a ``bound`` is held to it instead: a float is a fraction of
``max(1, max|ref|)``; a callable is ``bound(dtype, torch_error, scale) -> allowed``
(the signature of the kernel declarations' ``Tolerance.bound``). The reference is the
candidate's ``reference`` run on float64 copies of the arguments, else PyTorch's
candidate run on them (autocast off). Positions where the reference is not
finite must match exactly (the same inf, or NaN).

A training call is checked with one backward from a fixed pseudo-random output
gradient (rounded to bfloat16's grid, so every precision sees the same values).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

FLOOR = {torch.float32: 1e-5, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


@dataclass(frozen=True)
class Verdict:
    """One kernel candidate's agreement with PyTorch on one call."""

    ok: bool
    error: float | None = None  # the kernel's largest error against the reference (worst output)
    torch_error: float | None = None  # PyTorch's candidate's error on that output
    allowed: float | None = None  # what the rule allows there
    why: str = ""

    def as_dict(self) -> dict:
        return dict(ok=self.ok, error=self.error, torch_error=self.torch_error, allowed=self.allowed)

    def reason(self) -> str:
        if self.why:
            return self.why
        return (f"disagrees with PyTorch: error {self.error:.3g} against the float64 reference, "
                f"allowed {self.allowed:.3g} (PyTorch's own {self.torch_error:.3g})")


def check(baseline, kernels, args, training: bool) -> dict[str, Verdict]:
    """``{name: Verdict}`` for each kernel candidate against ``baseline`` (PyTorch's candidate) on ``args``."""
    reference = next((k.reference for k in kernels if k.reference is not None), None)
    try:
        ref = evaluate(reference or baseline.fn, args, training, upcast=True)
        base = evaluate(baseline.fn, args, training)
    except Exception as e:  # noqa: BLE001 - nothing to compare against: no kernel may be chosen
        why = f"not checked (PyTorch's candidate or the reference {_error_text(e)}): not chosen"
        return {k.name: Verdict(False, why=why) for k in kernels}
    out = {}
    for k in kernels:
        try:
            got = evaluate(k.fn, args, training)
        except Exception as e:  # noqa: BLE001 - a kernel that raises loses
            out[k.name] = Verdict(False, why=_error_text(e))
            continue
        out[k.name] = compare(got, base, ref, k.bound)
    return out


def compare(got, base, ref, bound=None) -> Verdict:
    """The rule over lists of tensors (a kernel's results, PyTorch's, the reference's)."""
    if len(got) != len(ref) or len(base) != len(ref):
        return Verdict(False, why=f"returned {len(got)} results where PyTorch's candidate returns {len(base)}")
    worst = None
    for g, b, r in zip(got, base, ref):
        if g.shape != r.shape:
            return Verdict(False, why=f"returned shape {tuple(g.shape)} where PyTorch's candidate returns {tuple(r.shape)}")
        r = r.double()
        finite = torch.isfinite(r)
        g64, b64 = g.double(), b.double()
        if not bool(finite.all()):
            same = (g64 == r) | (torch.isnan(g64) & torch.isnan(r))
            if not bool(same[~finite].all()):
                return Verdict(False, why="disagrees with PyTorch where the reference is not finite")
            g64, b64, r = g64[finite], b64[finite], r[finite]
        scale = max(1.0, float(r.abs().max())) if r.numel() else 1.0
        error = _max_abs(g64 - r)
        torch_error = _max_abs(b64 - r)
        if callable(bound):
            allowed = float(bound(g.dtype, torch_error, scale))
        elif bound is not None:
            allowed = float(bound) * scale
        else:
            floor = FLOOR.get(g.dtype, torch.finfo(g.dtype).eps if g.is_floating_point() else 0.0)
            allowed = 2.0 * torch_error + floor * scale
        ratio = error / allowed if allowed > 0 else (0.0 if error == 0 else float("inf"))
        if error != error:  # NaN where the reference is finite
            ratio = float("inf")
        if worst is None or ratio > worst[0]:
            worst = (ratio, error, torch_error, allowed)
    if worst is None:
        return Verdict(True, 0.0, 0.0, 0.0)
    ratio, error, torch_error, allowed = worst
    return Verdict(ratio <= 1.0, error, torch_error, allowed)


def evaluate(fn, args, training: bool, *, upcast: bool = False) -> list[torch.Tensor]:
    """``fn``'s outputs on detached copies of ``args`` (float64 ones if ``upcast``, with autocast off), and for a
    training call the gradients of the arguments that require grad after one backward; all detached."""
    leaves = tuple(_leaf(a, upcast) for a in args)
    mode = torch.enable_grad() if training else torch.no_grad()
    with mode, (_no_autocast() if upcast else contextlib.nullcontext()):
        outs = _tensors(fn(*leaves))
        results = [o.detach() for o in outs]
        if training:
            inputs = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
            diff = [o for o in outs if o.requires_grad]
            if inputs and diff:
                grads = torch.autograd.grad(diff, inputs, [_grad_out(o, i) for i, o in enumerate(diff)], allow_unused=True)
                results += [torch.zeros_like(t) if g is None else g.detach() for g, t in zip(grads, inputs)]
    return results


def _leaf(a, upcast):
    if not isinstance(a, torch.Tensor):
        return a
    t = a.detach()
    if upcast and t.is_floating_point():
        t = t.to(torch.float64)
    return t.requires_grad_(a.requires_grad) if a.requires_grad else t


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def _grad_out(o: torch.Tensor, index: int) -> torch.Tensor:
    g = torch.Generator(device=o.device).manual_seed(1234 + index)
    values = torch.randn(o.shape, generator=g, device=o.device, dtype=torch.float32)
    return values.to(torch.bfloat16).to(o.dtype)


def _max_abs(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


@contextlib.contextmanager
def _no_autocast():
    with torch.autocast("cpu", enabled=False):
        if torch.cuda.is_available():
            with torch.autocast("cuda", enabled=False):
                yield
        else:
            yield


def _error_text(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"raised {type(e).__name__}: {lines[0] if lines else ''}"[:300]
