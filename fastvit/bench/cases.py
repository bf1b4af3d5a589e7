"""One measurement -> one record: :func:`run_model_case` (``fastvit bench`` and
``benchmarks/test_model_throughput.py``) and :func:`run_kernel_case`
(``benchmarks/test_kernels.py``)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .flops import flop_per_image
from .hardware import environment, peak_tflops
from .models import ModelCase, ModelContext, _free_memory, build_model, unavailable_reason
from .records import dispatch_summary, make_record
from ..timing import Timer, _timing_fields, parity, time_case
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
) -> dict[str, Any]:
    """Measure one (model, variant, mode, dtype, batch) and return its record.

    Status "skipped" (with the reason) when the variant cannot run here,
    "error" when it raised (unless ``raise_errors``), else "ok".
    """
    if not ctx.matches(case):
        raise ValueError(f"context {ctx.model}/{ctx.dtype}/b{ctx.batch} does not match case {case.name}")
    variant = get_variant(case.variant)
    env = environment(ctx.device)
    fields = _model_fields(case, ctx, variant, env)
    reason = unavailable_reason(variant, ctx.cfg, ctx.device, case.dtype, case.mode, case.model)
    if reason is not None:
        return make_record(status="skipped", reason=reason, **fields)
    try:
        return make_record(status="ok", **fields, **_measure_model(case, ctx, variant, rounds, warmup, measure))
    except Exception as e:
        if raise_errors:
            raise
        return make_record(status="error", reason=_error_text(e), **fields)
    finally:
        if variant.compile:
            import torch

            torch._dynamo.reset()
        _free_memory(ctx.device)


def _measure_model(case, ctx, variant, rounds, warmup, measure) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from fastvit import dispatch

    ref = ctx.reference_logits()
    since = dispatch.mark()
    model = build_model(variant, ctx)
    training = case.mode == "training"
    model.train(training)
    if variant.compile:
        torch._dynamo.reset()
        dispatch.prepare(model, ctx.inputs[0][0])  # auto's choices made before dynamo traces (CUDA only)
        fn = torch.compile(model, **COMPILE_KWARGS)
    else:
        fn = model

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

    timing = time_case(
        step, ctx.inputs, device=ctx.device, rounds=rounds, warmup=warmup, measure=measure,
        check=lambda out: parity(out, ref), min_round_s=0.0 if ctx.device != "cuda" else None,
    )
    del model, fn, step
    if training:
        del opt
    gflop = flop_per_image(ctx.cfg, case.mode)
    flop_per_iter = gflop * case.batch
    seconds = timing.median_s
    tflops = flop_per_iter / seconds / 1e12
    peak, source = peak_tflops(ctx.device, case.dtype)
    return dict(
        images_per_s=case.batch / seconds, flop_per_iter=flop_per_iter, gflop_per_image=gflop / 1e9, tflops=tflops,
        peak_tflops=peak, peak_source=source, mfu=tflops / peak if peak else None,
        compile_s=timing.first_call_s if variant.compile else None,
        dispatch=dispatch_summary(dispatch.choices(since)),
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
) -> dict[str, Any]:
    """Time one kernel call pattern and return its record (same fields as a model record).

    ``flop_per_iter`` gives TFLOP/s and MFU; ``bytes_per_iter`` (the minimal
    traffic the op must move) gives GB/s. ``check(first_output)`` returns the
    parity fields (``max_rel_err``, ``max_abs_err``).
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
        **(timing.check or {}), **_timing_fields(timing), **env,
    )
