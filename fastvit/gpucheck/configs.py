"""Parity of every shipped launch configuration, not only the autotuner's pick.

Each kernel module's ``@triton.autotune`` wrappers are found by inspection
(:func:`autotuners`); their candidates are the configurations the autotuner
holds on this GPU plus the table's ``"default"`` entries (used when autotuning
is off). :func:`forced` pins one wrapper to one candidate (a one-entry config
list: Triton then launches it without benchmarking) while the module's other
wrappers stay pinned to their first candidate, and the op's public function is
run forward and backward on seeded inputs at ViT shapes and compared with the
fp64 reference of :mod:`fastvit.kernels.reference` under the error rule of the
test suite: ``max|fused - ref| <= 2 * max|torch - ref| + atol``, where
``torch`` is the same reference computed in the inputs' own dtype.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
import zlib
from dataclasses import dataclass
from typing import Callable

from fastvit import shapes
from fastvit.kernels import ops

# Seeded op cases per kernel module: (op, dtype, shape dict). Read from the shape table (fastvit.shapes),
# so a new preset's widths and head dims are swept with no edit here: the core presets' head dims at
# ViT lengths (197, 257, 577 tokens), then every other preset's head dim at 257 tokens, last (a sweep cut
# off by its deadline drops them first); LayerNorm and the GEMMs at the core widths.
_CORE_DIMS = shapes.head_dims("core")
GPU_SHAPES = {
    "flash_attention": [dict(batch=2, heads=8, seq=n, head_dim=d) for n in (197, 257, 577) for d in _CORE_DIMS]
    + [dict(batch=2, heads=8, seq=257, head_dim=d) for d in shapes.head_dims("wide") if d not in _CORE_DIMS],
    "norm": [dict(rows=4 * 197 + 3, width=w) for w in shapes.widths("core")],
    "linear": [dict(rows=2 * 197, width=w) for w in shapes.widths("core")],
}
SMOKE_SHAPES = {
    "flash_attention": [dict(batch=1, heads=2, seq=17, head_dim=16)],
    "norm": [dict(rows=5, width=64)],
    "linear": [dict(rows=8, width=16)],
}
# The ops of each swept module, as the declarations (fastvit.kernels.ops) list them.
OPS = {module.rpartition(".")[2]: names for module, names in ops.by_module().items()
       if module.rpartition(".")[2] in ("flash_attention", "norm", "linear")}
ATOL = {"bf16": 2e-2, "fp16": 2e-3, "fp32": 1e-4}
EPS = 1e-6


def _describe(config) -> dict:
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


def _key(config) -> tuple:
    return tuple(sorted(_describe(config).items()))


def autotuners(module) -> list[tuple[str, object, list]]:
    """``(name, autotuner, candidates)`` for every ``@triton.autotune`` wrapper in ``module``."""
    import triton
    from triton.runtime.autotuner import Autotuner

    from fastvit.kernels import tuning

    # an op file's kernels and tables: its KERNELS / CONFIGS (pass -> kernel as launched / tuning table),
    # beside its module globals (its backward file's kernels are only in KERNELS)
    namespace = dict(vars(module))
    for kernel in getattr(module, "KERNELS", {}).values():
        namespace.setdefault(getattr(kernel, "fn", kernel).__name__, kernel)
    for pass_name, table in getattr(module, "CONFIGS", {}).items():
        namespace.setdefault(f"{pass_name.upper()}_CONFIGS", table)
    tables = [v for v in namespace.values()
              if isinstance(v, dict) and isinstance(v.get("default"), list) and all(isinstance(e, dict) for e in v["default"])]  # fmt: skip
    found, seen = [], set()
    for name, obj in sorted(namespace.items()):
        if not isinstance(obj, Autotuner) or id(obj) in seen:
            continue
        seen.add(id(obj))
        candidates = {_key(c): c for c in obj.configs}
        for table in tables:
            held = [{_key(triton.Config(*tuning.split(e)[:1], **tuning.split(e)[1])) for e in tuning.selected_entries(table, pruned=p)}
                    for p in (False, True)]  # a kernel whose autotuner prunes at launch holds its whole table
            if set(candidates) in held:
                arch = tuning.current_arch()
                for entry in (table.get(arch) or []) + table["default"]:
                    meta, launch = tuning.split(entry)
                    c = triton.Config(meta, **launch)
                    candidates.setdefault(_key(c), c)
        found.append((name.lstrip("_"), obj, list(candidates.values())))
    return found


@contextlib.contextmanager
def forced(tuner, config, others=()):
    """Launch ``tuner`` with ``config`` only, and each of ``others`` with its first candidate."""
    saved = [(t, t.configs) for t in (tuner, *[o for o, _ in others])]
    try:
        tuner.configs = [config]
        for other, first in others:
            other.configs = [first]
        yield
    finally:
        for t, configs in saved:
            t.configs = configs


@dataclass
class OpCase:
    op: str
    dtype: str
    shape: dict
    inputs: dict  # leaf tensors and upstream gradients
    run: Callable  # (inputs) -> dict name -> tensor (outputs and gradients)
    reference: dict | None = None  # fp64 results
    eager: dict | None = None  # reference in the inputs' dtype
    run_with: Callable | None = None  # (impl) -> results of impl(leaves) (see make_case), on the same inputs


def _leaves(inputs, names, cast=None):
    return {k: (cast(inputs[k]) if cast else inputs[k]).detach().requires_grad_() for k in names}


def _grads(outs: dict, leaves: dict, douts: dict) -> dict:
    outs_list = [outs[k] for k in douts]
    import torch

    grads = torch.autograd.grad(outs_list, list(leaves.values()), [douts[k].to(outs[k].dtype) for k in douts])
    return {**{k: v.detach() for k, v in outs.items()}, **{f"d{k}": g for k, g in zip(leaves, grads)}}


def make_case(op: str, dtype: str, shape: dict, device: str, seed: int = 0, impl: Callable | None = None) -> OpCase:
    """Seeded inputs for one op at one shape, with its fp64 and same-dtype references computed.

    ``impl(leaves)`` -> outputs replaces fastvit's kernel (an ``auto`` candidate, say): ``leaves``
    holds the op's input tensors by name, the outputs are ``{"out": ...}`` (``{"s", "out"}`` for
    add_layer_norm)."""
    import torch

    from fastvit import kernels
    from fastvit.bench import torch_dtype
    from fastvit.kernels import reference as R

    g = torch.Generator().manual_seed(seed + zlib.crc32(repr((op, dtype, sorted(shape.items()))).encode()))
    dt = torch_dtype(dtype)

    def randn(*size, scale=1.0, shift=0.0):
        return (torch.randn(*size, generator=g) * scale + shift).to(device=device, dtype=dt)

    if op == "attention":
        b, h, n, d = shape["batch"], shape["heads"], shape["seq"], shape["head_dim"]
        t = {k: randn(b, h, n, d) for k in ("q", "k", "v", "dout")}
        names, douts = ("q", "k", "v"), ("out",)
        ref = lambda L, up: {"out": R.attention_ref(L["q"], L["k"], L["v"], upcast=up)}  # noqa: E731
        fused = lambda L: {"out": kernels.attention(L["q"], L["k"], L["v"])}  # noqa: E731
    elif op in ("layer_norm", "add_layer_norm"):
        m, w = shape["rows"], shape["width"]
        t = dict(x=randn(m, w), y=randn(m, w), weight=randn(w, scale=0.5, shift=1.0), bias=randn(w, scale=0.5),
                 dout=randn(m, w), ds=randn(m, w))  # fmt: skip
        if op == "layer_norm":
            names, douts = ("x", "weight", "bias"), ("out",)
            ref = lambda L, up: {"out": R.layer_norm_ref(L["x"], L["weight"], L["bias"], EPS, upcast=up)}  # noqa: E731
            fused = lambda L: {"out": kernels.layer_norm(L["x"], L["weight"], L["bias"], EPS)}  # noqa: E731
        else:
            names, douts = ("x", "y", "weight", "bias"), ("s", "out")
            ref = lambda L, up: dict(zip(("s", "out"), R.add_layer_norm_ref(L["x"], L["y"], L["weight"], L["bias"], EPS, upcast=up)))  # noqa: E731
            fused = lambda L: dict(zip(("s", "out"), kernels.add_layer_norm(L["x"], L["y"], L["weight"], L["bias"], EPS)))  # noqa: E731
    else:
        m, w = shape["rows"], shape["width"]
        k, n = (w, 4 * w) if op == "linear_gelu" else (4 * w, w)
        t = dict(x=randn(m, k), weight=randn(n, k, scale=k**-0.5), bias=randn(n, scale=0.1), residual=randn(m, n), dout=randn(m, n))
        names, douts = (("x", "weight", "bias") if op == "linear_gelu" else ("x", "weight", "bias", "residual")), ("out",)
        if op == "linear_gelu":
            ref = lambda L, up: {"out": R.linear_gelu_ref(L["x"], L["weight"], L["bias"], upcast=up)}  # noqa: E731
            fused = lambda L: {"out": kernels.linear_gelu(L["x"], L["weight"], L["bias"])}  # noqa: E731
        else:
            ref = lambda L, up: {"out": R.linear_residual_ref(L["x"], L["weight"], L["bias"], L["residual"], upcast=up)}  # noqa: E731
            fused = lambda L: {"out": kernels.linear_residual(L["x"], L["weight"], L["bias"], L["residual"])}  # noqa: E731
    upstream = {"out": t["dout"], **({"s": t["ds"]} if op == "add_layer_norm" else {})}
    upstream = {k: upstream[k] for k in douts}

    def run_ref(upcast):
        L = _leaves(t, names, (lambda v: v.double()) if upcast else None)
        return _grads(ref(L, upcast), L, {k: (v.double() if upcast else v) for k, v in upstream.items()})

    def run_fused(_inputs):
        L = _leaves(t, names)
        return _grads((impl or fused)(L), L, upstream)

    def run_with(other):
        L = _leaves(t, names)
        return _grads(other(L), L, upstream)

    return OpCase(op, dtype, dict(shape), t, run_fused, reference=run_ref(True), eager=run_ref(False), run_with=run_with)


def compare(case: OpCase, got: dict, factor: float = 2.0) -> tuple[bool, dict]:
    """(passed, figures): the worst tensor's error against its budget."""
    import torch

    worst = dict(max_abs_err=0.0, max_rel_err=0.0, tensor=None, budget=None)
    ok = True
    for name, ref in case.reference.items():
        out = got[name].double()
        finite = bool(torch.isfinite(out).all())
        err = (out - ref).abs().max().item() if out.numel() else 0.0
        eager = (case.eager[name].double() - ref).abs().max().item() if out.numel() else 0.0
        scale = ref.abs().max().item() if ref.numel() else 0.0
        budget = factor * eager + ATOL[case.dtype] * max(1.0, scale)
        rel = err / scale if scale > 0 else err
        if not finite or err > budget:
            ok = False
        if not finite or rel >= worst["max_rel_err"]:
            worst = dict(max_abs_err=err if finite else math.inf, max_rel_err=rel if finite else math.inf, tensor=name, budget=budget)
    return ok, worst


def planned(modules=("flash_attention", "norm", "linear"), *, smoke: bool, dtypes=None) -> int:
    """How many launches :func:`sweep` makes when it is not cut off."""
    dtypes = dtypes or (("fp16", "fp32") if smoke else ("bf16", "fp16"))
    shapes = SMOKE_SHAPES if smoke else GPU_SHAPES
    total = 0
    for module_name in modules:
        module = importlib.import_module(f"fastvit.kernels.{module_name}")
        per_config = len(dtypes) * len(shapes[module_name]) * len(OPS[module_name])
        total += sum(len(c) for _, _, c in autotuners(module)) * per_config
    return total


def sweep(modules=("flash_attention", "norm", "linear"), *, smoke: bool, device: str, dtypes=None, emit=print, deadline=None,
          emit_one=None, clock=time.monotonic) -> list[dict]:
    """Run every candidate config of every autotuner on every shape and dtype; one record per launch.

    ``emit(records)`` is called after each configuration and ``emit_one(record)``
    after each launch, so a cut-off run keeps what it measured. ``deadline`` (a
    ``clock()`` value) is checked before every launch and stops the sweep early.
    """
    from fastvit.bench import environment, make_record

    env = environment(device)
    dtypes = dtypes or (("fp16", "fp32") if smoke else ("bf16", "fp16"))
    shapes = SMOKE_SHAPES if smoke else GPU_SHAPES
    records: list[dict] = []
    cases: dict[tuple, OpCase | str] = {}
    # Two passes: every configuration at the first shape and dtype (ViT-B's), then the rest of the grid,
    # so a sweep cut off by its deadline has still launched every shipped configuration once.
    for first_pass in (True, False):
        for module_name in modules:
            module = importlib.import_module(f"fastvit.kernels.{module_name}")
            tuners = autotuners(module)
            grid = [(op, dtype, shape) for dtype in dtypes for shape in shapes[module_name] for op in OPS[module_name]]
            n_first = len(OPS[module_name])
            grid = grid[:n_first] if first_pass else grid[n_first:]
            for kernel, tuner, candidates in tuners:
                others = [(t, c[0]) for _, t, c in tuners if t is not tuner]
                for config in candidates:
                    for op, dtype, shape in grid:
                        if deadline is not None and clock() > deadline:
                            emit(records)
                            return records
                        records.append(_one(module_name, kernel, tuner, config, others, op, dtype, shape, device, cases, env, make_record))
                        if emit_one is not None:
                            emit_one(records[-1])
                    emit(records)
    return records


def _compiled(jit_fn) -> dict:
    """The binaries a @triton.jit function has compiled in this process (empty under the interpreter)."""
    found = {}
    try:
        for device, entry in (getattr(jit_fn, "device_caches", None) or {}).items():
            cache = entry[0] if isinstance(entry, tuple) else entry
            for key, kernel in dict(cache).items():
                found[(device, key)] = kernel
    except Exception:  # noqa: BLE001 - a Triton without this layout: no figures, the check still runs
        return {}
    return found


def _usage(kernels) -> dict:
    """Registers per thread, spilled bytes and shared memory of the binaries just compiled (on the GPU itself)."""
    regs = [getattr(k, "n_regs", None) for k in kernels]
    spills = [getattr(k, "n_spills", None) for k in kernels]
    shared = [getattr(getattr(k, "metadata", None), "shared", None) for k in kernels]
    pick = lambda values: max((v for v in values if isinstance(v, int)), default=None)  # noqa: E731
    return {k: v for k, v in (("registers", pick(regs)), ("spills", pick(spills)), ("shared", pick(shared))) if v is not None}


def _one(module_name, kernel, tuner, config, others, op, dtype, shape, device, cases, env, make_record) -> dict:
    import torch

    key = (op, dtype, tuple(shape.items()))
    fields = dict(name=f"{op}/{kernel}/{','.join(f'{k}={v}' for k, v in shape.items())}/{dtype}/{_key(config)}",
                  kind="parity", op=op, variant=f"triton:{kernel}", mode="fwd+bwd", dtype=dtype, shape=dict(shape),
                  config=_describe(config), **env)  # fmt: skip
    if key not in cases:
        try:
            cases[key] = make_case(op, dtype, shape, device)
        except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
            cases[key] = f"inputs/reference failed: {type(e).__name__}: {e}"
    case = cases[key]
    if isinstance(case, str):
        return make_record(status="error", reason=case[:500], **fields)
    start = time.perf_counter()
    before = set(_compiled(tuner.fn))
    try:
        with forced(tuner, config, others):
            got = case.run(case.inputs)
            if device == "cuda":
                torch.cuda.synchronize()
    except (ValueError, TypeError) as e:  # the op's own validation: this shape is not supported
        return make_record(status="skipped", reason=f"{type(e).__name__}: {e}"[:500], **fields)
    except Exception as e:  # noqa: BLE001 - a launch failure is a result
        return make_record(status="error", reason=f"{type(e).__name__}: {str(e).strip()[:400]}", **fields)
    new = [k for key, k in _compiled(tuner.fn).items() if key not in before]
    if new:
        fields["config"] = {**fields["config"], **_usage(new)}  # this launch's first compile of the config
    ok, worst = compare(case, got)
    reason = None if ok else f"{worst['tensor']}: max error {worst['max_abs_err']:.3e} over budget {worst['budget']:.3e}"
    return make_record(status="ok" if ok else "failed", reason=reason, max_abs_err=worst["max_abs_err"],
                       max_rel_err=worst["max_rel_err"], first_call_s=time.perf_counter() - start, **fields)  # fmt: skip
