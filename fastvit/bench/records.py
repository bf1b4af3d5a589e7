"""Records, speed-ups, result files and the table.

Every record, from the CLI or from pytest (``benchmark.extra_info``), has the
same keys (:data:`RECORD_FIELDS`); a figure that does not apply is ``None``.
``dispatch`` lists the ``auto`` choices a model case ran (:func:`dispatch_summary`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
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
    "images_per_s", "ms_per_iter", "round_ms", "rounds", "iters_per_round", "warmup_iters",
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


TABLE_COLUMNS = ("variant", "mode", "images/s", "vs ref", "MFU", "max err", "peak mem", "compile s")


def format_table(records: list[dict]) -> str:
    """Plain-text table of model records, one block per (model, dtype, batch, device)."""
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
                cells.append([r["variant"], r["mode"], r["status"], "", "", "", "", ""])
                notes.append(f"  {r['variant']} {r['mode']}: {r['status']}: {r['reason']}")
                continue
            cells.append([
                r["variant"], r["mode"], f"{r['images_per_s']:,.1f}", _fmt(r["speedup_vs_reference"], ".2f") + ("x" if r["speedup_vs_reference"] else ""),
                _fmt(r["mfu"] and 100 * r["mfu"], ".1f") + ("%" if r["mfu"] else ""), f"{r['max_rel_err']:.1e}",
                _mem(r["peak_mem_bytes"]), _fmt(r["compile_s"], ".1f"),
            ])  # fmt: skip
        widths = [max(len(c[i]) for c in [list(TABLE_COLUMNS), *cells]) for i in range(len(TABLE_COLUMNS))]
        left = 2  # variant and mode left-aligned, figures right-aligned

        def line(row):
            return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

        title = f"{model}  {dtype}  batch {batch}  {device}"
        blocks.append("\n".join([title, line(TABLE_COLUMNS), *map(line, cells), *notes]))
    return "\n\n".join(blocks)
