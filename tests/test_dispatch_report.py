"""``auto`` made visible: ``fastvit info``'s auto section and the ``dispatch`` field of bench records."""

import pytest
import torch

from fastvit import bench, cli, dispatch
from fastvit.auto_report import auto_report, model_calls

TINY = (("img_size", 32), ("depth", 2))


def _torch_wins(fn, args):
    """Torch candidates 1 ms, kernels 2 ms, the restricted SDPA backends raise (nothing is run)."""
    name = fn.__name__
    if name.startswith("_sdpa_") and name != "_sdpa_packed":
        raise RuntimeError("No available kernel")
    return 2e-3 if "triton" in name else 1e-3


@pytest.fixture
def gpu_like(tmp_path, monkeypatch):
    # check=False: the correctness gate would run the Triton kernels through the interpreter at full model
    # shapes (minutes); the gate is tested in test_dispatch_gate.py and tests/layers/test_auto_layers.py
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    d = dispatch.Dispatcher(timer=_torch_wins, cache_dir=tmp_path, on_cuda=lambda args: True,
                            device_name=lambda args: "FakeGPU", versions={"test": "1"}, check=False)
    with dispatch.using(d):
        yield d


def test_info_off_cuda_says_torch_and_why(capsys, monkeypatch):
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    if torch.cuda.is_available():
        pytest.skip("the CPU wording")
    assert cli.main(["info", "--model", "vit_tiny_patch16_224", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "auto on cpu for vit_tiny_patch16_224, batch 2, fp32, 197 tokens: torch" in out and "CUDA only" in out
    for op in ("layer_norm", "layer_norm_fork", "linear_gelu", "linear_residual", "attention_packed"):
        assert f"  {op} " in out
    assert "sdpa-cudnn (torch)" in out and "triton (kernel)" in out
    assert "FASTVIT_DISPATCH=measure" in out and str(dispatch.cache_dir()) in out


@pytest.mark.parametrize("argv,message", [(["--model", "vit_bse"], "unknown model"), (["--batch", "0"], "positive integer"),
                                          (["--dtype", "int8"], "invalid choice")])
def test_info_misuse(capsys, argv, message):
    try:
        rc = cli.main(["info", *argv])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    assert rc == 2
    captured = capsys.readouterr()
    assert message in captured.err and "fastvit " not in captured.out[:10]


def test_info_bad_policy(capsys, monkeypatch):
    monkeypatch.setenv("FASTVIT_DISPATCH", "fastest")
    assert cli.main(["info"]) == 2
    assert "valid: measure, kernel, torch" in capsys.readouterr().err


def test_auto_report_measures_the_models_shapes(gpu_like):
    lines = "\n".join(auto_report("vit_tiny_patch16_224", 4, "fp32", "cpu"))
    assert "auto on FakeGPU for vit_tiny_patch16_224, batch 4, fp32, 197 tokens (inference):" in lines
    rows = 4 * 197  # -> 1024
    for label, op, key in [("norm1, norm2", "layer_norm_fork", ["float32", None, 1024, 192, True]),
                           ("attention", "attention_packed", ["float32", 4, 3, 197, 64]),
                           ("attn.proj + residual", "linear_residual", ["float32", "float32", 1024, 192, 192, True, False, None]),
                           ("mlp.fc1 + act", "linear_gelu", ["float32", "none", 1024, 768, 192, True]),
                           ("mlp.fc2 + residual", "linear_residual", ["float32", "float32", 1024, 192, 768, True, False, None])]:
        assert f"{label:<20} {op:<17} -> {'sdpa' if op.startswith('attention') else 'torch':<15} [measured]" in lines, label
        assert f"key {key}" in lines, key
    assert "torch 1.0000 ms, triton 2.0000 ms" in lines
    assert "sdpa-efficient: raised RuntimeError: No available kernel" in lines
    assert "triton: dtype float32: auto offers the Triton attention kernel for float16 and bfloat16" in lines
    assert rows == 788 and dispatch.bucket(rows) == 1024


@pytest.mark.parametrize("model,tokens", [
    ("vit_base_patch14_reg4_dinov2", 1 + 4 + 37 * 37),  # class + 4 registers + 518/14 squared patches: 1374
    ("deit3_base_patch16_224", 1 + 14 * 14),  # no_embed_class: the pos embedding covers 196, the blocks see 197
    ("vit_base_patch16_224", 197),
])
def test_info_reports_the_models_real_sequence_length(model, tokens, gpu_like, capsys):
    """The keys auto measures carry the length the model's blocks see (not the position embedding's)."""
    from fastvit.presets import get_config

    cfg = get_config(model)
    assert cfg.seq_len == tokens  # the config's count, checked against the architecture by hand above
    lines = "\n".join(auto_report(model, 1, "fp32", "cpu"))
    assert f"batch 1, fp32, {tokens} tokens (inference):" in lines
    attention = [r for r in gpu_like.choices() if r["op"] == "attention_packed"]
    assert [r["key"][3] for r in attention] == [tokens]  # (dtype, batch bucket, heads, tokens, head_dim)
    assert all(r["key"][2] == dispatch.bucket(tokens) for r in gpu_like.choices() if r["op"] == "layer_norm_fork")
    # the CLI off CUDA says it too
    with dispatch.using(dispatch.Dispatcher(cache_dir=None)):
        assert cli.main(["info", "--model", model, "--batch", "1"]) == 0
    assert f"auto on cpu for {model}, batch 1, fp32, {tokens} tokens: torch" in capsys.readouterr().out


def test_model_calls_follow_the_config():
    from fastvit.presets import get_config

    cfg = get_config("vit_small_patch16_224")
    calls = {label: args for label, _, args in model_calls(cfg, 3, torch.float32, "cpu")}
    assert calls["attention"][0].shape == (3, 197, 3, 6, 64)
    assert calls["mlp.fc2 + residual"][0].shape == (3, 197, 1536)
    assert len(calls["mlp.fc2 + residual"]) == 2  # no LayerScale: no gamma
    # LayerScale (DeiT III): the residual GEMMs get gamma; registers (DINOv2 reg4) lengthen the sequence
    calls = {label: args for label, _, args in model_calls(get_config("deit3_small_patch16_224"), 1, torch.float32, "cpu")}
    assert calls["attn.proj + residual"][2].shape == (384,) and calls["mlp.fc2 + residual"][2].shape == (384,)
    calls = {label: args for label, _, args in model_calls(get_config("vit_small_patch14_reg4_dinov2"), 1, torch.float32, "cpu")}
    assert calls["attention"][0].shape[1] == 1374 and calls["norm1, norm2"][0].shape == (1, 1374, 384)


def test_bench_records_the_choices(gpu_like, monkeypatch):
    ctx = bench.ModelContext("vit_tiny_patch16_224", "fp32", 2, "cpu", overrides=TINY)
    real = bench.cases.build_model

    class Dispatching(torch.nn.Module):  # the model, behind one dispatched op
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            from fastvit.layers import auto

            auto.AutoLayerNorm(x.shape[-1])(x)
            return self.model(x)

    monkeypatch.setattr(bench.cases, "build_model", lambda variant, ctx: Dispatching(real(variant, ctx)))
    record = bench.run_model_case(bench.ModelCase("vit_tiny_patch16_224", "sdpa", "inference", "fp32", 2, TINY), ctx, rounds=1, warmup=0)
    assert record["status"] == "ok", record["reason"]
    assert record["dispatch"] == [{"op": "layer_norm", "key": ["float32", None, 256, 32, True], "chosen": "torch", "source": "measured"}]
    assert tuple(record) == bench.RECORD_FIELDS


def test_bench_record_without_choices():
    ctx = bench.ModelContext("vit_tiny_patch16_224", "fp32", 2, "cpu", overrides=TINY)
    record = bench.run_model_case(bench.ModelCase("vit_tiny_patch16_224", "sdpa", "inference", "fp32", 2, TINY), ctx, rounds=1, warmup=0)
    assert record["status"] == "ok" and record["dispatch"] is None
    assert bench.records.dispatch_summary([]) is None


@pytest.mark.parametrize("model,expected,absent", [
    ("vit_so400m_patch14_siglip_384", ["attention-pool head"], ["SwiGLU", "qk-norm"]),
    ("vit_giant_patch14_dinov2", ["SwiGLU MLP"], ["attention-pool"]),
    ("vit_base_patch16_clip_quickgelu_224", ["patch embedding"], ["SwiGLU", "attention-pool", "activation"]),
    ("vit_base_r50_s16_384", ["ResNetV2 stem"], ["SwiGLU"]),
])
def test_info_lists_what_runs_unfused_for_the_model(model, expected, absent):
    """Issue 14: whatever still falls back is listed for the model at hand (here off CUDA)."""
    lines = "\n".join(auto_report(model, 2, "fp32", "cpu"))
    assert f"runs as PyTorch ops in {model}" in lines
    assert all(e in lines for e in expected), lines
    assert not any(a in lines for a in absent), lines
