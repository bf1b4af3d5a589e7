"""Records, speed-ups, result files and the table.

Every record, from the CLI or from pytest (``benchmark.extra_info``), has the
same keys (:data:`RECORD_FIELDS`); a figure that does not apply is ``None``.
``dispatch`` lists the ``auto`` choices a model case ran (:func:`dispatch_summary`).

How much to trust a record (docs/benchmarks.md): ``spread`` is (max - min) /
median of its rounds (:func:`spread`), ``load_avg`` / ``cpu_count`` the
machine's 1-minute load average when its rounds ended and the cores this
process may use, ``label`` "smoke" or "toy" for runs that are not
measurements of the named model (:func:`run_label`); :func:`trust_warnings`
turns them into warnings.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any, Sequence

from .hardware import device_slug
from .variants import REFERENCE

ENV_FIELDS = (
    "device", "device_type", "compute_capability", "driver", "cuda", "cudnn", "torch", "triton", "fastvit",
    "python", "cpu_model", "num_threads",
)
RECORD_FIELDS = (
    "name", "kind", "status", "reason",
    "model", "op", "variant", "mode", "dtype", "batch", "shape", "config",
    "images_per_s", "ms_per_iter", "round_ms", "rounds", "iters_per_round", "warmup_iters", "spread",
    "load_avg", "cpu_count", "label",
    "flop_per_iter", "gflop_per_image", "tflops", "bytes_per_iter", "gbps", "peak_tflops", "peak_source", "mfu",
    "speedup_vs_reference", "max_rel_err", "max_abs_err", "peak_mem_bytes",
    "first_call_s", "compile", "compile_s", "dispatch",
    *ENV_FIELDS,
    "timestamp",
)  # fmt: skip


def make_record(**fields) -> dict[str, Any]:
    """A record with every key of :data:`RECORD_FIELDS` (unset ones None); unknown keys are an error."""
    unknown = sorted(set(fields) - set(RECORD_FIELDS))
    if unknown:
        raise KeyError(f"not record fields: {unknown}")
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(fields)
    record["timestamp"] = record["timestamp"] or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return record


def dispatch_summary(choices: list[dict]) -> list[dict] | None:
    """The part of :func:`fastvit.dispatch.choices` a record keeps: op, key, chosen, source (None: no choice made)."""
    return [{k: c[k] for k in ("op", "key", "chosen", "source")} for c in choices] or None


# Kernel benchmarks: the provider each op's speed-up is measured against.
KERNEL_REFERENCE = {
    "attention": "sdpa-flash", "layer_norm": "torch", "add_layer_norm": "torch",
    "linear_gelu": "torch", "linear_residual": "torch", "residual_norm": "torch", "mlp": "torch",
    "layer_norm_junction": "torch", "attention_probs": "torch",
    "rope_attention": "sdpa-rotate", "rotary_attention": "sdpa-rotate",
}


def reference_key(record: dict) -> tuple | None:
    """Key shared by a record and the record of its reference; None for records without one."""
    shape = json.dumps(record.get("shape"), sort_keys=True)
    config = record.get("config") and {k: v for k, v in record["config"].items() if not k.endswith("impl")}
    config = json.dumps(config, sort_keys=True)
    return (record["kind"], record["model"], record["op"], config, shape, record["dtype"], record["batch"],
            record["mode"], record["device"])  # fmt: skip


def is_reference(record: dict) -> bool:
    if record["kind"] == "kernel":
        return record["variant"] == KERNEL_REFERENCE.get(record["op"])
    return record["variant"] == REFERENCE


def speedup(record: dict, ref: dict | None) -> float | None:
    """Throughput of ``record`` over its reference's (images/s ratio = inverse ms ratio)."""
    if ref is None or record.get("status") != "ok" or ref.get("status") != "ok":
        return None
    return ref["ms_per_iter"] / record["ms_per_iter"]


def add_speedups(records: list[dict]) -> list[dict]:
    """Fill ``speedup_vs_reference`` in place, from the reference record of the same group."""
    refs = {reference_key(r): r for r in records if r["status"] == "ok" and is_reference(r)}
    for r in records:
        r["speedup_vs_reference"] = speedup(r, refs.get(reference_key(r)))
    return records


class References:
    """Reference records seen so far in a pytest session, so each case can carry its speed-up."""

    def __init__(self):
        self.seen: dict[tuple, dict] = {}

    def attach(self, benchmark, record: dict) -> dict:
        """Fill the speed-up, remember references, and store the record in ``benchmark.extra_info``."""
        if record["status"] == "ok" and is_reference(record):
            self.seen[reference_key(record)] = record
        record["speedup_vs_reference"] = speedup(record, self.seen.get(reference_key(record)))
        benchmark.extra_info.update(record)
        return record


# ---------------------------------------------------------------------------
# How much to trust a record
# ---------------------------------------------------------------------------

SPREAD_WARN = 0.10  # rounds whose (max - min) / median exceeds this are called noisy


def spread(record: dict) -> float | None:
    """(max - min) / median over the record's rounds (``round_ms``), else its ``spread`` field, else None
    (also for a single round: one time has no spread)."""
    rounds = record.get("round_ms")
    if isinstance(rounds, list) and len(rounds) == 1:
        return None
    if isinstance(rounds, list) and rounds and all(isinstance(t, (int, float)) and math.isfinite(t) for t in rounds):
        median = statistics.median(rounds)
        return (max(rounds) - min(rounds)) / median if median > 0 else None
    value = record.get("spread")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def loaded(record: dict) -> bool:
    """Whether other work shared the machine: besides this run (1), the load average exceeds half the cores."""
    load, cores = record.get("load_avg"), record.get("cpu_count")
    if not isinstance(load, (int, float)) or not isinstance(cores, int) or cores < 1:
        return False
    return load - 1 > 0.5 * cores


def run_label(record: dict) -> str | None:
    """"smoke" / "toy" (say so in every table), or None for a measurement of what the record names."""
    return record.get("label") or None


def format_spread(record: dict) -> str:
    """"4%", "23%!" (noisy: above :data:`SPREAD_WARN`), or "" without rounds."""
    value = spread(record)
    if value is None:
        return ""
    return f"{100 * value:.0f}%" + ("!" if value > SPREAD_WARN else "")


def trust_warnings(records: list[dict]) -> list[str]:
    """One line per reason to doubt ``records``: noisy rounds, a loaded machine, smoke or toy runs."""
    ok = [r for r in records if r.get("status") == "ok"]
    lines = []
    noisy = [r for r in ok if (spread(r) or 0) > SPREAD_WARN]
    if noisy:
        worst = max(noisy, key=spread)
        lines.append(
            f"{len(noisy)} of {len(ok)} measurements vary by more than {SPREAD_WARN:.0%} between rounds "
            f"(worst: {worst.get('name') or worst.get('variant')}, {spread(worst):.0%}); ratios between them are uncertain"
        )
    single = [r for r in ok if isinstance(r.get("round_ms"), list) and len(r["round_ms"]) == 1]
    if single:
        lines.append(f"{len(single)} of {len(ok)} measurements were timed in a single round: their noise is unknown")
    busy = [r for r in ok if loaded(r)]
    if busy:
        r = max(busy, key=lambda r: r["load_avg"])
        lines.append(
            f"the machine was loaded: 1-minute load average {r['load_avg']:.1f} on {r['cpu_count']} cores "
            f"during {len(busy)} of {len(ok)} measurements; other work competed for the CPU"
        )
    labels = sorted({run_label(r) for r in records if run_label(r)})
    for label in labels:
        lines.append(f"{label} run: toy sizes, not a measurement of the named model or op")
    return lines


# ---------------------------------------------------------------------------
# Files and the table
# ---------------------------------------------------------------------------


FORMAT = "fastvit-bench/1"


def default_output(env: dict, date: _dt.date | None = None) -> Path:
    date = date or _dt.date.today()
    return Path("bench-out") / f"{device_slug(env)}-{date.isoformat()}.json"


def unwritable(path: Path) -> str | None:
    """Why a file cannot be written at ``path`` (creating its folders), or None. Writes nothing."""
    try:
        return _unwritable(Path(path))
    except OSError as e:
        return e.strerror or str(e)


def _unwritable(path: Path) -> str | None:
    if path.is_dir():
        return "is a directory"
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():
            return f"{parent} is a broken link"
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"no permission to write in {parent}"
    return None


def write_results(path: str | os.PathLike, records: list[dict], argv: Sequence[str] | None = None) -> Path:
    """Write ``{"format", "created", "argv", "env", "records"}`` as JSON (atomically; parent dirs created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {k: records[0][k] for k in ENV_FIELDS} if records else {}
    doc = dict(
        format=FORMAT, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        argv=list(argv) if argv is not None else None, env=env, records=records,
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return path


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _mem(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**30:.2f} GiB"


TABLE_COLUMNS = ("variant", "mode", "images/s", "spread", "vs ref", "MFU", "max err", "peak mem", "compile s")


def _arch_note(record: dict) -> str:
    config = record.get("config") or {}
    shown = []
    for key in ("img_size", "depth", "embed_dim"):
        value = config.get(key)
        if value is not None:
            shown.append(f"{key}={'x'.join(map(str, value)) if isinstance(value, list) else value}")
    return ", ".join(shown)


def format_table(records: list[dict], warnings: bool = True) -> str:
    """Plain-text table of model records, one block per (model, dtype, batch, device).

    ``spread`` is (max - min) / median over the rounds, marked ``!`` above
    :data:`SPREAD_WARN`; smoke and toy runs say so in the block's title;
    :func:`trust_warnings` lines follow the blocks (``warnings=False``: left
    to the caller, e.g. for stderr).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["kind"] == "model":
            groups.setdefault((r["model"], r["dtype"], r["batch"], r["device"]), []).append(r)
    blocks = []
    for (model, dtype, batch, device), rows in groups.items():
        cells = []
        notes = []
        for r in rows:
            if r["status"] != "ok":
                cells.append([r["variant"], r["mode"], r["status"], "", "", "", "", "", ""])
                notes.append(f"  {r['variant']} {r['mode']}: {r['status']}: {r['reason']}")
                continue
            cells.append([
                r["variant"], r["mode"], f"{r['images_per_s']:,.1f}", format_spread(r) or "-", _fmt(r["speedup_vs_reference"], ".2f") + ("x" if r["speedup_vs_reference"] else ""),
                _fmt(r["mfu"] and 100 * r["mfu"], ".1f") + ("%" if r["mfu"] else ""), f"{r['max_rel_err']:.1e}",
                _mem(r["peak_mem_bytes"]), _fmt(r["compile_s"], ".1f"),
            ])  # fmt: skip
        widths = [max(len(c[i]) for c in [list(TABLE_COLUMNS), *cells]) for i in range(len(TABLE_COLUMNS))]
        left = 2  # variant and mode left-aligned, figures right-aligned

        def line(row):
            return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

        title = f"{model}  {dtype}  batch {batch}  {device}"
        labels = sorted({run_label(r) for r in rows if run_label(r)})
        if labels:  # a smoke or toy run says so in its title
            arch = next((_arch_note(r) for r in rows if _arch_note(r)), "")
            title = f"{title}  [{'/'.join(labels).upper()} RUN{': ' + arch if arch else ''}; not a measurement of {model}]"
        blocks.append("\n".join([title, line(TABLE_COLUMNS), *map(line, cells), *notes]))
    lines = trust_warnings([r for r in records if r["kind"] == "model"]) if warnings else []
    if lines:
        blocks.append("\n".join(f"warning: {w}" for w in lines))
    return "\n\n".join(blocks)
