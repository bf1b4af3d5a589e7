"""Parity of every op implementation the model can dispatch to on this device, at ViT-B's shape.

The candidates are :data:`fastvit.layers.auto.OPS` (every implementation
``auto`` may pick: fastvit's kernels, the Hopper TMA GEMM included, and
PyTorch's own, SDPA's backends among them) plus the kernels only the ``fused``
model calls (add+LayerNorm, the LayerNorm fork). Each runs forward and
backward on seeded inputs and is compared with the fp64 reference under the
test suite's rule (:func:`fastvit.gpucheck.configs.compare`). A candidate
that does not take the call here (its ``supports`` gives a reason: wrong
GPU, dtype) is recorded ``skipped`` with that reason, so a kernel ``auto``
could pick but nothing checked is visible.
"""

from __future__ import annotations

from typing import Callable

# ViT-B/16 at 224, a batch of 8 images: 197 tokens, 12 heads of 64, width 768, MLP 3072.
VIT_B = dict(attention=dict(batch=8, heads=12, seq=197, head_dim=64), rows=8 * 197, width=768)
SMOKE = dict(attention=dict(batch=1, heads=2, seq=17, head_dim=16), rows=9, width=32)


def _shape(op: str, dims: dict) -> dict:
    return dims["attention"] if op.startswith("attention") else dict(rows=dims["rows"], width=dims["width"])


def _pack(L):
    import torch

    return torch.stack([L["q"], L["k"], L["v"]], dim=0).permute(1, 3, 0, 2, 4)  # (B, N, 3, H, D) view of the leaves


# auto op -> (the configs.make_case op, candidate fn adapter, supports adapter): adapters take the leaves dict.
EPS = 1e-6
ADAPTERS: dict[str, tuple[str, Callable, Callable]] = {
    "layer_norm": ("layer_norm", lambda fn, L: {"out": fn(L["x"], L["weight"], L["bias"], EPS, None)},
                   lambda sup, L: sup(L["x"], L["weight"], L["bias"], EPS, None)),
    "linear_gelu": ("linear_gelu", lambda fn, L: {"out": fn(L["x"], L["weight"], L["bias"], "none")},
                    lambda sup, L: sup(L["x"], L["weight"], L["bias"], "none")),
    "linear_residual": ("linear_residual", lambda fn, L: {"out": fn(L["x"], L["weight"], L["bias"], L["residual"], None, None)},
                        lambda sup, L: sup(L["x"], L["weight"], L["bias"], L["residual"], None, None)),
    "attention": ("attention", lambda fn, L: {"out": fn(L["q"], L["k"], L["v"], None)},
                  lambda sup, L: sup(L["q"], L["k"], L["v"], None)),
    "attention_packed": ("attention", lambda fn, L: {"out": fn(_pack(L), None)}, lambda sup, L: sup(_pack(L), None)),
}  # fmt: skip


def candidates(device: str, dtype: str, smoke: bool) -> list[tuple[str, str, str, Callable | None, str | None]]:
    """``(auto op, candidate, case op, impl(leaves), reason it is skipped or None)`` in check order:
    fastvit's kernels first, then PyTorch's, then the fused model's own kernels."""
    from fastvit import kernels
    from fastvit.layers import auto

    from . import configs

    dims = SMOKE if smoke else VIT_B
    found = []
    for op, cands in auto.OPS.items():
        if op not in ADAPTERS:
            found.append((op, "*", op, None, f"gpu-check has no case builder for auto op {op!r}"))
            continue
        case_op, run, supports = ADAPTERS[op]
        probe = _probe(case_op, dtype, _shape(case_op, dims), device) if any(c.supports for c in cands) else None
        default_torch = next(c.name for c in cands if c.kind == "torch")
        for c in sorted(cands, key=lambda c: c.kind != "kernel"):
            reason = None
            if device != "cuda" and c.kind == "torch" and c.name != default_torch:
                reason = f"auto dispatches on CUDA only (on the CPU it runs {default_torch!r}); not run on {device}"
            elif c.supports is not None:
                try:
                    reason = c.supports(*_support_args(supports, probe))
                except Exception as e:  # noqa: BLE001 - a supports() that raises is a finding
                    reason = f"supports() raised {type(e).__name__}: {e}"
            found.append((op, c.name, case_op, (lambda L, fn=c.fn, run=run: run(fn, L)), reason))
    fork = getattr(kernels, "layer_norm_fork", None)
    extra = [("add_layer_norm", "triton", "add_layer_norm", None, None)]
    if fork is not None:
        extra.append(("layer_norm_fork", "triton", "layer_norm", lambda L: {"out": fork(L["x"], L["weight"], L["bias"], EPS)[0]}, None))
    return found + extra


def _probe(op: str, dtype: str, shape: dict, device: str):
    """Inputs of the op's shape (uninitialised) for asking candidates whether they take the call."""
    import torch

    from fastvit.bench import torch_dtype

    dt = torch_dtype(dtype)
    empty = lambda *size: torch.empty(*size, device=device, dtype=dt)  # noqa: E731
    if op == "attention":
        b, h, n, d = shape["batch"], shape["heads"], shape["seq"], shape["head_dim"]
        inputs = {k: empty(b, h, n, d) for k in "qkv"}
    else:
        m, w = shape["rows"], shape["width"]
        k, n = (w, 4 * w) if op == "linear_gelu" else (4 * w, w) if op == "linear_residual" else (w, w)
        inputs = dict(x=empty(m, k), weight=empty(n, k) if op.startswith("linear") else empty(w), bias=empty(n),
                      residual=empty(m, n))  # fmt: skip
    return inputs


def _support_args(adapter, probe):
    captured = []
    adapter(lambda *args: captured.append(args), probe)
    return captured[0]


def check(op: str, name: str, case_op: str, impl, reason, *, device: str, dtype: str, smoke: bool, env: dict,
          cases: dict | None = None) -> dict:
    """One candidate's parity record at the step's shape (``cases`` keeps inputs and references per case op)."""
    import time

    from fastvit.bench import make_record

    from . import configs

    dims = SMOKE if smoke else VIT_B
    shape = _shape(case_op, dims)
    fields = dict(name=f"{op}/{name}/{','.join(f'{k}={v}' for k, v in shape.items())}/{dtype}", kind="parity", op=op,
                  variant=name, mode="fwd+bwd", dtype=dtype, shape=shape, **env)  # fmt: skip
    if reason is not None:
        return make_record(status="skipped", reason=str(reason)[:500], **fields)
    start = time.perf_counter()
    try:
        cases = {} if cases is None else cases
        if case_op not in cases:
            cases[case_op] = configs.make_case(case_op, dtype, shape, device)
        case = cases[case_op]
        got = case.run(case.inputs) if impl is None else case.run_with(impl)
        if device == "cuda":
            import torch

            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - a launch failure is a result
        return make_record(status="error", reason=f"{type(e).__name__}: {str(e).strip()[:400]}", **fields)
    ok, worst = configs.compare(case, got)
    why = None if ok else f"{worst['tensor']}: max error {worst['max_abs_err']:.3e} over budget {worst['budget']:.3e}"
    return make_record(status="ok" if ok else "failed", reason=why, max_abs_err=worst["max_abs_err"],
                       max_rel_err=worst["max_rel_err"], first_call_s=time.perf_counter() - start, **fields)  # fmt: skip
