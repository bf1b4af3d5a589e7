"""fastvit compare on result files produced here by real runs of the bench core on the CPU
(a 2-block ViT-Ti at 32x32, so the runs take seconds)."""

from __future__ import annotations

import json
import sys

import pytest

from fastvit import bench, cli, compare, compare_kernels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = (("img_size", 32), ("depth", 2))
MODEL = "vit_tiny_patch16_224 (img_size=32x32, depth=2)"


def _bench(path, variants, modes):
    """What `fastvit bench` does, on a model small enough for a unit test."""
    ctx = bench.ModelContext("vit_tiny_patch16_224", "fp32", 1, "cpu", overrides=TINY)
    cases = [bench.ModelCase("vit_tiny_patch16_224", v, m, "fp32", 1, TINY) for m in modes for v in variants]
    records = [bench.run_model_case(case, ctx, rounds=3, warmup=1) for case in cases]
    assert [r["status"] for r in records if r["variant"] != "fused"] == ["ok"] * (len(records) - ("fused" in variants))
    bench.write_results(path, bench.add_speedups(records), ["test_compare"])


@pytest.fixture(scope="module")
def result_files(tmp_path_factory):
    """Two runs on this CPU: run-a times reference, sdpa and fused (skipped here) in inference;
    run-b times reference and sdpa in inference and training."""
    folder = tmp_path_factory.mktemp("results")
    a, b = folder / "cpu-run-a.json", folder / "cpu-run-b.json"
    _bench(a, ("reference", "sdpa", "fused"), ("inference",))
    _bench(b, ("reference", "sdpa"), ("inference", "training"))
    return a, b


def _records(path):
    return {(r["mode"], r["variant"]): r for r in json.loads(path.read_text())["records"]}


def _tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Section title -> rows of its table, each a {column header: cell} dict."""
    tables = {}
    for section in markdown.split("\n## ")[1:]:
        title, _, body = section.partition("\n")
        rows = [line.strip("|").split("|") for line in body.splitlines() if line.startswith("|")]
        if rows:
            header = [c.strip() for c in rows[0]]
            tables[title.strip()] = [dict(zip(header, (c.strip() for c in row))) for row in rows[2:]]
    return tables


def test_markdown_table(result_files):
    a, b = result_files
    markdown = compare.render_markdown(compare.load_sources([a, b]))
    env = json.loads(a.read_text())["env"]
    device = f"cpu: {env['cpu_model']}, {env['num_threads']} threads"
    assert f"| cpu [cpu-run-a] | {device} | cpu-run-a.json |" in markdown
    tables = _tables(markdown)
    inference = tables[f"{MODEL} · fp32 · batch 1 · inference"]
    training = tables[f"{MODEL} · fp32 · batch 1 · training"]
    assert [row["variant"] for row in inference] == ["reference", "sdpa", "fused"]
    assert [row["variant"] for row in training] == ["reference", "sdpa"]
    assert "cpu [cpu-run-a] images/s" not in training[0]  # run-a has no training records
    for label, path in (("cpu [cpu-run-a]", a), ("cpu [cpu-run-b]", b)):
        records = _records(path)
        for mode, rows in (("inference", inference), ("training", training)):
            if (mode, "reference") not in records:
                continue
            ref = records[(mode, "reference")]["images_per_s"]
            for row in rows:
                record = records.get((mode, row["variant"]))
                if record is None:
                    assert row[f"{label} images/s"] == ""
                    continue
                if record["status"] != "ok":
                    assert row[f"{label} images/s"] == record["status"]
                    continue
                assert row[f"{label} images/s"] == f"{record['images_per_s']:,.1f}"
                speedup = float(row[f"{label} vs reference"].rstrip("×"))
                assert speedup == pytest.approx(record["images_per_s"] / ref, abs=0.005 + 1e-9)
                assert row[f"{label} MFU"] == ""  # no peak on a CPU
    assert inference[0]["cpu [cpu-run-a] vs reference"] == "1.00×"
    assert inference[2]["cpu [cpu-run-a] images/s"] == "skipped"
    assert f"- cpu [cpu-run-a]: {MODEL} fp32 b1 fused inference: skipped: Triton kernels need a CUDA GPU" in markdown


def test_png_chart(result_files, tmp_path):
    import matplotlib.image

    path = compare.render_png(compare.load_sources(result_files), tmp_path / "chart" / "compare.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 800


def test_cli_writes_both(result_files, tmp_path, capsys):
    md, png = tmp_path / "out" / "compare.md", tmp_path / "out" / "compare.png"
    assert cli.main(["compare", *map(str, result_files), "--out-md", str(md), "--out-png", str(png)]) == 0
    assert md.read_text().startswith("# fastvit benchmark comparison")
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert f"wrote {md}" in capsys.readouterr().out


def test_cli_prints_markdown_without_out_md(result_files, capsys):
    assert cli.main(["compare", str(result_files[0])]) == 0
    out = capsys.readouterr().out
    assert f"## {MODEL} · fp32 · batch 1 · inference" in out
    assert "| cpu images/s | cpu vs reference | cpu MFU |" in out  # one source: labelled by its device alone


def test_missing_matplotlib_is_a_clear_error(result_files, tmp_path, monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    md = tmp_path / "compare.md"
    assert cli.main(["compare", *map(str, result_files), "--out-md", str(md), "--out-png", str(tmp_path / "c.png")]) == 2
    assert "needs matplotlib: pip install matplotlib" in capsys.readouterr().err
    assert md.exists()  # the table is still written
    assert not (tmp_path / "c.png").exists()


def test_unreadable_files(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    assert cli.main(["compare", str(other)]) == 2
    assert "neither a fastvit bench result file nor a pytest-benchmark JSON file" in capsys.readouterr().err
    assert cli.main(["compare", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


# -- kernel records across devices --------------------------------------------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
LN_SHAPE = {"rows": 197, "width": 768}  # the kernel suite's smoke shape for layer_norm


@pytest.fixture(scope="module")
def kernel_files(tmp_path_factory):
    """Two kernel result files from this CPU, as two devices would write them:
    - ``pytest-ln.json``: a real pytest-benchmark run of benchmarks/test_kernels.py (smoke sizes,
      the Triton LayerNorm through the interpreter against torch's), whole-file JSON;
    - ``stream-ln.jsonl``: records of the same op made in-process by the same bench core
      (``bench.run_kernel_case``), streamed one JSON object per line after a header line."""
    import os
    import subprocess

    import torch
    import torch.nn.functional as F

    folder = tmp_path_factory.mktemp("kernels")
    a = folder / "pytest-ln.json"
    env = dict(os.environ, FASTVIT_KERNEL_BENCH_SMOKE="1", TRITON_INTERPRET="1", FASTVIT_AUTOTUNE="0")
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks" / "test_kernels.py"), "--benchmark-only",
           f"--benchmark-json={a}", "-k", "test_layer_norm and layer_norm-N768-fwd- and not add_ and not compile",
           "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    from fastvit.kernels import layer_norm

    b = folder / "stream-ln.jsonl"
    x = [(torch.randn(197, 768, dtype=torch.bfloat16), torch.ones(768, dtype=torch.bfloat16),
          torch.zeros(768, dtype=torch.bfloat16)) for _ in range(2)]  # fmt: skip
    ref = F.layer_norm(x[0][0].float(), (768,), eps=1e-6)
    steps = {"torch": lambda x, w, bias: F.layer_norm(x, (768,), w, bias, 1e-6), "triton": lambda x, w, bias: layer_norm(x, w, bias, 1e-6)}
    lines = [json.dumps({"format": "fastvit-bench/1", "stream": "kernels"})]  # a header line, skipped
    for provider, step in steps.items():
        record = bench.run_kernel_case(
            op="layer_norm", provider=provider, mode="fwd", dtype="bf16", shape=LN_SHAPE, step=step, inputs=x,
            device="cpu", rounds=3, warmup=1, bytes_per_iter=2 * 197 * 768 * 2, check=lambda out: bench.parity(out, ref),
            label="smoke",
        )
        lines.append(json.dumps(record))
    b.write_text("\n".join(lines) + "\n")
    return a, b


def test_kernel_files_are_read_in_both_layouts(kernel_files):
    for path in kernel_files:
        records = compare.read_records(path)
        assert sorted((r["op"], r["variant"], r["mode"]) for r in records) == [("layer_norm", "torch", "fwd"), ("layer_norm", "triton", "fwd")]
        assert all(r["kind"] == "kernel" and r["shape"] == LN_SHAPE and r["label"] == "smoke" for r in records)
        assert compare.load_records(path) == []  # no model records


def test_kernel_tables_one_column_group_per_device(kernel_files):
    a, b = kernel_files
    sources = compare.load_sources([a, b])
    assert [s.label for s in sources] == ["cpu [pytest-ln]", "cpu [stream-ln]"]
    markdown = compare.render_markdown(sources)
    assert "| cpu [pytest-ln] | cpu: " in markdown and "| 2 kernel |" in markdown  # what each file holds
    table = _tables(markdown)["kernel: layer_norm"]
    assert [(row["shape"], row["dtype"], row["pass"], row["provider"]) for row in table] == [
        ("rows=197,width=768", "bf16", "fwd", "torch"), ("rows=197,width=768", "bf16", "fwd", "triton")]
    assert "> **Not a measurement:** cpu [pytest-ln] (smoke), cpu [stream-ln] (smoke)" in markdown
    for label, path in (("cpu [pytest-ln]", a), ("cpu [stream-ln]", b)):
        records = {r["variant"]: r for r in compare.read_records(path)}
        for row in table:
            r = records[row["provider"]]
            assert row[f"{label} ms"] == f"{r['ms_per_iter']:.4g}"
            assert float(row[f"{label} GB/s"].replace(",", "")) == pytest.approx(r["gbps"], rel=1e-3, abs=0.06)
            assert row[f"{label} max rel err"] == f"{r['max_rel_err']:.1e}"
            spread = bench.spread(r)  # None for the suite's single smoke round
            assert row[f"{label} spread"].rstrip("%!") == ("" if spread is None else f"{100 * spread:.0f}")
            assert (spread is None) == (len(r["round_ms"]) == 1)
            speedup = records["torch"]["ms_per_iter"] / r["ms_per_iter"]  # recomputed, not read from the file
            assert float(row[f"{label} vs torch"].rstrip("×")) == pytest.approx(speedup, abs=0.005 + 1e-9)
        assert table[0][f"{label} vs torch"] == "1.00×"


def test_kernel_figure_has_a_column_per_device(kernel_files, tmp_path, capsys):
    import matplotlib.image

    sources = compare.load_sources(kernel_files)
    fig = compare_kernels.kernel_figure(sources)
    axes = fig.axes
    assert len(axes) == 2  # one op x two devices
    assert [ax.get_title().startswith(f"layer_norm on {label} [SMOKE") for ax, label in zip(axes, ["cpu [pytest-ln]", "cpu [stream-ln]"])] == [True, True]
    assert all("SMOKE" in ax.get_title() for ax in axes)
    for ax, source in zip(axes, sources):
        records = {r["variant"]: r for r in source.kernels}
        (bar,) = ax.patches  # triton's speed-up over torch's LayerNorm
        assert bar.get_width() == pytest.approx(records["torch"]["ms_per_iter"] / records["triton"]["ms_per_iter"])
    png = tmp_path / "kernels.png"
    assert cli.main(["compare", *map(str, kernel_files), "--out-png", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG_SIGNATURE and matplotlib.image.imread(png).shape[1] > 800
    assert f"wrote {png}" in capsys.readouterr().out


def test_models_and_kernels_together(result_files, kernel_files, tmp_path, capsys):
    png = tmp_path / "c.png"
    assert cli.main(["compare", str(result_files[0]), str(kernel_files[1]), "--out-png", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"## {MODEL} · fp32 · batch 1 · inference" in out and "## kernel: layer_norm" in out
    assert png.exists() and (tmp_path / "c-kernels.png").exists()


def test_records_of_other_kinds_are_named_not_called_empty(kernel_files, tmp_path, capsys):
    from fastvit.gpucheck.files import write_doc

    tests = write_doc(tmp_path / "cpu-tests.json", [bench.make_record(name=f"t{i}", kind="test", status="passed") for i in range(3)])
    assert cli.main(["compare", str(tests)]) == 2
    err = capsys.readouterr().err
    assert "no model or kernel records in the given files (cpu-tests.json: 3 test)" in err and "no records" not in err
    assert cli.main(["compare", str(tests), str(kernel_files[0])]) == 0
    captured = capsys.readouterr()
    assert "cpu-tests.json: 3 test record(s) not shown (compare shows model and kernel records)" in captured.err
    assert "## Records not shown" in captured.out and "| 3 test |" in captured.out


def test_json_lines_errors_name_the_line(tmp_path, capsys):
    good = json.dumps(bench.make_record(name="k", kind="kernel", status="ok", op="layer_norm", variant="torch", mode="fwd",
                                        dtype="bf16", shape=LN_SHAPE, ms_per_iter=1.0))  # fmt: skip
    cases = {
        "broken.jsonl": (good + "\n{not json\n", "not JSON lines \\(line 2"),
        "scalar.jsonl": (good + "\n3\n", "line 2 is not a JSON object"),
        "headers.jsonl": ('{"a": 1}\n{"b": 2}\n', "no line is a record"),
        "bad-field.jsonl": (good.replace('"ms_per_iter": 1.0', '"ms_per_iter": -1'), "kernel record 0 .*ms_per_iter must be"),
    }
    import re

    for name, (text, match) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        assert cli.main(["compare", str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and re.search(match, err), (name, err)


def test_json_lines_of_pytest_benchmark_entries_and_documents(kernel_files, result_files, tmp_path):
    """A stream may mix records, pytest-benchmark entries and whole documents, one per line."""
    kernel_doc = json.loads(kernel_files[0].read_text())
    model_doc = json.loads(result_files[0].read_text())
    lines = [json.dumps({"note": "header"})] + [json.dumps(entry) for entry in kernel_doc["benchmarks"]] + [json.dumps(model_doc)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    records = compare.read_records(path)
    assert [r["name"] for r in records] == [e["extra_info"]["name"] for e in kernel_doc["benchmarks"]] + [
        r["name"] for r in model_doc["records"]]  # fmt: skip
    (source,) = compare.load_sources([path])
    assert source.describe() == f"{len(model_doc['records'])} model, {len(kernel_doc['benchmarks'])} kernel"
