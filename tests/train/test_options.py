"""Training options run end to end in-process: amp, gradient checkpointing, layer decay, schedule logging."""

import math

import pytest

from fastvit.train.loop import TrainConfig, train
from helpers import losses, metrics

TINY_OVERRIDES = dict(img_size=8, patch_size=4, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize("amp, extra", [("bf16", dict(grad_checkpointing=True, layer_decay=0.75)),
                                        ("fp16", dict(augment="none", objective="mpp")),
                                        ("off", dict(warmup=0, weight_decay=0.0))])
def test_options_train_and_log_the_schedule(tmp_path, amp, extra):
    cfg = TrainConfig(model="vit_tiny_patch16_224", overrides=TINY_OVERRIDES, steps=6, batch_size=32, lr=1e-2,
                      amp=amp, out=str(tmp_path), progress=False, eval_every=6, **{"warmup": 3, **extra})
    summary = train(cfg, log=lambda *_: None)
    assert summary["finished"] and summary["step"] == 6
    ls = losses(tmp_path)
    assert sorted(ls) == list(range(1, 7)) and all(math.isfinite(v) for v in ls.values())
    lrs = [r["lr"] for r in metrics(tmp_path) if "lr" in r]
    warmup = cfg.warmup
    for i, lr in enumerate(lrs):  # the base rate used at step i + 1: warmup, then cosine over the rest
        want = (i + 1) / warmup if i < warmup else 0.5 * (1 + math.cos(math.pi * (i - warmup) / (6 - warmup)))
        assert lr == pytest.approx(1e-2 * want), i
    assert (tmp_path / "model.safetensors").is_file()
