"""``fastvit train`` bad input: one clear line, exit status 2, no traceback, nothing written."""

import pytest

from fastvit.cli import main
from helpers import TINY, run_cli


def _error(capsys, argv):
    code = main(["train", *argv, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fastvit train: error: ") and "Traceback" not in err
    return err


def _png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)


def test_unknown_model(capsys, tmp_path):
    err = _error(capsys, ["--model", "vit_tiny_patch16", "--out", str(tmp_path / "o")])
    assert "unknown model 'vit_tiny_patch16'" in err and "vit_tiny_patch16_224" in err  # a suggestion
    assert not (tmp_path / "o").exists()


def test_missing_model_flag(capsys):
    assert "--model is required" in _error(capsys, [])


def test_unknown_config_field(capsys, tmp_path):
    err = _error(capsys, [*TINY, "--set", "depht=3", "--out", str(tmp_path)])
    assert "depht" in err and "unknown ViTConfig field" in err


def test_bad_config_value(capsys, tmp_path):
    assert "smaller than one patch" in _error(capsys, [*TINY, "--img-size", "3", "--out", str(tmp_path)])


def test_missing_data_folder(capsys, tmp_path):
    err = _error(capsys, [*TINY, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert "does not exist" in err and "nowhere" in err


def test_empty_data_folder(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    assert "is empty" in _error(capsys, [*TINY, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")])


def test_empty_class(capsys, tmp_path):
    _png(tmp_path / "data" / "cats" / "a.png")
    (tmp_path / "data" / "dogs").mkdir()
    err = _error(capsys, [*TINY, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")])
    assert "dogs has no images" in err


def test_global_batch_not_divisible_by_processes(capsys, monkeypatch, tmp_path):
    # what torchrun --nproc-per-node 2 sets: refused before the process group is joined
    monkeypatch.setenv("WORLD_SIZE", "2")
    err = _error(capsys, [*TINY, "--strategy", "ddp", "--batch-size", "7", "--out", str(tmp_path)])
    assert "--batch-size 7" in err and "not divisible by the number of processes (2)" in err


def test_single_strategy_with_several_processes(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "use --strategy ddp or fsdp" in _error(capsys, [*TINY, "--batch-size", "8", "--out", str(tmp_path)])


def test_resume_without_a_run(capsys, tmp_path):
    assert "no resumable run" in _error(capsys, ["--resume", str(tmp_path)])


def test_missing_pretrained_file(capsys, tmp_path):
    assert "no such file" in _error(capsys, [*TINY, "--pretrained", str(tmp_path / "x.safetensors")])


@pytest.mark.parametrize("flag, value", [("--steps", "0"), ("--batch-size", "0"), ("--layer-decay", "1.5")])
def test_bad_numbers(capsys, tmp_path, flag, value):
    assert flag in _error(capsys, [*TINY, flag, value, "--out", str(tmp_path)])


def test_python_m_fastvit_train_exit_status_and_no_traceback(tmp_path):
    proc = run_cli(["--model", "no_such_model", "--out", str(tmp_path)])
    assert proc.returncode == 2
    assert "fastvit train: error: unknown model 'no_such_model'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_folder_training_end_to_end(tmp_path):
    """A class-per-folder dataset trains through the CLI, with a held-out split."""
    from PIL import Image

    for c, colour in enumerate(((250, 10, 10), (10, 10, 250), (10, 250, 10))):
        for i in range(6):
            path = tmp_path / "data" / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (10 + i, 9), colour).save(path)
    out = tmp_path / "run"
    proc = run_cli([*TINY, "--data", str(tmp_path / "data"), "--steps", "12", "--batch-size", "6", "--lr", "5e-3",
                    "--out", str(out), "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "15 train / 3 test images, 3 classes" in proc.stdout
    import json

    evals = [json.loads(line) for line in open(out / "metrics.jsonl") if "test_acc" in line]
    assert evals and evals[-1]["step"] == 12
    assert json.loads((out / "config.json").read_text())["label_names"] == ["class0", "class1", "class2"]


def test_resume_with_another_process_count(capsys, monkeypatch, tmp_path):
    out = tmp_path / "run"
    proc = run_cli([*TINY, "--steps", "4", "--batch-size", "8", "--stop-at", "2", "--out", str(out), "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    import fastvit.train.distributed as tdist

    # a 2-process resume of a 1-process state, without launching a second process
    monkeypatch.setattr(tdist, "setup", lambda strategy, device="auto": tdist.Dist(rank=0, world_size=2))
    err = _error(capsys, ["--resume", str(out)])
    assert "saved by 1 process(es)" in err and "not 2" in err


def test_command_registration_is_light():
    """``fastvit --help`` lists train, and building the parser imports none of the training dependencies."""
    import subprocess
    import sys

    from helpers import REPO, env

    code = ("import sys, contextlib, io\nfrom fastvit import cli\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n    cli.main(['train', '--help'])\n"
            "print('--objective' in buf.getvalue(), sorted(m for m in ('sklearn', 'matplotlib', 'safetensors', "
            "'PIL', 'torch.distributed.fsdp', 'torch.distributed.checkpoint') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "[]"], out.stdout + out.stderr
