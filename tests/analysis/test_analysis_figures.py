"""The analysis figures: sized by their content, every one titled, and a random model said to be one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastvit
from fastvit.analysis import command, figures
from fastvit.cli import main

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

SMALL = ["--model", "vit_tiny_patch16_224", "--img-size", "48", "--attn-impl", "sdpa", "--no-progress"]


def _size(path):
    with PIL.open(path) as im:
        return im.size  # (width, height)


def test_similarity_grid_has_pixels_for_every_cell(tmp_path):
    """ViT-B/16 at 224: a 14 x 14 grid of 14 x 14 tiles (196 x 196 values, 209 x 209 with the gaps)."""
    sim = np.random.default_rng(0).uniform(-1, 1, size=(14, 14, 14, 14))
    width, height = _size(figures.plot_pos_similarity(sim, tmp_path / "sim.png"))
    cells = 14 * 15 - 1
    assert width >= figures.PX_PER_CELL * cells and height >= figures.PX_PER_CELL * cells, (width, height)


@pytest.mark.parametrize("grid", [7, 24])
def test_similarity_figure_grows_with_the_grid(tmp_path, grid):
    sim = np.zeros((grid, grid, grid, grid))
    width, _ = _size(figures.plot_pos_similarity(sim, tmp_path / "sim.png"))
    assert width >= min(figures.PX_PER_CELL * (grid * (grid + 1) - 1), figures.MAX_INCHES * figures.DPI * 0.9)
    assert width >= 6 * figures.DPI * 0.9  # small grids get a readable minimum


def test_other_figures_are_not_thumbnails(tmp_path):
    rng = np.random.default_rng(0)
    paths = [
        figures.plot_mean_distance(rng.uniform(0, 100, size=(12, 3)), tmp_path / "d.png"),
        figures.plot_rollout(rng.uniform(0, 1, size=(48, 48, 3)), rng.uniform(0, 1, size=(3, 3)), tmp_path / "r.png"),
        figures.plot_filter_components(rng.normal(size=(28, 3, 16, 16)), np.full(28, 0.01), tmp_path / "f.png"),
    ]
    for path in paths:
        width, height = _size(path)
        assert width >= 800 and height >= 500, (path.name, width, height)


@pytest.fixture
def captured_titles(monkeypatch):
    """{file name: (suptitle, [other figure texts])} of every figure saved."""
    seen = {}
    save = figures._save

    def spy(fig, path):
        title = fig._suptitle.get_text() if fig._suptitle is not None else ""
        seen[path.name] = (title, [t.get_text() for t in fig.texts if t is not fig._suptitle])
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", spy)
    return seen


def test_random_model_is_warned_on_stderr_and_in_every_title(tmp_path, capsys, captured_titles):
    out = tmp_path / "out"
    assert main(["analyze", *SMALL, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "fastvit analyze: warning: no --checkpoint: the model has random weights" in err
    assert sorted(captured_titles) == ["mean_attention_distance.png", "patch_embed_pca.png", "pos_embed_similarity.png",
                                       "rollout_china.png"]  # fmt: skip
    for name, (title, texts) in captured_titles.items():
        assert title, f"{name} has no title"
        assert command.RANDOM_NOTE in texts, (name, texts)
    import json

    assert json.loads((out / "analysis.json").read_text())["warning"] == command.RANDOM_NOTE


def test_trained_model_is_not_warned(tmp_path, capsys, captured_titles):
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pth"
    torch.save(fastvit.create_model("vit_tiny_patch16_224", img_size=48, attn_impl="sdpa").state_dict(), ckpt)
    assert main(["analyze", *SMALL, "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    assert "warning" not in capsys.readouterr().err
    for name, (title, texts) in captured_titles.items():
        assert title and command.RANDOM_NOTE not in texts, name
