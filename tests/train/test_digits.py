"""Acceptance: the README's digits command reaches >= 97% test accuracy within 5 minutes on the CPU,
and the saved checkpoint reproduces the reported accuracy when reloaded."""

import json
import re
import shlex
import time

import torch

from helpers import REPO, metrics, run_cli

BUDGET_S = 300
TARGET = 0.97


def readme_command() -> list[str]:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- digits-command -->\s*```bash\n(fastvit train [^\n]+)\n```", text)
    assert m, "README.md lost its documented digits command (after <!-- digits-command -->)"
    return shlex.split(m.group(1))[2:]


def _without_out(args):
    i = args.index("--out") if "--out" in args else None
    return args if i is None else args[:i] + args[i + 2 :]


def test_readme_digits_command_reaches_97_percent(tmp_path):
    from fastvit.train.data import load_digits_data

    args = readme_command()
    assert "--data" in args and args[args.index("--data") + 1] == "digits"
    out = tmp_path / "digits"
    start = time.perf_counter()
    proc = run_cli([*_without_out(args), "--out", str(out), "--no-progress"], timeout=2 * BUDGET_S)
    elapsed = time.perf_counter() - start  # process start, data, training, evaluation and saving
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = [r for r in metrics(out) if "test_acc" in r][-1]
    reported = final["test_acc"]
    assert reported >= TARGET, f"test accuracy {reported:.4f} < {TARGET}"
    assert elapsed < BUDGET_S, f"took {elapsed:.0f} s"
    assert f"test accuracy {reported:.4f}" in proc.stdout

    # reload the run folder as the README shows and evaluate independently of the training loop
    from fastvit.train import load_run

    model = load_run(out).eval()
    data = load_digits_data(model.cfg.img_size)
    with torch.no_grad():
        predictions = torch.cat([model(data.test.images[i : i + 100]).argmax(-1) for i in range(0, 360, 100)])
    acc = (predictions == data.test.labels).float().mean().item()
    assert abs(acc - reported) <= 1 / 360 + 1e-9, (acc, reported)  # at most one borderline image may flip
    assert acc >= TARGET
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["test_acc"]) == reported
