"""``DIR/metrics.jsonl`` (one JSON object a line) and the PNG of its curves.

Training lines: ``{"step", "epoch", "loss", "lr"}`` (epoch counts from 1; loss: mean over the global
batch, lr: the base learning rate used for that step). Evaluations are lines of
their own, ``{"step", "epoch", "test_loss", "test_acc"}`` with ``test_acc`` a
fraction in [0, 1]; filter on the key to separate the two.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
    """Appends records to ``metrics.jsonl``; only the main process writes."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None = None):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None:
            # lines written after the state we resume from would be written again: drop them
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= resume_step]
            with open(path, "w") as f:
                for r in kept:
                    f.write(json.dumps(r) + "\n")
        elif enabled:
            path.write_text("")

    def write(self, record: dict):
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


def plot_curves(metrics_path: str | Path, png_path: str | Path, title: str = "",
                acc_label: str = "test accuracy") -> Path | None:
    """Loss against step (left) and test accuracy against step (right, labelled ``acc_label``).
    None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "test_acc" in r]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train loss")
    if any("test_loss" in r for r in evals):
        ax_loss.plot([r["step"] for r in evals], [r["test_loss"] for r in evals], "o-", label="test loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_acc.plot([r["step"] for r in evals], [r["test_acc"] for r in evals], "o-", color="tab:green")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel(acc_label)
    ax_acc.set_ylim(0, 1)
    ax_acc.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
