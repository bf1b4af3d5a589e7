"""``fastvit compare FILE... [--out-md PATH] [--out-png PATH]``: a report generated from result files.

Reads ``fastvit bench`` result files, gpu-check's files, pytest-benchmark
``--benchmark-json`` files of the ``benchmarks/`` suite (whose ``extra_info``
holds the same records) and JSON-lines files of records (:func:`read_records`).
Model-throughput records are compared variant by variant across the devices
they came from: one table per (model, dtype, batch, mode), a row per variant,
and for each source its images/s, its speed-up over the ``reference`` variant
measured in the same source, its MFU and the spread of its rounds. Kernel
records get one table per op (:mod:`fastvit.compare_kernels`): a row per
shape, dtype, pass and provider, and for each source its ms, TFLOP/s or GB/s,
speed-up over PyTorch's op, error and spread. Speed-ups are recomputed from
the times here, never taken from the files. Records of other kinds (gpu-check's
test and parity results) are counted and named as not shown.

Each source is labelled by its device ("H100 80GB HBM3", "cpu"); sources that
share a device are told apart by their file name.

The PNG chart needs matplotlib, imported only when a chart is asked for.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import bench
from .result_files import SHOWN_KINDS, kernel_problem, load_records, read_records, record_problem  # noqa: F401
from .compare_kernels import MissingMatplotlib, kernel_markdown, kernel_png_path, label_note, render_kernel_png


@dataclass
class Source:
    label: str
    path: Path
    records: list[dict]  # model records, with speed-ups recomputed
    kernels: list[dict] = field(default_factory=list)  # kernel records, with speed-ups recomputed
    others: dict[str, int] = field(default_factory=dict)  # kind -> count of the records not compared

    @property
    def env(self) -> dict:
        first = (self.records or self.kernels or [{}])[0]
        return {k: first.get(k) for k in bench.ENV_FIELDS} if first else {}

    def describe(self) -> str:
        """What the file holds: "3 model, 12 kernel" (+ the kinds not compared)."""
        counts = [(len(self.records), "model"), (len(self.kernels), "kernel")] + [(n, k) for k, n in self.others.items()]
        return ", ".join(f"{n} {k}" for n, k in counts if n) or "no records"


def _short(device: str) -> str:
    return device.removeprefix("NVIDIA ").strip() or device


def load_sources(paths) -> list[Source]:
    sources = []
    for p in paths:
        everything = read_records(p)
        records = [r for r in everything if r.get("kind") == "model"]
        kernels = [r for r in everything if r.get("kind") == "kernel"]
        others: dict[str, int] = {}
        for r in everything:
            if r.get("kind") not in SHOWN_KINDS:
                kind = str(r.get("kind") or "untyped")
                others[kind] = others.get(kind, 0) + 1
        for r in records + kernels:  # fill any field an older file lacks
            for key in bench.RECORD_FIELDS:
                r.setdefault(key, None)
        bench.add_speedups(records)
        bench.add_speedups(kernels)
        device = next((r["device"] for r in everything if isinstance(r.get("device"), str) and r["device"]), None)
        sources.append(Source(_short(device) if device else Path(p).stem, Path(p), records, kernels, others))
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


def not_shown(sources: list[Source]) -> list[str]:
    """One line per file holding records that compare does not show (e.g. gpu-check's test results)."""
    lines = []
    for s in sources:
        if s.others:
            kinds = ", ".join(f"{n} {k}" for k, n in s.others.items())
            shown = "" if (s.records or s.kernels) else "; nothing in it is compared"
            lines.append(f"{s.path.name}: {kinds} record(s) not shown (compare shows model and kernel records){shown}")
    return lines


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
        return ["", "", "", ""]
    if record["status"] != "ok":
        return [record["status"], "", "", ""]
    sp, mfu = record["speedup_vs_reference"], record["mfu"]
    return [
        f"{record['images_per_s']:,.1f}",
        "" if sp is None else f"{sp:.2f}×",
        "" if mfu is None else f"{100 * mfu:.1f}%",
        bench.format_spread(record),
    ]


def trust_section(sources: list[Source]) -> list[str]:
    """Markdown lines: per source, the reasons to doubt its numbers (noise, load, smoke/toy)."""
    lines = []
    for s in sources:
        for warning in bench.trust_warnings(s.records + s.kernels):
            lines.append(f"- {s.label}: {warning}")
    if not lines:
        return []
    return ["", "## How much to trust these numbers", "",
            f"Spread is (max - min) / median over a measurement's rounds; `!` marks more than {bench.SPREAD_WARN:.0%}.",
            "", *lines]  # fmt: skip


def render_markdown(sources: list[Source]) -> str:
    lines = ["# fastvit benchmark comparison", ""]
    lines += ["| source | device | file | records | torch | triton | fastvit | CUDA | driver | date |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in sources:
        e, first = s.env, (s.records[0] if s.records else {})
        date = (first.get("timestamp") or "")[:10]
        device = e.get("device") or ""
        if device == "cpu" and e.get("cpu_model"):  # the CPU's name and how many threads ran
            device = f"cpu: {e['cpu_model']}, {e.get('num_threads')} threads"
        lines.append(
            f"| {s.label} | {device} | {s.path.name} | {s.describe()} | {e.get('torch') or ''} | {e.get('triton') or ''} | "
            f"{e.get('fastvit') or ''} | {e.get('cuda') or ''} | {e.get('driver') or ''} | {date} |"
        )
    notes = []
    for (model, note, dtype, batch, mode), variants in groups(sources).items():
        labels = [s.label for s in sources if any(s.label in per for per in variants.values())]
        model = f"{model} ({note})" if note else model
        lines += ["", f"## {model} · {dtype} · batch {batch} · {mode}", ""]
        note = label_note({lab: [per[lab] for per in variants.values() if lab in per] for lab in labels})
        if note:
            lines += [note, ""]
        header = ["variant"] + [f"{lab} {col}" for lab in labels for col in ("images/s", "vs reference", "MFU", "spread")]
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
    lines += kernel_markdown(sources)
    lines += trust_section(sources)
    hidden = not_shown(sources)
    if hidden:
        lines += ["", "## Records not shown", "", *(f"- {h}" for h in hidden)]
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
    labels = [s.label for s in sources if s.records]
    fig = Figure(figsize=(13, 3.4 * len(grouped)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(grouped), 2, squeeze=False)
    width = 0.8 / max(len(labels), 1)
    for row, ((model, note, dtype, batch, mode), variants) in enumerate(grouped.items()):
        model = f"{model} ({note})" if note else model
        tags = sorted({bench.run_label(r) for per in variants.values() for r in per.values() if bench.run_label(r)})
        if tags:
            model = f"{model} [{'/'.join(tags).upper()} RUN: not a measurement]"
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
        help="Markdown tables and PNG charts comparing models and kernels across result files (GPUs)",
        description=(
            "Compare fastvit bench result files, gpu-check files and pytest-benchmark JSON files of benchmarks/ "
            "(whole-file JSON or one record per line): per model, dtype, batch and mode, each variant's images/s, "
            "speed-up over the reference variant on the same device, MFU and spread; per kernel op, each shape, dtype, "
            "pass and provider's ms, TFLOP/s or GB/s, speed-up over PyTorch's op, error and spread; one column per device."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="result files (fastvit bench --out, gpu-check, --benchmark-json)")
    p.add_argument("--out-md", metavar="PATH", help="write the Markdown here (default: print it)")
    p.add_argument("--out-png", metavar="PATH",
                   help="write a bar chart here (needs matplotlib); kernel records: a per-op figure, a column per device, "
                        "as PATH or, beside a model chart, as <stem>-kernels.png")  # fmt: skip
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """0 on success; 2 for unreadable files, files with nothing to compare, or a chart that cannot be drawn
    (the Markdown is still written)."""
    try:
        sources = load_sources(args.files)
    except ValueError as e:
        print(f"fastvit compare: error: {e}", file=sys.stderr)
        return 2
    if not any(s.records or s.kernels for s in sources):
        held = "; ".join(f"{s.path.name}: {s.describe()}" for s in sources)
        print(f"fastvit compare: error: no model or kernel records in the given files ({held})", file=sys.stderr)
        return 2
    for line in not_shown(sources):
        print(f"fastvit compare: note: {line}", file=sys.stderr)
    for s in sources:
        for warning in bench.trust_warnings(s.records + s.kernels):
            print(f"fastvit compare: warning: {s.label}: {warning}", file=sys.stderr)
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
        has_models = any(s.records for s in sources)
        charts = [(render_png, args.out_png)] if has_models else []
        if any(s.kernels for s in sources):
            charts.append((render_kernel_png, kernel_png_path(args.out_png, has_models)))
        for render, where in charts:
            try:
                print(f"wrote {render(sources, where)}")
            except (MissingMatplotlib, ValueError) as e:
                print(f"fastvit compare: error: {e}", file=sys.stderr)
                return 2
            except OSError as e:
                print(f"fastvit compare: error: --out-png {where}: cannot write ({e.strerror or e})", file=sys.stderr)
                return 2
    return 0
