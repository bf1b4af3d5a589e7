"""A run never loses work: Ctrl-C, re-runs into a finished folder, --resume with other flags,
missing packages and bad data found before step 1, and the run folder reloaded as a model."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastvit.cli import main
from helpers import REPO, TINY, env, losses, run_cli

QUICK = [*TINY, "--batch-size", "16", "--no-progress", "--augment", "none"]


def _train(capsys, argv):
    code = main(["train", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _ok(capsys, argv):
    code, out, err = _train(capsys, argv)
    assert code == 0, err
    assert "Traceback" not in err
    return out


def _refused(capsys, argv, code=2):
    got, out, err = _train(capsys, argv)
    assert got == code, (got, out, err)
    assert err.startswith("fastvit train: ") and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step run (shared read-only by the reload tests)."""
    out = tmp_path_factory.mktemp("runs") / "done"
    assert main(["train", *QUICK, "--steps", "4", "--out", str(out)]) == 0
    return out


def test_sigint_mid_run_saves_prints_the_resume_command_and_exits_130(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastvit", "train", *QUICK, "--steps", "5000", "--log-every", "1", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert f"continue with: fastvit train --resume {out}" in stderr
    from fastvit.train.checkpointing import saved_step

    step = saved_step(out)
    assert step is not None and 3 <= step < 5000
    assert f"stopped after step {step} of 5000" in stderr
    assert not (out / "model.safetensors").exists()
    # resumed, and shortened so it ends soon: the change is said, the steps continue without a gap
    proc = run_cli(["--resume", str(out), "--steps", str(step + 3), "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"--steps 5000 -> {step + 3}" in proc.stdout and f"resuming at step {step}" in proc.stdout
    assert sorted(losses(out)) == list(range(1, step + 4))
    assert (out / "model.safetensors").is_file()


def test_finished_run_is_not_overwritten_without_overwrite(capsys, tmp_path):
    out = tmp_path / "run"
    _ok(capsys, [*QUICK, "--steps", "2", "--out", str(out)])
    (out / "notes.txt").write_text("mine")
    weights = (out / "model.safetensors").read_bytes()
    err = _refused(capsys, [*QUICK, "--steps", "3", "--lr", "5e-3", "--out", str(out)])
    assert "already holds a finished run" in err and "--overwrite" in err and f"--resume {out}" in err
    assert (out / "model.safetensors").read_bytes() == weights and max(losses(out)) == 2
    _ok(capsys, [*QUICK, "--steps", "3", "--lr", "5e-3", "--out", str(out), "--overwrite"])
    assert sorted(losses(out)) == [1, 2, 3] and (out / "model.safetensors").read_bytes() != weights
    assert json.loads((out / "run.json").read_text())["lr"] == 5e-3
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_stopped_run_is_not_restarted_without_overwrite(capsys, tmp_path):
    out = tmp_path / "run"
    _ok(capsys, [*QUICK, "--steps", "4", "--stop-at", "2", "--out", str(out)])
    err = _refused(capsys, [*QUICK, "--steps", "4", "--out", str(out)])
    assert "stopped run" in err and f"--resume {out}" in err


def test_run_stopped_before_its_first_save_can_be_started_again(capsys, tmp_path):
    from fastvit.train.run_folder import run_status

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{}")  # what a run interrupted while loading its data leaves
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    assert run_status(out) == "incomplete"
    _ok(capsys, [*QUICK, "--steps", "2", "--out", str(out)])
    assert sorted(losses(out)) == [1, 2] and losses(out)[1] != 9.0


def test_a_weights_file_that_is_no_run_is_not_overwritten(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"mine")
    err = _refused(capsys, [*QUICK, "--steps", "2", "--out", str(out)])
    assert "already holds a model.safetensors" in err and (out / "model.safetensors").read_bytes() == b"mine"


def test_resume_refuses_changed_flags_by_name_and_extends_a_finished_run(capsys, tmp_path):
    out = tmp_path / "run"
    _ok(capsys, [*QUICK, "--steps", "4", "--out", str(out)])
    err = _refused(capsys, ["--resume", str(out), "--lr", "0.01", "--depth", "3", "--no-progress"])
    assert "--lr 0.01 (saved: 0.001)" in err and "--depth=3 (saved: 2)" in err
    out_text = _ok(capsys, ["--resume", str(out), "--no-progress"])
    assert "already finished its 4 steps" in out_text and "--epochs N or --steps N" in out_text
    before = (out / "model.safetensors").read_bytes()
    # a save cut between its two renames leaves only state.old: resuming finds it
    (out / "state").rename(out / "state.old")
    out_text = _ok(capsys, ["--resume", str(out), "--steps", "6", "--no-progress"])
    assert "--steps 4 -> 6" in out_text and "resuming at step 4" in out_text
    assert sorted(losses(out)) == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "run.json").read_text())["steps"] == 6
    assert (out / "model.safetensors").read_bytes() != before


def test_finished_run_without_weights_writes_them_on_resume(capsys, tmp_path):
    """Issue 24: the weights failed to save after the last step; --resume now writes them."""
    out = tmp_path / "run"
    _ok(capsys, [*QUICK, "--steps", "3", "--out", str(out)])
    weights = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").unlink()
    text = _ok(capsys, ["--resume", str(out), "--no-progress"])
    assert "weights were not written: writing them now" in text
    from safetensors.torch import load

    before, after = load(weights), load((out / "model.safetensors").read_bytes())
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_interrupt_during_the_save_keeps_the_old_state(capsys, monkeypatch, tmp_path):
    import torch.distributed.checkpoint as dcp

    from fastvit.train.checkpointing import saved_step

    out = tmp_path / "run"
    _ok(capsys, [*QUICK, "--steps", "6", "--stop-at", "2", "--out", str(out)])

    def cut(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(dcp, "save", cut)
    err = _refused(capsys, ["--resume", str(out), "--save-every", "1", "--no-progress"], code=130)
    assert "last saved state is at step 2" in err and f"--resume {out}" in err
    assert saved_step(out) == 2
    monkeypatch.undo()
    _ok(capsys, ["--resume", str(out), "--no-progress"])
    assert sorted(losses(out)) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("module, package", [("safetensors", "safetensors"), ("sklearn", "scikit-learn"),
                                             ("tqdm", "tqdm")])
def test_missing_package_is_found_before_step_1(capsys, monkeypatch, tmp_path, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # import module -> ImportError
    progress = [] if module == "tqdm" else ["--no-progress"]
    argv = [a for a in QUICK if a != "--no-progress"] + progress
    err = _refused(capsys, [*argv, "--steps", "2", "--out", str(tmp_path / "o")])
    assert f"pip install {package}" in err and "nothing was trained" in err
    assert not (tmp_path / "o").exists()


def test_missing_matplotlib_is_announced_before_training(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text = _ok(capsys, [*QUICK, "--steps", "1", "--out", str(tmp_path / "o")])
    first_note = text.index("note: no matplotlib installed")
    assert first_note < text.index("done:") and "pip install matplotlib" in text
    assert not (tmp_path / "o" / "curves.png").exists() and (tmp_path / "o" / "model.safetensors").exists()


def _images(root, n=3):
    from PIL import Image

    for c, colour in enumerate(((250, 10, 10), (10, 10, 250))):
        for i in range(n):
            path = root / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (9, 9), colour).save(path)


def test_broken_image_is_found_before_training(capsys, tmp_path):
    _images(tmp_path / "data")
    good = (tmp_path / "data" / "class0" / "0.png").read_bytes()
    (tmp_path / "data" / "class1" / "bad.png").write_bytes(good[: len(good) // 2])  # truncated
    err = _refused(capsys, [*QUICK, "--batch-size", "2", "--data", str(tmp_path / "data"), "--steps", "2",
                            "--out", str(tmp_path / "o")])
    assert "unreadable image" in err and "bad.png" in err and "found before training" in err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_images_without_class_folders_say_so(capsys, tmp_path):
    from PIL import Image

    (tmp_path / "data").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / f"{i}.png")
    err = _refused(capsys, [*QUICK, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")])
    assert "3 image(s) but no class subfolders" in err and "is empty" not in err


def test_impl_fused_on_cpu_is_refused_before_the_data_loads(capsys, monkeypatch, tmp_path):
    import fastvit.train.loop as loop

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(loop, "load_data", lambda *a, **k: pytest.fail("the data was loaded first"))
    err = _refused(capsys, [*QUICK, "--impl", "fused", "--device", "cpu", "--out", str(tmp_path / "o")])
    assert "--impl fused" in err and "CUDA" in err and "--impl torch" in err


def test_cpu_threads_follow_the_idle_cores(monkeypatch):
    from fastvit.train import preflight

    assert preflight.cpu_threads(2, None) == 2
    assert preflight.cpu_threads(2, 1.6) == 1 and preflight.cpu_threads(2, 7.0) == 1
    assert preflight.cpu_threads(16, 4.2) == 12
    before = torch.get_num_threads()
    said = []
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "getloadavg", lambda: (0.9, 0.0, 0.0))
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
        preflight.set_cpu_threads(said.append)
        assert torch.get_num_threads() == 3
        assert "3 torch thread(s) for 4 core(s)" in said[0] and "OMP_NUM_THREADS" in said[0]
        said.clear()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        preflight.set_cpu_threads(said.append)
        assert said == []  # the user's choice stands
    finally:
        torch.set_num_threads(before)


def test_digits_upsampling_note():
    from fastvit.train.preflight import digits_note

    assert "upsampling them to 224x224" in digits_note((224, 224)) and "--img-size 32" in digits_note((224, 224))
    assert digits_note((8, 8)) is None and digits_note((32, 32)) is None


def test_curves_title_and_mpp_label(capsys, monkeypatch, tmp_path):
    import fastvit.train.loop as loop

    seen = {}
    monkeypatch.setattr(loop, "plot_curves", lambda m, png, title, acc_label: seen.update(title=title, label=acc_label))
    _ok(capsys, [*QUICK, "--objective", "mpp", "--steps", "1", "--out", str(tmp_path / "o")])
    assert "vit_tiny_patch16_224" not in seen["title"].split(" (from")[0]
    assert "2 block(s), width 32" in seen["title"] and "8x8 px" in seen["title"]
    assert seen["label"] == "test colour accuracy on corrupted patches"


# -- the run folder is a model -------------------------------------------------------------


def test_run_folder_is_a_timm_local_dir(finished):
    cfg = json.loads((finished / "config.json").read_text())
    assert cfg["architecture"] == "vit_tiny_patch16_224" and cfg["num_classes"] == 10 and cfg["num_features"] == 32
    assert cfg["model_args"] == {"img_size": 8, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}
    p = cfg["pretrained_cfg"]
    assert p["input_size"] == [3, 8, 8] and p["mean"] == [0.5] * 3 and p["std"] == [0.5] * 3
    assert p["crop_mode"] == "squash" and p["crop_pct"] == 1.0 and p["interpolation"] == "bilinear"
    assert p["num_classes"] == 10 and p["label_names"] == [str(i) for i in range(10)] == cfg["label_names"]


def test_load_run_rebuilds_the_trained_model(finished):
    import fastvit
    from fastvit.train import load_run
    from fastvit.train.data import load_digits_data

    model = load_run(finished).eval()
    assert model.cfg.depth == 2 and model.cfg.embed_dim == 32 and model.cfg.num_classes == 10
    assert model.pretrained_cfg["input_size"] == [3, 8, 8] and model.pretrained_cfg["label_names"][3] == "3"
    reference = fastvit.create_model("vit_tiny_patch16_224", img_size=8, patch_size=4, embed_dim=32, depth=2,
                                     num_heads=2, num_classes=10, pretrained=str(finished / "model.safetensors"))
    x = load_digits_data((8, 8)).test.images[:5]
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))
    assert load_run(finished / "model.safetensors").cfg.depth == 2  # the weights file, config beside it


def test_load_run_of_an_unfinished_run_says_so(capsys, tmp_path):
    from fastvit.train import load_run

    _ok(capsys, [*QUICK, "--steps", "4", "--stop-at", "1", "--out", str(tmp_path / "r")])
    with pytest.raises(FileNotFoundError, match="did not finish.*--resume"):
        load_run(tmp_path / "r")


def test_analyze_from_a_run_folder(finished, tmp_path):
    assert main(["analyze", "--checkpoint", str(finished), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert doc["model"] == "vit_tiny_patch16_224" and len(doc["mean_attention_distance"]) == 2  # 2 blocks


def test_train_pretrained_from_a_run_folder(capsys, finished, tmp_path):
    out = tmp_path / "ft"
    text = _ok(capsys, ["--pretrained", str(finished), "--steps", "1", "--batch-size", "16", "--no-progress",
                        "--out", str(out)])
    assert "'depth': 2" in text and "'embed_dim': 32" in text
    assert json.loads((out / "config.json").read_text())["model_args"]["img_size"] == 8
    err = _refused(capsys, ["--pretrained", str(finished), "--model", "vit_small_patch16_224", "--out", str(tmp_path / "x")])
    assert "holds a vit_tiny_patch16_224" in err
