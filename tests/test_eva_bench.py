"""``fastvit bench`` on the eva family: the analytic FLOP count against torch's counter, model cases of
tiny DINOv3 / EVA-02 builds on the CPU, and the command line naming the two presets. Against timm
itself (the "timm" variant): tests/interop/test_timm_eva_bench.py."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fastvit
from fastvit import bench, cli
from fastvit.eva import Eva, EvaConfig

TINY = (("img_size", 32), ("embed_dim", 32), ("depth", 2), ("num_heads", 2), ("num_classes", 10))  # DINOv3 has no head


@pytest.mark.parametrize("name, overrides", [
    ("vit_base_patch16_dinov3", dict(img_size=32)),  # registers, SwiGLU-free, LayerScale
    ("eva02_base_patch14_224", dict(img_size=28)),  # SwiGLU (packed fc1), the inner norm
    ("vit_small_plus_patch16_dinov3", dict(img_size=32, swiglu_align_to=16)),  # split SwiGLU, aligned width
    ("vit_pe_core_tiny_patch16_384", dict(img_size=32)),  # the attention-pool head
])
def test_eva_macs_equal_torch_flop_counter(name, overrides):
    cfg = fastvit.get_config(name, embed_dim=32, depth=2, num_heads=2, num_classes=7, attn_impl="eager", **overrides)
    assert isinstance(cfg, EvaConfig)
    model = Eva(cfg).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, *cfg.img_size))
    t = cfg.grid_size[0] * cfg.grid_size[1] + cfg.num_prefix_tokens
    uncounted = 2 * (2 * t * cfg.embed_dim) if cfg.global_pool == "map" else 0  # the pool's CPU SDPA is not counted
    assert counter.get_total_flops() == bench.flop_per_image(cfg) - uncounted


def test_eva_b_macs_match_timm():
    """Known values: torch's FlopCounterMode over timm 1.0.29's own models (attention unfused so its matmuls
    are counted), one image at the native size, halved: EVA-02-B/14 at 224, DINOv3-B/16 at 256."""
    assert bench.forward_macs(fastvit.get_config("eva02_base_patch14_224")) == 23_161_227_264
    assert bench.forward_macs(fastvit.get_config("vit_base_patch16_dinov3")) == 23_574_546_432


@pytest.mark.parametrize("model", ["vit_base_patch16_dinov3", "eva02_base_patch14_224"])
def test_eva_model_cases_run_on_cpu(model):
    ctx = bench.ModelContext(model, "fp32", 2, "cpu", overrides=TINY)
    assert isinstance(ctx.cfg, EvaConfig)
    records = [bench.run_model_case(bench.ModelCase(model, v, m, "fp32", 2, TINY), ctx, rounds=1, warmup=0)
               for v, m in (("reference", "inference"), ("sdpa", "inference"), ("auto", "training"), ("fused", "inference"),
                            ("hf", "inference"))]  # fmt: skip
    ref, sdpa, auto, fused, hf = records
    for r in (ref, sdpa, auto):
        assert r["status"] == "ok", r["reason"]
        assert r["model"] == model and r["config"]["depth"] == 2 and r["label"] == "toy"
        assert r["gflop_per_image"] * 1e9 == pytest.approx(bench.flop_per_image(ctx.cfg, r["mode"]))
    assert ref["max_rel_err"] == 0.0 and sdpa["max_rel_err"] < 1e-5 and auto["max_rel_err"] < 1e-4
    assert fused["status"] == "skipped" and "CUDA" in fused["reason"]
    assert hf["status"] == "skipped"


def run_cli_tiny(monkeypatch, out, model, variants):
    """``fastvit bench --model MODEL`` on the CPU, the cases and context cut down to :data:`TINY`
    (the command line and the model's name are what is under test, not the size)."""
    context, case = bench.command.ModelContext, bench.command.ModelCase
    monkeypatch.setattr(bench.command, "ModelContext", lambda *a: context(*a, overrides=TINY))
    monkeypatch.setattr(bench.command, "ModelCase", lambda *a: case(*a, overrides=TINY))
    argv = ["bench", "--device", "cpu", "--model", model, "--batch", "1", "--variants", variants, "--rounds", "1",
            "--warmup", "0", "--out", str(out), "--no-progress"]  # fmt: skip
    code = cli.main(argv)
    return code, json.loads(out.read_text())["records"]


@pytest.mark.parametrize("model", ["vit_base_patch16_dinov3", "eva02_base_patch14_224"])
def test_cli_bench_names_an_eva_model(tmp_path, monkeypatch, model):
    code, records = run_cli_tiny(monkeypatch, tmp_path / "eva.json", model, "reference,sdpa,timm")
    assert code == 0
    assert [(r["model"], r["variant"]) for r in records] == [(model, v) for v in ("reference", "sdpa", "timm")]
    assert [r["status"] for r in records[:2]] == ["ok", "ok"] and records[1]["max_rel_err"] < 1e-5
    assert records[2]["status"] in ("ok", "skipped")  # timm is not installed in every environment (interop: it is)
