"""CLI misuse: `fastvit bench` / `fastvit compare` exit non-zero with a message (naming the file),
never a traceback, and check what they can before doing any work."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastvit import bench, cli

ROOT = Path(__file__).resolve().parents[1]


# -- fastvit bench ----------------------------------------------------------------------------


@pytest.fixture
def no_benchmark(monkeypatch):
    """Fails the test if `fastvit bench` starts preparing a benchmark."""
    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark started although its options were bad")

    monkeypatch.setattr(bench.command, "ModelContext", refuse)
    monkeypatch.setattr(bench.command, "run_model_cases", refuse)


@pytest.mark.parametrize("option", [["--variants", ""], ["--variants", " , "], ["--modes", ""], ["--modes", ","],
                                    ["--variants", "sdpa+compile", "--no-compile"]])
def test_bench_with_nothing_to_run(tmp_path, capsys, no_benchmark, option):
    out = tmp_path / "r.json"
    assert cli.main(["bench", "--device", "cpu", "--out", str(out), *option]) == 2
    err = capsys.readouterr().err
    assert "fastvit bench: error: no " in err and ("--variants" in err or "--modes" in err)
    assert not out.exists()


@pytest.mark.parametrize("where", ["under_a_file", "deep_under_a_file", "a_directory"])
def test_bench_checks_out_before_benchmarking(tmp_path, capsys, no_benchmark, where):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("not a folder")
    out = {"under_a_file": blocker / "r.json", "deep_under_a_file": blocker / "a" / "b" / "r.json",
           "a_directory": tmp_path}[where]
    assert cli.main(["bench", "--device", "cpu", "--batch", "1", "--rounds", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the results to {out}" in err
    assert blocker.read_text() == "not a folder"


def test_bench_out_check_leaves_no_scratch_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "new" / "r.json"
    assert bench.command.check_writable(out) is None
    assert list(out.parent.iterdir()) == []


# -- fastvit compare ----------------------------------------------------------------------------


def _record(variant, ms):
    return bench.make_record(
        name=f"vit_tiny_patch16_224-fp32-b1-{variant}-inference", kind="model", status="ok", reason=None,
        model="vit_tiny_patch16_224", variant=variant, mode="inference", dtype="fp32", batch=1,
        config={"img_size": [224, 224], "depth": 12}, images_per_s=1e3 / ms, ms_per_iter=ms, device="cpu",
        cpu_model="test CPU", timestamp="2026-12-01T00:00:00+00:00",
    )


def _doc():
    records = bench.add_speedups([_record("reference", 20.0), _record("sdpa", 10.0)])
    return {"format": bench.FORMAT, "created": "2026-12-01T00:00:00+00:00", "argv": [], "env": {}, "records": records}


def _set(doc, path, value):
    """A copy of ``doc`` with ``value`` at ``path`` (keys / indices); ``...`` deletes."""
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


HOSTILE = {
    "records_null": (("records",), None, "'records' must be a list"),
    "records_object": (("records",), {"a": 1}, "'records' must be a list"),
    "record_null": (("records", 0), None, "entry 0 must be an object, got null"),
    "record_list": (("records", 1), [1, 2], "entry 1 must be an object, got a list"),
    "record_string": (("records", 0), "reference", "entry 0 must be an object, got a string"),
    "missing_model": (("records", 0, "model"), ..., "missing field.*model"),
    "missing_variant": (("records", 1, "variant"), ..., "missing field.*variant"),
    "missing_batch": (("records", 0, "batch"), ..., "missing field.*batch"),
    "ms_zero": (("records", 0, "ms_per_iter"), 0, "ms_per_iter must be a finite number > 0"),
    "ms_negative": (("records", 1, "ms_per_iter"), -3.0, "ms_per_iter must be a finite number > 0"),
    "ms_string": (("records", 0, "ms_per_iter"), "20.0", "ms_per_iter must be a finite number"),
    "ms_missing": (("records", 0, "ms_per_iter"), ..., "ms_per_iter must be"),
    "ms_bool": (("records", 0, "ms_per_iter"), True, "ms_per_iter"),
    "images_string": (("records", 1, "images_per_s"), "100", "images_per_s must be a finite number"),
    "images_zero": (("records", 1, "images_per_s"), 0.0, "images_per_s"),
    "batch_string": (("records", 0, "batch"), "1", "batch must be a positive integer"),
    "batch_zero": (("records", 0, "batch"), 0, "batch must be a positive integer"),
    "batch_float": (("records", 0, "batch"), 1.5, "batch must be a positive integer"),
    "config_list": (("records", 0, "config"), [1, 2], "config must be an object or null"),
    "config_string": (("records", 1, "config"), "vit", "config must be an object or null"),
    "model_number": (("records", 0, "model"), 3, "model must be a string"),
    "status_null": (("records", 0, "status"), None, "status must be a string"),
    "mfu_string": (("records", 0, "mfu"), "12%", "mfu must be"),
    "device_number": (("records", 0, "device"), 7, "device must be a string"),
    "timestamp_number": (("records", 0, "timestamp"), 20261201, "timestamp must be a string"),
}


def _write(tmp_path, doc, name="result.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_valid_file_compares(tmp_path, capsys):
    """The control for the cases below: the untouched document is compared fine."""
    assert cli.main(["compare", str(_write(tmp_path, _doc()))]) == 0
    assert "| sdpa | 100.0 | 2.00× |" in capsys.readouterr().out


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_compare_rejects_wrong_contents_naming_the_file(tmp_path, capsys, case):
    path_in_doc, value, match = HOSTILE[case]
    path = _write(tmp_path, _set(_doc(), path_in_doc, value))
    md = tmp_path / "report.md"
    assert cli.main(["compare", str(path), "--out-md", str(md)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastvit compare: error: ") and str(path) in err, err
    import re

    assert re.search(match, err), err
    assert not md.exists()


@pytest.mark.parametrize("text,match", [("[1, 2]", "neither"), ("null", "neither"), ('"text"', "neither"),
                                        ('{"benchmarks": [null]}', r"benchmarks\[0\] is not an object"),
                                        ('{"benchmarks": [{"extra_info": [1]}]}', r"benchmarks\[0\]"),
                                        ("[" * 100000 + "]" * 100000, "nested too deeply|not JSON"),
                                        ('{"format": "fastvit-bench/1", "records": [{"kind": "model", "model": "m", '
                                         '"variant": "reference", "mode": "inference", "dtype": "fp32", "batch": 1, '
                                         '"status": "ok", "ms_per_iter": NaN, "images_per_s": 1}]}', "ms_per_iter")])
def test_compare_rejects_other_json(tmp_path, capsys, text, match):
    path = _write(tmp_path, text)
    assert cli.main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    import re

    assert re.search(match, err), err


def test_compare_rejects_binary_file(tmp_path, capsys):
    path = tmp_path / "result.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert cli.main(["compare", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--out-md", "--out-png"])
@pytest.mark.parametrize("where", ["under_a_file", "deep_under_a_file", "a_directory"])
def test_compare_outputs_under_a_regular_file(tmp_path, capsys, option, where):
    path = _write(tmp_path, _doc())
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    out = {"under_a_file": blocker / "r.out", "deep_under_a_file": blocker / "a" / "r.out", "a_directory": tmp_path}[where]
    assert cli.main(["compare", str(path), option, str(out)]) == 2
    err = capsys.readouterr().err
    assert f"fastvit compare: error: {option} {out}" in err
    assert blocker.read_text() == "x"


def test_no_traceback_from_the_command_line(tmp_path):
    """End to end through `python -m fastvit`: a message and exit code 2, no traceback."""
    bad = _write(tmp_path, _set(_doc(), ("records", 0, "config"), [1]))
    proc = subprocess.run([sys.executable, "-m", "fastvit", "compare", str(bad)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(bad) in proc.stderr, proc.stderr


# -- the command line's own edges: --version, models, typos, plain help ------------------------------


def test_version(capsys):
    import fastvit

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"fastvit {fastvit.__version__}"


def test_models_lists_the_presets_with_their_sizes_and_tags(capsys):
    import fastvit
    from fastvit.presets import pretrained_cfg_for

    assert cli.main(["models", "vit_base*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "img", "patch", "dim", "depth", "heads", "params", "timm", "tag"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == fastvit.list_models("vit_base*") and rows
    for name, img, patch, dim, depth, heads, params, tag in rows:
        cfg = fastvit.get_config(name)
        assert (img, int(patch), int(dim), int(depth), int(heads)) == (
            "x".join(map(str, cfg.img_size)), cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads)
        if isinstance(cfg, fastvit.ViTConfig):
            count, want_tag = cfg.num_params(), pretrained_cfg_for(name, cfg)["tag"]
        else:  # the eva family: counted on the meta device, its own pretrained_cfg
            model = fastvit.create_model(name, device="meta")
            count, want_tag = sum(p.numel() for p in model.parameters()), model.pretrained_cfg["tag"]
        assert params == f"{count / 1e6:.1f}M" and tag == (want_tag or "-"), name
    assert "vit_base_patch16_dinov3" in [r[0] for r in rows], "the eva family is listed beside the ViT presets"
    assert cli.main(["models", "patch14"]) == 0  # a part of the name
    assert all("patch14" in line.split()[0] for line in capsys.readouterr().out.splitlines()[1:])
    assert cli.main(["models"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + len(fastvit.list_models())


def test_models_without_a_match(capsys):
    assert cli.main(["models", "vit_bsae_patch16_224"]) == 1
    assert "did you mean vit_base_patch16_224" in capsys.readouterr().err
    assert cli.main(["models", "fastvit_t8"]) == 1
    assert "Apple's FastViT" in capsys.readouterr().err


@pytest.mark.parametrize("argv,hint", [
    (["becnh"], "did you mean 'bench'?"),
    (["comapre", "x.json"], "did you mean 'compare'?"),
    (["bench", "--device", "cdua"], "did you mean 'cuda'?"),
    (["bench", "--modle", "vit_tiny_patch16_224"], "--modle -> --model"),
    (["bench", "--varaints=sdpa"], "--varaints -> --variants"),
    (["compare", "a.json", "--out-mdd", "r.md"], "--out-mdd -> --out-md"),
])
def test_typos_get_a_suggestion(capsys, argv, hint):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert hint in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("key,hint", [("drop_path", "did you mean 'drop_path_rate'"), ("embed_dmi", "did you mean 'embed_dim'"),
                                      ("zzzz", "valid: act_layer, attn_drop_rate")])
def test_mistyped_set_key_gets_a_suggestion(tmp_path, capsys, key, hint):
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "vit_tiny_patch16_224", "--set", f"{key}=1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastvit train: error: --set {key}=...: unknown ViTConfig field {key!r}; {hint}"), err
    assert not out.exists()  # nothing started


def test_no_suggestion_for_something_unlike_any_choice(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--zzzzzz"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --zzzzzz" in err and "did you mean" not in err


def test_valid_set_keys_pass():
    args = cli.build_parser().parse_args(["train", "--model", "vit_tiny_patch16_224", "--set", "drop_path_rate=0.1"])
    assert args.sets == [("drop_path_rate", 0.1)]


def test_plain_strips_markup():
    assert cli.plain("``fastvit bench`` records (:func:`fastvit.bench.run`, :mod:`.configs`), `x`") == \
        "fastvit bench records (fastvit.bench.run, configs), x"  # fmt: skip


SUBCOMMANDS = ["info", "models", "bench", "compare", "gpu-check", "analyze", "train"]


@pytest.mark.parametrize("command", ["", *SUBCOMMANDS])
@pytest.mark.parametrize("columns", ["40", "100"])
def test_help_is_plain_and_splits_no_word(command, columns, monkeypatch, capsys):
    """No reStructuredText backticks, and no word broken across lines: every word of the help output
    (after the usage block) is a whole word of the help texts it was made from, an option, a metavar,
    a subcommand or a heading; narrow terminals included."""
    import re

    monkeypatch.setenv("COLUMNS", columns)
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0]
    assert sorted(commands.choices) == sorted(SUBCOMMANDS)
    target = commands.choices[command] if command else parser
    with pytest.raises(SystemExit):
        cli.main([*([command] if command else []), "--help"])
    out = capsys.readouterr().out
    assert "`" not in out
    texts = [target.description or ""] + [a.help or "" for a in target._actions]
    texts += [f"{g.title or ''}: {g.description or ''}" for g in target._action_groups]
    if not command:
        texts += [a.help or "" for a in commands._choices_actions]
    allowed = set(cli.plain(" ".join(texts).replace("%%", "%")).split()) | {"options:", "positional", "arguments:", *SUBCOMMANDS}
    allowed |= {str(a.metavar or a.dest) for a in target._actions if not a.option_strings}  # positionals' names
    body = out.split("\n\n", 1)[1]
    for word in body.split():
        if word in allowed or re.fullmatch(r"\[?(-{1,2}[a-z][a-z0-9-]*|[A-Z][A-Z_=]*|\{[^}]*\}|\.\.\.)\]?,?", word):
            continue  # a help word, an option, a metavar, a set of choices
        pytest.fail(f"{command or 'fastvit'} --help at {columns} columns: {word!r} is not a word of its help texts\n{out}")
