"""fastvit analyze: valid, non-blank figures and a JSON that holds the API's numbers; clean errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastvit
from fastvit.analysis import attention_rollout, mean_attention_distance, patch_embed_components, pos_embed_similarity
from fastvit.analysis.command import load_sample, preprocess
from fastvit.cli import main

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

SMALL = ["--model", "vit_tiny_patch16_224", "--img-size", "48", "--attn-impl", "sdpa", "--no-progress"]


def assert_real_png(path: Path):
    with PIL.open(path) as im:
        im.verify()
    with PIL.open(path) as im:
        px = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert px.shape[0] > 50 and px.shape[1] > 50, path
    assert px.std() > 5, f"{path.name} is blank"
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50, f"{path.name} has almost no colours"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analyze")
    torch.manual_seed(1)
    model = fastvit.create_model("vit_tiny_patch16_224", img_size=48, attn_impl="sdpa").eval()
    ckpt = tmp / "tiny.pth"
    torch.save(model.state_dict(), ckpt)
    gray = tmp / "gray photo.png"  # a space in the name and a grayscale file
    PIL.fromarray(load_sample("chelsea")[..., 1]).save(gray)
    out = tmp / "out"
    rc = main(["analyze", *SMALL, "--checkpoint", str(ckpt), "--image", str(gray), "--sample", "china", "--out", str(out)])
    assert rc == 0
    return out, model, gray


def test_writes_every_figure_non_blank(run_dir):
    out, _, _ = run_dir
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["mean_attention_distance.png", "patch_embed_pca.png", "pos_embed_similarity.png",
                     "rollout_china.png", "rollout_gray_photo.png"]  # fmt: skip
    for p in out.glob("*.png"):
        assert_real_png(p)


def test_json_holds_the_api_numbers(run_dir):
    out, model, gray = run_dir
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["grid"] == [3, 3] and doc["img_size"] == [48, 48] and doc["maps_route"] == "softmax"
    xs = [preprocess(np.asarray(PIL.open(gray).convert("RGB")), (48, 48), "inception")[1], preprocess(load_sample("china"), (48, 48), "inception")[1]]
    dist = torch.stack([mean_attention_distance(model, x) for x in xs]).mean(0)
    np.testing.assert_allclose(np.array(doc["mean_attention_distance"]), dist.numpy(), rtol=1e-5)
    assert np.array(doc["mean_attention_distance"]).shape == (12, 3)
    np.testing.assert_allclose(np.array(doc["rollout"]["china"]["rollout"]), attention_rollout(model, xs[1])[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.array(doc["pos_embed_similarity"]), pos_embed_similarity(model).numpy(), atol=2e-6)
    _, ratio = patch_embed_components(model, 28)
    np.testing.assert_allclose(doc["patch_embed_pca"]["explained_variance_ratio"], ratio.numpy(), rtol=1e-5)


def test_preprocess_crops_to_size_and_normalises():
    img = np.zeros((30, 60, 3), np.uint8)
    img[:, 8:52] = 255  # white beyond the centre square the crop keeps
    shown, x = preprocess(img, (16, 16), "inception")
    assert shown.shape == (16, 16, 3) and x.shape == (1, 3, 16, 16)
    torch.testing.assert_close(x, torch.ones(1, 3, 16, 16), atol=1e-3, rtol=0)  # (1 - 0.5) / 0.5


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image", "no/such/photo.jpg"], "image not found"),
        (["--checkpoint", "no/such/ckpt.pth"], "checkpoint not found"),
        (["--num-components", "0"], "num-components"),
        (["--attn-impl", "nonsense"], "attn_impl"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, extra, message):
    rc = main(["analyze", *SMALL, *extra, "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "fastvit analyze: error:" in err and message in err
    assert not (tmp_path / "o" / "analysis.json").exists()


def test_unknown_model_and_missing_out(tmp_path, capsys):
    assert main(["analyze", "--model", "vit_nonexistent", "--out", str(tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["analyze", "--model", "vit_tiny_patch16_224"])
    assert e.value.code == 2


def test_unreadable_image_in_a_subprocess_has_no_traceback(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, "-m", "fastvit", "analyze", *SMALL, "--image", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 2
    assert "cannot read image" in proc.stderr and "Traceback" not in proc.stderr


def test_hybrid_model_skips_the_filter_figure(tmp_path):
    out = tmp_path / "hybrid"
    rc = main(["analyze", "--model", "vit_small_r26_s32_224", "--img-size", "64", "--attn-impl", "sdpa", "--no-progress",
               "--sample", "coffee", "--out", str(out)])  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["grid"] == [2, 2] and doc["patch_embed_pca"] is None
    assert sorted(doc["figures"]) == ["mean_attention_distance.png", "pos_embed_similarity.png", "rollout_coffee.png"]
    assert np.array(doc["mean_attention_distance"]).shape == (12, 6)
    for name in doc["figures"]:
        assert_real_png(out / name)
