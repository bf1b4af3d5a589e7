"""fastvit compare on result files produced here by real runs of the bench core on the CPU
(a 2-block ViT-Ti at 32x32, so the runs take seconds)."""

from __future__ import annotations

import json
import sys

import pytest

from fastvit import bench, cli, compare

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
