"""Kernel records across devices: the per-op tables and figure of ``fastvit compare``.

A kernel record (``kind == "kernel"``, from ``benchmarks/test_kernels.py`` or
gpu-check's kernels step) times one op at one shape, dtype and pass
(``mode``: "fwd" or "fwd+bwd") for one provider ("triton", "torch",
"sdpa-flash", ...). Rows are keyed by (shape, dtype, pass, provider); each
source (a GPU, or the CPU) is a group of columns: ms per call, TFLOP/s (ops
with a FLOP count) or GB/s (memory-bound ops), the speed-up over PyTorch's op
(:data:`fastvit.bench.KERNEL_REFERENCE`, measured in the same source), the
relative error against the fp32 reference, and the spread of the rounds.

The figure has one row of panels per op and one column per source: the
speed-up of every non-PyTorch provider, so the same kernel can be read
across GPU generations side by side.
"""

from __future__ import annotations

from pathlib import Path

from . import bench


class MissingMatplotlib(RuntimeError):
    pass


def label_note(per_source: dict[str, list[dict]]) -> str | None:
    """A line saying which sources of a table are smoke or toy runs, or None."""
    marked = {}
    for label, records in per_source.items():
        tags = sorted({bench.run_label(r) for r in records if bench.run_label(r)})
        if tags:
            marked[label] = "/".join(tags)
    if not marked:
        return None
    which = ", ".join(f"{lab} ({tag})" for lab, tag in marked.items())
    return f"> **Not a measurement:** {which}: smoke or toy-sized run, the numbers only show that the path works."


KernelRow = tuple  # (shape text, dtype, pass, provider)


def shape_text(shape) -> str:
    if not isinstance(shape, dict) or not shape:
        return "-"
    return ",".join(f"{k}={v}" for k, v in shape.items())


def reference_provider(op: str) -> str:
    return bench.KERNEL_REFERENCE.get(op, "torch")


def kernel_groups(sources) -> dict[str, dict[KernelRow, dict[str, dict]]]:
    """{op: {(shape, dtype, pass, provider): {source label: record}}}: ops and rows in first-seen order,
    PyTorch's provider first within each (shape, dtype, pass)."""
    out: dict[str, dict[KernelRow, dict[str, dict]]] = {}
    for s in sources:
        for r in s.kernels:
            row = (shape_text(r.get("shape")), r["dtype"], r["mode"], r["variant"])
            out.setdefault(r["op"], {}).setdefault(row, {})[s.label] = r
    ordered = {}
    for op, rows in out.items():
        cases = list(dict.fromkeys(row[:3] for row in rows))
        ref = reference_provider(op)
        ordered[op] = {
            row: rows[row]
            for case in cases
            for row in sorted((r for r in rows if r[:3] == case), key=lambda r: (r[3] != ref, list(rows).index(r)))
        }
    return ordered


def _rate(record: dict) -> tuple[str, float | None]:
    if record.get("tflops") is not None:
        return "TFLOP/s", record["tflops"]
    if record.get("gbps") is not None:
        return "GB/s", record["gbps"]
    return "", None


def _cells(record: dict | None, unit: str) -> list[str]:
    if record is None:
        return ["", "", "", "", ""]
    if record["status"] != "ok":
        return [record["status"], "", "", "", ""]
    kind, value = _rate(record)
    rate = "" if value is None else f"{value:,.1f}" + ("" if kind == unit else f" {kind}")
    sp, err = record.get("speedup_vs_reference"), record.get("max_rel_err")
    return [
        f"{record['ms_per_iter']:.4g}",
        rate,
        "" if sp is None else f"{sp:.2f}×",
        "" if err is None else f"{err:.1e}",
        bench.format_spread(record),
    ]


def kernel_markdown(sources) -> list[str]:
    """Markdown lines: one section per op with its table (nothing when no source has kernel records)."""
    grouped = kernel_groups(sources)
    lines: list[str] = []
    for op, rows in grouped.items():
        labels = [s.label for s in sources if any(s.label in per for per in rows.values())]
        units = {_rate(r)[0] for per in rows.values() for r in per.values() if _rate(r)[0]}
        unit = units.pop() if len(units) == 1 else "rate"
        ref = reference_provider(op)
        lines += ["", f"## kernel: {op}", ""]
        note = label_note({lab: [per[lab] for per in rows.values() if lab in per] for lab in labels})
        if note:
            lines += [note, ""]
        columns = ("ms", unit, f"vs {ref}", "max rel err", "spread")
        header = ["shape", "dtype", "pass", "provider"] + [f"{lab} {c}" for lab in labels for c in columns]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|---|---|---|" + "---:|" * (len(header) - 4))
        for (shape, dtype, mode, provider), per in rows.items():
            row = [shape, dtype, mode, provider] + [c for lab in labels for c in _cells(per.get(lab), unit)]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def kernel_figure(sources):
    """A matplotlib Figure: a row of panels per op, a column per source with kernel records;
    horizontal bars of each provider's speed-up over PyTorch's op at each shape, dtype and pass."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grouped = kernel_groups(sources)
    if not grouped:
        raise ValueError("no kernel records to plot")
    columns = [s for s in sources if s.kernels]
    heights = []
    for op, rows in grouped.items():
        heights.append(max(1, sum(1 for row in rows if row[3] != reference_provider(op))))
    fig = Figure(figsize=(4.8 * len(columns) + 2.5, sum(0.28 * h + 1.1 for h in heights)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(grouped), len(columns), squeeze=False, gridspec_kw={"height_ratios": heights})
    fig.suptitle("kernels: speed-up over PyTorch's op, per device (higher is better)")
    for i, (op, rows) in enumerate(grouped.items()):
        ref = reference_provider(op)
        shown = [row for row in rows if row[3] != ref]
        names = [f"{p} · {shape} · {dtype} · {mode}" for shape, dtype, mode, p in shown]
        for j, source in enumerate(columns):
            ax = axes[i][j]
            values = []
            for row in shown:
                r = rows[row].get(source.label)
                ok = r is not None and r["status"] == "ok" and r.get("speedup_vs_reference") is not None
                values.append(r["speedup_vs_reference"] if ok else 0.0)
            ys = list(range(len(shown)))
            bars = ax.barh(ys, values, color=f"C{j % 10}")
            ax.bar_label(bars, labels=[f"{v:.2f}×" if v else "n/a" for v in values], fontsize=7, padding=2)
            ax.axvline(1.0, color="0.4", linewidth=0.8, linestyle="--")
            ax.set_yticks(ys, names if j == 0 else [""] * len(ys), fontsize=7)
            ax.invert_yaxis()
            ax.margins(x=0.2)
            tags = sorted({bench.run_label(r) for r in source.kernels if bench.run_label(r)})
            tag = f" [{'/'.join(tags).upper()}: not a measurement]" if tags else ""
            ax.set_title(f"{op} on {source.label}{tag}: × {ref}", fontsize=9)
    return fig


def render_kernel_png(sources, path: str | Path) -> Path:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise MissingMatplotlib(
            "the PNG chart needs matplotlib: pip install matplotlib (or pip install 'fastvit[plots]')"
        ) from e
    fig = kernel_figure(sources)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def kernel_png_path(png: str | Path, has_models: bool) -> Path:
    """Where the kernel figure goes: ``--out-png`` itself, or ``<stem>-kernels.png`` beside the model chart."""
    png = Path(png)
    return png.with_name(f"{png.stem}-kernels{png.suffix or '.png'}") if has_models else png


__all__ = ["MissingMatplotlib", "kernel_figure", "kernel_groups", "kernel_markdown", "kernel_png_path", "label_note",
           "render_kernel_png", "shape_text"]  # fmt: skip
