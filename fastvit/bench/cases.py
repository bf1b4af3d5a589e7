"""One measurement -> one record: :func:`run_model_case` (``fastvit bench`` and
``benchmarks/test_model_throughput.py``) and :func:`run_kernel_case`
(``benchmarks/test_kernels.py``)."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from .flops import flop_per_image
from .hardware import environment, peak_tflops
from .models import ModelCase, ModelContext, _free_memory, build_model, unavailable_reason
from .records import dispatch_summary, make_record
from ..timing import Timer, _timing_fields, measure_interleaved, parity, prepare_case, time_case
from .variants import Variant, dtype_name, get_variant

# Keyword arguments of torch.compile for "+compile" variants: the default mode.
# (Tests swap in {"backend": "eager"} to exercise the path without inductor's C++ build.)
COMPILE_KWARGS: dict[str, Any] = {}


def _logits(out):
    """Logits from a model output; a distilled model in training returns (class, distillation) logits."""
    if isinstance(out, (tuple, list)):
        return (out[0] + out[1]) / 2
    return out


def _error_text(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


def _model_fields(case: ModelCase, ctx: ModelContext, variant: Variant, env: dict) -> dict:
    cfg = ctx.cfg.replace(**dict(variant.overrides)) if variant.impl == "fastvit" else ctx.cfg
    config = dict(
        img_size=list(cfg.img_size), patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, num_classes=cfg.num_classes, impl=variant.impl,
    )
    if variant.impl == "fastvit":
        config.update(attn_impl=cfg.attn_impl, norm_impl=cfg.norm_impl, linear_impl=cfg.linear_impl)
    return dict(
        name=case.name, kind="model", model=case.model, variant=case.variant, mode=case.mode,
        dtype=dtype_name(case.dtype), batch=case.batch, config=config, compile=variant.compile, **env,
    )


def run_model_case(
    case: ModelCase,
    ctx: ModelContext,
    *,
    rounds: int,
    warmup: int,
    measure: Callable[[Timer, int], None] | None = None,
    raise_errors: bool = False,
    label: str | None = None,
) -> dict[str, Any]:
    """Measure one (model, variant, mode, dtype, batch) and return its record.

    Status "skipped" (with the reason) when the variant cannot run here,
    "error" when it raised (unless ``raise_errors``), else "ok". ``label``
    ("smoke") marks a record that is no measurement; a case whose overrides
    make the model smaller than its preset is labelled "toy" anyway.
    To compare variants, :func:`run_model_cases` interleaves their rounds.
    """
    if measure is None:
        return run_model_cases([case], ctx, rounds=rounds, warmup=warmup, raise_errors=raise_errors, label=label)[0]
    fields, reason, variant = _start(case, ctx, label)
    if reason is not None:
        return make_record(status="skipped", reason=reason, **fields)
    try:
        since, model, step, check, _ = _prepare_model(case, ctx, variant)
        timing = time_case(step, ctx.inputs, device=ctx.device, rounds=rounds, warmup=warmup, measure=measure,
                           check=check, min_round_s=_min_round_s(ctx))  # fmt: skip
        del model, step
        return make_record(status="ok", **fields, **_model_figures(case, ctx, variant, timing, _choices(since)))
    except Exception as e:
        if raise_errors:
            raise
        return make_record(status="error", reason=_error_text(e), **fields)
    finally:
        _cleanup(variant, ctx)


def run_model_cases(
    cases: Sequence[ModelCase],
    ctx: ModelContext,
    *,
    rounds: int,
    warmup: int,
    raise_errors: bool = False,
    label: str | None = None,
) -> list[dict[str, Any]]:
    """Measure several cases of one context with their rounds interleaved; one record per case, in order.

    Every case is built and warmed up first (its first call and warm-up calls),
    then :func:`fastvit.timing.measure_interleaved` runs round ``r`` of each
    case in turn, rotating the order every round, so the order of ``cases``
    biases no ratio between them. On CUDA ``peak_mem_bytes`` is read in one
    more call per case afterwards: what the call allocates beyond the memory
    held before it, plus the case's own model, optimizer state and the
    shared inputs (the other cases' models are not counted).
    """
    records: list[dict | None] = [None] * len(cases)
    live: list[tuple[int, dict, Variant, Any, Any, Any]] = []  # (index, fields, variant, auto's choices, model, prepared)
    compiled = False
    try:
        for i, case in enumerate(cases):
            fields, reason, variant = _start(case, ctx, label)
            if reason is not None:
                records[i] = make_record(status="skipped", reason=reason, **fields)
                continue
            try:
                if variant.compile and not compiled:
                    import torch

                    torch._dynamo.reset()  # once: the cases compiled here stay compiled side by side
                compiled = compiled or variant.compile
                since, model, step, check, holder = _prepare_model(case, ctx, variant)
                prepared = prepare_case(step, ctx.inputs, device=ctx.device, warmup=warmup, check=check, min_round_s=_min_round_s(ctx))
                prepared.holder = holder
                live.append((i, fields, variant, _choices(since), model, prepared))
            except Exception as e:
                if raise_errors:
                    raise
                records[i] = make_record(status="error", reason=_error_text(e), **fields)
        failed: dict[int, BaseException] = {}

        def on_error(j: int, e: BaseException) -> None:
            if raise_errors:
                raise e
            failed[j] = e

        measure_interleaved([entry[5].timer for entry in live], rounds, on_error=on_error)
        for j, (i, fields, variant, choices, model, prepared) in enumerate(live):
            if j in failed:
                records[i] = make_record(status="error", reason=_error_text(failed[j]), **fields)
                continue
            if ctx.device == "cuda":
                prepared.peak_mem_bytes = _call_memory(prepared, model, ctx)
            records[i] = make_record(status="ok", **fields, **_model_figures(cases[i], ctx, variant, prepared.timing(), choices))
    finally:
        live.clear()
        if compiled:
            import torch

            torch._dynamo.reset()
        _free_memory(ctx.device)
    return records  # type: ignore[return-value]


def _start(case: ModelCase, ctx: ModelContext, label: str | None) -> tuple[dict, str | None, Variant]:
    if not ctx.matches(case):
        raise ValueError(f"context {ctx.model}/{ctx.dtype}/b{ctx.batch} does not match case {case.name}")
    variant = get_variant(case.variant)
    env = environment(ctx.device)
    fields = _model_fields(case, ctx, variant, env)
    fields["label"] = label or ("toy" if _is_toy(case, ctx) else None)
    return fields, unavailable_reason(variant, ctx.cfg, ctx.device, case.dtype, case.mode, case.model), variant


def _is_toy(case: ModelCase, ctx: ModelContext) -> bool:
    """A case whose overrides make the model cheaper than the preset it names (e.g. 2 blocks at 32x32)."""
    if not case.overrides:
        return False
    from fastvit.factory import get_config

    return flop_per_image(ctx.cfg) < flop_per_image(get_config(case.model))


def _min_round_s(ctx: ModelContext) -> float | None:
    return 0.0 if ctx.device != "cuda" else None


def _cleanup(variant: Variant, ctx: ModelContext) -> None:
    if variant.compile:
        import torch

        torch._dynamo.reset()
    _free_memory(ctx.device)


def _prepare_model(case, ctx, variant):
    """(dispatch mark, model, step(x, y), parity check, (model, optimizer)) for one case."""
    import torch
    import torch.nn.functional as F

    from fastvit import dispatch

    ref = ctx.reference_logits()
    since = dispatch.mark()
    model = build_model(variant, ctx)
    training = case.mode == "training"
    model.train(training)
    if variant.compile:
        dispatch.prepare(model, ctx.inputs[0][0])  # auto's choices made before dynamo traces (CUDA only)
        fn = torch.compile(model, **COMPILE_KWARGS)
    else:
        fn = model
    opt = None
    if training:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            logits = _logits(fn(x))
            F.cross_entropy(logits.float(), y).backward()
            opt.step()
            return logits.detach()

    else:

        def step(x, y):
            with torch.inference_mode():
                return _logits(fn(x))

    return since, model, step, (lambda out: parity(out, ref)), (model, opt)


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _call_memory(prepared, model, ctx) -> int:
    """Peak memory of one more call, counted as if the case ran alone (see :func:`run_model_cases`)."""
    import torch

    _, opt = prepared.holder
    own = _tensor_bytes(list(model.parameters()) + list(model.buffers()))
    if opt is not None:
        own += _tensor_bytes(t for state in opt.state.values() for t in state.values() if torch.is_tensor(t))
    own += _tensor_bytes(t for pair in ctx.inputs for t in pair)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    prepared.timer.call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before + own


def _choices(since) -> list[dict] | None:
    from fastvit import dispatch

    return dispatch_summary(dispatch.choices(since))


def _model_figures(case, ctx, variant, timing, choices) -> dict[str, Any]:
    gflop = flop_per_image(ctx.cfg, case.mode)
    flop_per_iter = gflop * case.batch
    seconds = timing.median_s
    tflops = flop_per_iter / seconds / 1e12
    peak, source = peak_tflops(ctx.device, case.dtype)
    return dict(
        images_per_s=case.batch / seconds, flop_per_iter=flop_per_iter, gflop_per_image=gflop / 1e9, tflops=tflops,
        peak_tflops=peak, peak_source=source, mfu=tflops / peak if peak else None,
        compile_s=timing.first_call_s if variant.compile else None,
        dispatch=choices,
        **timing.check, **_timing_fields(timing),
    )


# ---------------------------------------------------------------------------
# Kernel cases (used by benchmarks/test_kernels.py)
# ---------------------------------------------------------------------------


def run_kernel_case(
    *,
    op: str,
    provider: str,
    mode: str,
    dtype: str,
    shape: dict,
    step: Callable,
    inputs: Sequence[tuple],
    device: str = "cuda",
    rounds: int = 20,
    warmup: int = 3,
    flop_per_iter: float | None = None,
    bytes_per_iter: float | None = None,
    check: Callable[[Any], dict] | None = None,
    compiled: bool = False,
    measure: Callable[[Timer, int], None] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Time one kernel call pattern and return its record (same fields as a model record).

    ``flop_per_iter`` gives TFLOP/s and MFU; ``bytes_per_iter`` (the minimal
    traffic the op must move) gives GB/s. ``check(first_output)`` returns the
    parity fields (``max_rel_err``, ``max_abs_err``). ``label`` defaults to
    "smoke" under ``FASTVIT_KERNEL_BENCH_SMOKE=1`` (the suite's toy sizes on the CPU).
    """
    env = environment(device)
    timing = time_case(step, inputs, device=device, rounds=rounds, warmup=warmup, measure=measure, check=check)
    seconds = timing.median_s
    tflops = flop_per_iter / seconds / 1e12 if flop_per_iter else None
    peak, source = peak_tflops(device, dtype) if flop_per_iter else (None, None)
    shape_text = ",".join(f"{k}={v}" for k, v in shape.items())
    return make_record(
        name=f"{op}/{shape_text}/{dtype_name(dtype)}/{provider}/{mode}", kind="kernel", status="ok", op=op,
        variant=provider, mode=mode, dtype=dtype_name(dtype), shape=dict(shape),
        flop_per_iter=flop_per_iter, tflops=tflops, bytes_per_iter=bytes_per_iter,
        gbps=bytes_per_iter / seconds / 1e9 if bytes_per_iter else None,
        peak_tflops=peak, peak_source=source, mfu=tflops / peak if (tflops and peak) else None,
        compile=compiled, compile_s=timing.first_call_s if compiled else None,
        label=label or ("smoke" if os.environ.get("FASTVIT_KERNEL_BENCH_SMOKE") == "1" else None),
        **(timing.check or {}), **_timing_fields(timing), **env,
    )
