"""Acceptance: masked patch prediction lowers its loss on digits, and its checkpoint fine-tunes."""

import json

import torch

from fastvit.train.data import load_digits_data
from fastvit.train.objectives import mean_colour_targets
from helpers import TINY, metrics, run_cli

# the README's digits model: 16 patches of 4x4 at 16x16
SMALL = [*TINY[:2], "--img-size", "16", "--patch-size", "4", "--embed-dim", "64", "--depth", "4", "--num-heads", "4"]


def test_mpp_pretrains_then_fine_tunes(tmp_path):
    pre = tmp_path / "mpp"
    proc = run_cli([*SMALL, "--objective", "mpp", "--epochs", "3", "--batch-size", "64", "--lr", "2e-3", "--out", str(pre), "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = metrics(pre)
    loss = [r["loss"] for r in rows if "loss" in r]
    assert abs(loss[0] - torch.log(torch.tensor(512.0)).item()) < 0.3  # starts at chance over 512 colours
    assert sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 2.0
    # held-out colour accuracy beats always answering the most common colour: it reads the context
    # and its held-out loss beats the best context-free guess (the colours' marginal distribution)
    targets = mean_colour_targets(load_digits_data((16, 16)).test.images, 4).flatten()
    freq = targets.bincount().float() / targets.numel()
    majority, entropy = freq.max().item(), -(freq[freq > 0] * freq[freq > 0].log()).sum().item()
    final = [r for r in rows if "test_acc" in r][-1]
    assert final["test_acc"] > majority + 0.04, (final, majority)
    assert final["test_loss"] < entropy - 0.05, (final, entropy)
    cfg = json.loads((pre / "config.json").read_text())
    assert cfg["fastvit"]["objective"] == "mpp" and cfg["num_classes"] == 0

    ft = tmp_path / "ft"
    proc = run_cli([*SMALL, "--pretrained", str(pre / "model.safetensors"), "--epochs", "5", "--batch-size", "64",
                    "--lr", "2e-3", "--out", str(ft), "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no classifier head" in proc.stdout  # the MPP backbone was loaded and a 10-class head added
    acc = [r["test_acc"] for r in metrics(ft) if "test_acc" in r][-1]
    assert acc > 0.3, acc  # 10 classes: chance is 0.1
