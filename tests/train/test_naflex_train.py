"""``fastvit train --naflex``: a tiny NaFlexVit on a folder of images of different sizes and aspect
ratios, packed per step up to a token budget; the loader keeps aspect ratios; the sampler sees every
image once per epoch within the budget; what --naflex cannot run with is refused before step 1."""

import json
import math

import pytest
import torch

from fastvit.cli import main
from fastvit.train.data import load_folder_data
from fastvit.train.naflex import TokenBudgetSampler, native_grid
from helpers import losses

NAFLEX = ["--model", "naflexvit_base_patch16_siglip", "--patch-size", "8", "--embed-dim", "32", "--depth", "1",
          "--num-heads", "2", "--set", "pos_embed_grid_size=(4,4)", "--set", "pos_embed_interp_mode=bilinear"]
# (height, width) per image: whole patches, not whole (rounded), tall, wide, and one over --max-patches
SIZES = [(16, 24), (24, 16), (20, 36), (40, 16), (16, 48), (8, 8), (64, 96), (32, 32)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("naflex-data")
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(("dark", "light")):
        (root / name).mkdir()
        for i, (h, w) in enumerate(SIZES):
            base = 60 + 120 * c
            pixels = (torch.rand(h, w, 3, generator=g) * 60 + base).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _train(capsys, argv):
    code = main(["train", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_native_grid_keeps_the_aspect_ratio():
    assert native_grid(16, 24, 8, 100) == (2, 3)
    assert native_grid(20, 36, 8, 100) == (2, 4)  # rounded to whole patches
    assert native_grid(3, 5, 8, 100) == (1, 1)  # at least one patch
    rows, cols = native_grid(64, 96, 8, 24)  # 8 x 12 patches, over the budget: scaled down
    assert rows * cols <= 24 and abs(cols / rows - 1.5) < 0.35


def test_the_loader_keeps_each_images_own_size(folder):
    data = load_folder_data(folder, None, test_fraction=0.0, native=(8, 24))
    grids = data.train.grids()
    assert grids == [native_grid(*SIZES[int(f.stem)], 8, 24) for f in data.train.files]
    images, labels = data.train.batch(torch.arange(len(data.train)))
    assert [tuple(im.shape) for im in images] == [(3, h * 8, w * 8) for h, w in grids]
    by_name = {f.parent.name + f.name: g for f, g in zip(data.train.files, grids)}
    assert by_name["dark1.png"] == (3, 2) and by_name["light4.png"] == (2, 6)  # tall stays tall, wide wide
    assert all(h * w <= 24 for h, w in grids)
    assert images[0].min() >= -1 and images[0].max() <= 1


def test_token_budget_sampler_sees_every_image_once_within_the_budget():
    tokens = [6, 1, 24, 9, 3, 12, 7, 7, 2, 20]
    s = TokenBudgetSampler(tokens, max_tokens=24, seed=3)
    for epoch in range(3):
        seen = torch.cat([s.indices(epoch, i) for i in range(s.steps_in(epoch))]).tolist()
        assert sorted(seen) == list(range(len(tokens)))
        assert all(sum(tokens[j] for j in s.indices(epoch, i).tolist()) <= 24 for i in range(s.steps_in(epoch)))
        assert s.steps_in(epoch) >= math.ceil(sum(tokens) / 24)
    again = TokenBudgetSampler(tokens, max_tokens=24, seed=3)
    assert [again.indices(1, i).tolist() for i in range(again.steps_in(1))] == \
        [s.indices(1, i).tolist() for i in range(s.steps_in(1))]
    with pytest.raises(ValueError, match="over --max-tokens"):
        TokenBudgetSampler([30], max_tokens=24, seed=0)


def test_a_naflex_run_trains_and_writes_its_folder(folder, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _train(capsys, [*NAFLEX, "--naflex", "--max-tokens", "48", "--max-patches", "24",
                                        "--data", str(folder), "--steps", "3", "--lr", "1e-3", "--no-progress",
                                        "--out", str(out)])
    assert code == 0, err
    assert "naflex:" in stdout and "up to 48 patches" in stdout
    steps = losses(out)
    assert sorted(steps) == [1, 2, 3] and all(math.isfinite(v) for v in steps.values())
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "run.json"):
        assert (out / name).is_file(), name
    assert (out / "state").is_dir()
    doc = json.loads((out / "config.json").read_text())
    assert doc["architecture"] == "naflexvit_base_patch16_siglip" and doc["num_classes"] == 2
    assert doc["pretrained_cfg"]["crop_mode"] == "naflex" and doc["pretrained_cfg"]["max_patches"] == 24
    assert any("test_acc" in json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())

    from fastvit.naflex import pack
    from fastvit.train import load_run

    model = load_run(out).eval()
    assert type(model).__name__ == "NaFlexVit" and model.cfg.embed_dim == 32
    with torch.no_grad():
        logits = model(pack([torch.zeros(3, 16, 24), torch.zeros(3, 40, 8)], patch_size=8))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


@pytest.mark.parametrize("argv, message", [
    (["--model", "vit_tiny_patch16_224", "--naflex"], "not one"),
    (["--naflex", "--data", "digits"], "image folder"),
    (["--max-tokens", "100"], "add --naflex"),
    (["--naflex", "--batch-size", "8"], "--batch-size does not apply"),
    (["--naflex", "--objective", "mpp"], "supervised only"),
    (["--naflex", "--max-patches", "500", "--max-tokens", "100"], "--max-patches"),
])
def test_what_naflex_cannot_run_with_is_refused_before_step_1(folder, tmp_path, capsys, argv, message):
    base = NAFLEX if "--model" not in argv else []
    data = [] if "--data" in argv else ["--data", str(folder)]
    out = tmp_path / "refused"
    code, _, err = _train(capsys, [*base, *argv, *data, "--steps", "1", "--no-progress", "--out", str(out)])
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_stopped_naflex_run_resumes_on_the_same_steps(folder, tmp_path, capsys):
    """The token-budget steps are a pure function of (seed, epoch, step): stop after 2 of 4 steps,
    resume, and the losses are the uninterrupted run's; --pretrained takes the run folder."""
    args = [*NAFLEX, "--naflex", "--max-tokens", "40", "--max-patches", "20", "--data", str(folder), "--steps", "4",
            "--no-progress", "--augment", "affine", "--eval-every", "100"]
    assert _train(capsys, [*args, "--out", str(tmp_path / "whole")])[0] == 0
    assert _train(capsys, [*args, "--stop-at", "2", "--out", str(tmp_path / "cut")])[0] == 0
    assert sorted(losses(tmp_path / "cut")) == [1, 2]
    assert _train(capsys, ["--resume", str(tmp_path / "cut"), "--no-progress"])[0] == 0
    whole, cut = losses(tmp_path / "whole"), losses(tmp_path / "cut")
    assert sorted(cut) == [1, 2, 3, 4]
    for step in whole:
        assert cut[step] == pytest.approx(whole[step], rel=1e-5), step
    code, stdout, err = _train(capsys, ["--naflex", "--pretrained", str(tmp_path / "whole"), "--data", str(folder),
                                        "--steps", "1", "--no-progress", "--out", str(tmp_path / "ft")])
    assert code == 0, err  # the run folder rebuilds the same NaFlexVit and starts from its weights
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["model_args"]["embed_dim"] == 32
