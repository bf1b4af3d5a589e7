"""``fastvit bench``: time one model across variants, print a table, write a JSON file.

The variants of one mode are measured together, their rounds interleaved
(:func:`fastvit.bench.run_model_cases`), so the order of ``--variants`` does
not bias their ratios; the table shows each measurement's spread and the run
warns on stderr when rounds vary by more than 10% or the machine was loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .cases import _error_text, run_model_cases
from .hardware import environment, prepare_device, resolve_device
from .models import ModelCase, ModelContext, unavailable_reason
from .records import add_speedups, default_output, format_table, trust_warnings, unwritable, write_results
from .variants import (
    COMPILE_SUFFIX,
    CPU_DEFAULTS,
    CPU_QUICK,
    CUDA_DEFAULTS,
    CUDA_QUICK,
    DTYPES,
    MODES,
    dtype_name,
    get_variant,
    variant_names,
)


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="time fastvit's variants (reference, sdpa, fused, +compile, timm, hf) and write a JSON result file",
        description=(
            "Time one model across implementation variants, in inference and/or training-step mode, "
            "print a table and write a JSON result file. On CUDA the default is vit_base_patch16_224, bf16, "
            f"batch 256, variants {','.join(CUDA_DEFAULTS['variants'])}, both modes; on the CPU "
            f"vit_tiny_patch16_224, fp32, batch 8, variants {','.join(CPU_DEFAULTS['variants'])}, inference."
        ),
    )
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"), help="default: cuda when a GPU is visible")
    p.add_argument("--model", help="preset name (fastvit.list_models())")
    p.add_argument("--batch", type=int, help="images per step")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="parameter and activation dtype")
    p.add_argument("--variants", type=_split, help=f"comma-separated; valid: {','.join(variant_names())}")
    p.add_argument("--modes", type=_split, help="comma-separated: inference,training")
    p.add_argument("--rounds", type=int, help="timed rounds, interleaved across the variants (the median is reported)")
    p.add_argument("--warmup", type=int, help="warm-up calls after the first (compiling) call; at least 1 is made")
    p.add_argument("--quick", action="store_true", help="fewer variants and rounds")
    p.add_argument("--no-compile", action="store_true", help="drop the +compile variants")
    p.add_argument("--out", help="JSON result file (default: bench-out/<gpu-or-cpu>-<date>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, _parser=p)
    return p


def resolve_settings(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """The effective settings: explicit options over --quick over the device's defaults."""
    settings = dict(CUDA_DEFAULTS if device == "cuda" else CPU_DEFAULTS)
    if args.quick:
        settings.update(CUDA_QUICK if device == "cuda" else CPU_QUICK)
    for key in ("model", "batch", "dtype", "variants", "modes", "rounds", "warmup"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    variants = list(settings["variants"])
    if args.no_compile:
        variants = [v for v in variants if not v.endswith(COMPILE_SUFFIX)]
    if not variants:
        dropped = " (--no-compile dropped every +compile variant)" if settings["variants"] else ""
        raise ValueError(f"no variants to run{dropped}; --variants takes a comma-separated list of {', '.join(variant_names())}")
    if not settings["modes"]:
        raise ValueError(f"no modes to run; --modes takes a comma-separated list of {', '.join(MODES)}")
    for v in variants:
        get_variant(v)
    for m in settings["modes"]:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}; valid: {', '.join(MODES)}")
    variants = list(dict.fromkeys(variants))  # each once, in the order given
    import fastvit

    fastvit.get_config(settings["model"])
    if settings["batch"] < 1 or settings["rounds"] < 1 or settings["warmup"] < 0:
        raise ValueError("--batch and --rounds must be >= 1 and --warmup >= 0")
    settings.update(variants=variants, modes=list(dict.fromkeys(settings["modes"])), dtype=dtype_name(settings["dtype"]))
    return settings


def check_writable(path: Path) -> str | None:
    """Why the result file cannot be written at ``path``, or None: creates its folders and
    a scratch file beside it (removed again), as writing the results will."""
    problem = unwritable(path)
    if problem:
        return problem
    scratch = path.with_name(path.name + ".check")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_text("")
        scratch.unlink()
    except OSError as e:
        return e.strerror or str(e)
    if path.exists() and not os.access(path, os.W_OK):
        return "the file exists and is read-only"
    return None


def run(args: argparse.Namespace) -> int:
    """``fastvit bench``: 0 when every case ran or was skipped (and one at least ran), 1 when one raised or none
    ran, 2 for bad options or when no variant can run here."""
    try:
        device = resolve_device(args.device)
        s = resolve_settings(args, device)
    except (ValueError, RuntimeError) as e:
        print(f"fastvit bench: error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    prepare_device(device)
    env = environment(device)
    out = Path(args.out) if args.out else default_output(env)
    problem = check_writable(out)
    if problem:  # before any time is spent benchmarking
        print(f"fastvit bench: error: cannot write the results to {out}: {problem}", file=sys.stderr)
        return 2
    cases = [ModelCase(s["model"], v, m, s["dtype"], s["batch"]) for m in s["modes"] for v in s["variants"]]
    import fastvit

    cfg = fastvit.get_config(s["model"])
    reasons = {(c.variant, c.mode): unavailable_reason(get_variant(c.variant), cfg, device, c.dtype, c.mode, c.model) for c in cases}
    if all(reasons.values()):  # nothing could be measured: say why before any work
        why = "; ".join(f"{v} {m}: {r}" for (v, m), r in reasons.items())
        print(f"fastvit bench: error: none of the variants can run here ({why})", file=sys.stderr)
        return 2
    print(f"fastvit bench: {s['model']} {s['dtype']} batch {s['batch']} on {env['device']}; "
          f"{len(cases)} cases, {s['rounds']} interleaved rounds each -> {out}", file=sys.stderr)  # fmt: skip
    try:
        ctx = ModelContext(s["model"], s["dtype"], s["batch"], device)
    except Exception as e:  # e.g. out of memory for the input buffers
        print(f"fastvit bench: error: preparing weights and inputs failed: {_error_text(e)}", file=sys.stderr)
        return 1
    records: list[dict] = []
    modes = s["modes"]
    bar = tqdm(modes, desc="bench", unit="mode", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True)
    for mode in bar:
        group = [c for c in cases if c.mode == mode]
        bar.set_postfix_str(f"{mode}: {len(group)} variants")
        for record in run_model_cases(group, ctx, rounds=s["rounds"], warmup=s["warmup"]):
            records.append(record)
            if record["status"] != "ok":
                tqdm.write(f"{record['variant']} {record['mode']}: {record['status']}: {record['reason']}", file=sys.stderr)
        try:
            write_results(out, add_speedups(records), sys.argv)  # after every mode: a cut-off run keeps its data
        except OSError as e:
            bar.close()
            print(f"fastvit bench: error: writing {out} failed: {e.strerror or e}", file=sys.stderr)
            return 1
    bar.close()
    print(format_table(records, warnings=False))
    print(f"wrote {out}")
    for warning in trust_warnings(records):
        print(f"fastvit bench: warning: {warning}", file=sys.stderr)
    if not any(r["status"] == "ok" for r in records):
        print("fastvit bench: error: nothing was measured (every case was skipped or failed)", file=sys.stderr)
        return 1
    return 1 if any(r["status"] == "error" for r in records) else 0
