"""Shared by the train tests: a tiny model, running ``fastvit train`` in-process or under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# 2 blocks of width 32 on 8x8 digits, 4 patches of 4x4: a step takes milliseconds.
TINY = ["--model", "vit_tiny_patch16_224", "--img-size", "8", "--patch-size", "4", "--embed-dim", "32",
        "--depth", "2", "--num-heads", "2"]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def run_cli(args: list[str], nproc: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m fastvit train ARGS`` (or ``torchrun --nproc-per-node N -m fastvit train ARGS``)."""
    if nproc == 1:
        cmd = [sys.executable, "-m", "fastvit", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
               str(29600 + os.getpid() % 300), "-m", "fastvit", "train", *args]
    return subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def metrics(run_dir) -> list[dict]:
    with open(Path(run_dir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(run_dir) if "loss" in r}
