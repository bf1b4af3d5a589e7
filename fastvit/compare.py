"""``fastvit compare FILE... [--out-md PATH] [--out-png PATH]``: a report generated from result files.

Reads ``fastvit bench`` result files (and pytest-benchmark ``--benchmark-json``
files of the ``benchmarks/`` suite, whose ``extra_info`` holds the same
records) and compares the model-throughput records variant by variant across
the devices they came from: one table per (model, dtype, batch, mode), a row
per variant, and for each source its images/s, its speed-up over the
``reference`` variant measured in the same source, and its MFU. Speed-ups are
recomputed from images/s here, never taken from the files.

Each source is labelled by its device ("H100 80GB HBM3", "cpu"); sources that
share a device are told apart by their file name.

The PNG chart needs matplotlib, imported only when a chart is asked for.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from . import bench


@dataclass
class Source:
    label: str
    path: Path
    records: list[dict]  # model records, with speed-ups recomputed

    @property
    def env(self) -> dict:
        return {k: self.records[0].get(k) for k in bench.ENV_FIELDS} if self.records else {}


class MissingMatplotlib(RuntimeError):
    pass


def load_records(path: str | Path) -> list[dict]:
    """Model records from a ``fastvit bench`` file or a pytest-benchmark JSON file.

    ``ValueError`` naming the file for anything that is not one: unreadable, not
    JSON, or JSON whose records lack fields or hold values of the wrong kind.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from e
    except RecursionError as e:
        raise ValueError(f"{path}: JSON nested too deeply to be a result file") from e
    if isinstance(doc, dict) and str(doc.get("format", "")).startswith("fastvit-bench/"):
        records = doc.get("records", [])
        where = "records"
    elif isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list):
        bad = [i for i, b in enumerate(doc["benchmarks"]) if not isinstance(b, dict)
               or not isinstance(b.get("extra_info") or {}, dict)]
        if bad:
            raise ValueError(f"{path}: benchmarks[{bad[0]}] is not an object with an extra_info object")
        records = [b.get("extra_info") or {} for b in doc["benchmarks"]]
        where = "benchmarks[].extra_info"
    else:
        raise ValueError(f"{path}: neither a fastvit bench result file nor a pytest-benchmark JSON file")
    if not isinstance(records, list):
        raise ValueError(f"{path}: 'records' must be a list of objects, got {type(records).__name__}")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: {where} entry {i} must be an object, got {_json_type(r)}")
    model_records = [copy.deepcopy(r) for r in records if r.get("kind") == "model"]
    for i, r in enumerate(model_records):
        problem = record_problem(r)
        if problem:
            raise ValueError(f"{path}: model record {i} ({r.get('name') or r.get('variant')!r}): {problem}")
    return model_records


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# field -> (what it must be, test); the fields a comparison reads from every model record
_RECORD_RULES = {
    "model": ("a string", lambda v: isinstance(v, str) and v != ""),
    "variant": ("a string", lambda v: isinstance(v, str) and v != ""),
    "mode": ("a string", lambda v: isinstance(v, str) and v != ""),
    "dtype": ("a string", lambda v: isinstance(v, str) and v != ""),
    "status": ("a string", lambda v: isinstance(v, str) and v != ""),
    "batch": ("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
    "config": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "device": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "timestamp": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "cpu_model": ("a string or null", lambda v: v is None or isinstance(v, str)),
}
_OK_RULES = {  # records that ran
    "ms_per_iter": ("a finite number > 0", lambda v: _is_number(v) and v > 0),
    "images_per_s": ("a finite number > 0", lambda v: _is_number(v) and v > 0),
    "mfu": ("a finite number >= 0 or null", lambda v: v is None or (_is_number(v) and v >= 0)),
}


def record_problem(record: dict) -> str | None:
    """What makes a model record unusable for a comparison, or None."""
    required = [k for k in ("model", "variant", "mode", "dtype", "status", "batch") if k not in record]
    if required:
        return f"missing field(s) {', '.join(required)}"
    rules = dict(_RECORD_RULES, **(_OK_RULES if record["status"] == "ok" else {}))
    for field, (expected, ok) in rules.items():
        value = record.get(field)
        if not ok(value):
            return f"{field} must be {expected}, got {json.dumps(value)[:60]}"
    return None


def _short(device: str) -> str:
    return device.removeprefix("NVIDIA ").strip() or device


def load_sources(paths) -> list[Source]:
    sources = []
    for p in paths:
        records = load_records(p)
        for r in records:  # fill any field an older file lacks
            for key in bench.RECORD_FIELDS:
                r.setdefault(key, None)
        bench.add_speedups(records)
        device = records[0]["device"] if records else "no records"
        sources.append(Source(_short(str(device)), Path(p), records))
    counts: dict[str, int] = {}
    for s in sources:
        counts[s.label] = counts.get(s.label, 0) + 1
    for s in sources:
        if counts[s.label] > 1:
            s.label = f"{s.label} [{s.path.stem}]"
    seen: dict[str, int] = {}
    for s in sources:  # the same file twice: number them
        seen[s.label] = seen.get(s.label, 0) + 1
        if seen[s.label] > 1:
            s.label = f"{s.label} #{seen[s.label]}"
    return sources


GroupKey = tuple  # (model, architecture note, dtype, batch, mode)
_ARCH_FIELDS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes")


def architecture_note(record: dict) -> str:
    """How the record's architecture differs from its preset ("depth=2, img_size=32x32"), or ""."""
    from .presets import get_config

    config = record.get("config") or {}
    try:
        preset = get_config(record["model"])
    except (ValueError, TypeError):
        return ""
    diffs = []
    for field in _ARCH_FIELDS:
        if field not in config:
            continue
        ours = list(preset.img_size) if field == "img_size" else getattr(preset, field)
        if config[field] != ours:
            value = config[field]
            shown = "x".join(map(str, value)) if field == "img_size" and isinstance(value, list) else value
            diffs.append(f"{field}={shown}")
    return ", ".join(diffs)


def _variant_order(name: str) -> tuple:
    order = bench.variant_names()
    return (order.index(name), name) if name in order else (len(order), name)


def groups(sources: list[Source]) -> dict[GroupKey, dict[str, dict[str, dict]]]:
    """{(model, architecture note, dtype, batch, mode): {variant: {source label: record}}}, in first-seen order."""
    out: dict[GroupKey, dict[str, dict[str, dict]]] = {}
    for s in sources:
        for r in s.records:
            key = (r["model"], architecture_note(r), r["dtype"], r["batch"], r["mode"])
            out.setdefault(key, {}).setdefault(r["variant"], {})[s.label] = r
    return {k: dict(sorted(v.items(), key=lambda kv: _variant_order(kv[0]))) for k, v in out.items()}


def _cells(record: dict | None) -> list[str]:
    if record is None:
        return ["", "", ""]
    if record["status"] != "ok":
        return [record["status"], "", ""]
    sp, mfu = record["speedup_vs_reference"], record["mfu"]
    return [
        f"{record['images_per_s']:,.1f}",
        "" if sp is None else f"{sp:.2f}×",
        "" if mfu is None else f"{100 * mfu:.1f}%",
    ]


def render_markdown(sources: list[Source]) -> str:
    lines = ["# fastvit benchmark comparison", ""]
    lines += ["| source | device | file | torch | triton | fastvit | CUDA | driver | date |", "|---|---|---|---|---|---|---|---|---|"]
    for s in sources:
        e, first = s.env, (s.records[0] if s.records else {})
        date = (first.get("timestamp") or "")[:10]
        device = e.get("device") or ""
        if device == "cpu" and e.get("cpu_model"):  # the CPU's name and how many threads ran
            device = f"cpu: {e['cpu_model']}, {e.get('num_threads')} threads"
        lines.append(
            f"| {s.label} | {device} | {s.path.name} | {e.get('torch') or ''} | {e.get('triton') or ''} | "
            f"{e.get('fastvit') or ''} | {e.get('cuda') or ''} | {e.get('driver') or ''} | {date} |"
        )
    notes = []
    for (model, note, dtype, batch, mode), variants in groups(sources).items():
        labels = [s.label for s in sources if any(s.label in per for per in variants.values())]
        model = f"{model} ({note})" if note else model
        lines += ["", f"## {model} · {dtype} · batch {batch} · {mode}", ""]
        header = ["variant"] + [f"{lab} {col}" for lab in labels for col in ("images/s", "vs reference", "MFU")]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|" + "---:|" * (len(header) - 1))
        for variant, per in variants.items():
            row = [variant] + [c for lab in labels for c in _cells(per.get(lab))]
            lines.append("| " + " | ".join(row) + " |")
            for lab in labels:
                r = per.get(lab)
                if r is not None and r["status"] != "ok":
                    notes.append(f"- {lab}: {model} {dtype} b{batch} {variant} {mode}: {r['status']}: {r['reason']}")
    if notes:
        lines += ["", "## Skipped or failed", "", *notes]
    return "\n".join(lines) + "\n"


def render_png(sources: list[Source], path: str | Path) -> Path:
    """Grouped bar chart: per (model, dtype, batch, mode), images/s and speed-up over the reference, a bar per source."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingMatplotlib(
            "the PNG chart needs matplotlib: pip install matplotlib (or pip install 'fastvit[plots]')"
        ) from e
    grouped = groups(sources)
    if not grouped:
        raise ValueError("no model records to plot")
    labels = [s.label for s in sources]
    fig = Figure(figsize=(13, 3.4 * len(grouped)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(grouped), 2, squeeze=False)
    width = 0.8 / max(len(labels), 1)
    for row, ((model, note, dtype, batch, mode), variants) in enumerate(grouped.items()):
        model = f"{model} ({note})" if note else model
        names = list(variants)
        for col, (field, ylabel) in enumerate((("images_per_s", "images/s"), ("speedup_vs_reference", "× reference"))):
            ax = axes[row][col]
            for i, lab in enumerate(labels):
                xs, ys = [], []
                for j, v in enumerate(names):
                    r = variants[v].get(lab)
                    x = j - 0.4 + width * (i + 0.5)
                    if r is not None and r["status"] == "ok" and r[field] is not None:
                        xs.append(x)
                        ys.append(r[field])
                    elif r is not None:
                        ax.text(x, 0, f" {r['status']}", rotation=90, ha="center", va="bottom", fontsize=7, color="0.45")
                if not xs:
                    continue
                bars = ax.bar(xs, ys, width, label=lab, color=f"C{i % 10}")
                ax.bar_label(bars, fmt="%.2f" if col else "%.3g", fontsize=7, padding=1)
            if col:
                ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle="--")
            ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
            ax.set_ylabel(ylabel)
            ax.set_title(f"{model} {dtype} b{batch} {mode}: {ylabel}", fontsize=9)
            ax.margins(y=0.15)
        axes[row][0].legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare",
        help="Markdown table and PNG chart comparing variants across result files (GPUs)",
        description=(
            "Compare fastvit bench result files (or pytest-benchmark JSON files of benchmarks/): per model, dtype, "
            "batch and mode, each variant's images/s, speed-up over the reference variant on the same device, and MFU."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="result files (fastvit bench --out, or --benchmark-json)")
    p.add_argument("--out-md", metavar="PATH", help="write the Markdown here (default: print it)")
    p.add_argument("--out-png", metavar="PATH", help="write a bar chart here (needs matplotlib)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 for unreadable files or a chart that cannot be drawn (the Markdown is still written)."""
    try:
        sources = load_sources(args.files)
    except ValueError as e:
        print(f"fastvit compare: error: {e}", file=sys.stderr)
        return 2
    if not any(s.records for s in sources):
        print("fastvit compare: error: no model records in the given files", file=sys.stderr)
        return 2
    for option, value in (("--out-md", args.out_md), ("--out-png", args.out_png)):
        problem = value and bench.unwritable(Path(value))
        if problem:  # before anything is written
            print(f"fastvit compare: error: {option} {value}: {problem}", file=sys.stderr)
            return 2
    markdown = render_markdown(sources)
    if args.out_md:
        out = Path(args.out_md)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(markdown)
        except OSError as e:
            print(f"fastvit compare: error: --out-md {out}: cannot write ({e.strerror or e})", file=sys.stderr)
            return 2
        print(f"wrote {out}")
    else:
        print(markdown, end="")
    if args.out_png:
        try:
            print(f"wrote {render_png(sources, args.out_png)}")
        except (MissingMatplotlib, ValueError) as e:
            print(f"fastvit compare: error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"fastvit compare: error: --out-png {args.out_png}: cannot write ({e.strerror or e})", file=sys.stderr)
            return 2
    return 0

