"""fastvit.bench: FLOP count, GPU peak table, timing, records, `fastvit bench`, and the
pytest-benchmark suite's JSON. Everything here runs on the CPU with small models."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fastvit
from fastvit import bench, cli, compare

ROOT = Path(__file__).resolve().parents[1]
# A small ViT-Ti: 2 blocks at 32x32 (5 tokens); the preset name still picks timm's model.
TINY = (("img_size", 32), ("depth", 2))


# -- FLOPs ------------------------------------------------------------------------------


def test_vit_b16_macs_match_timm():
    cfg = fastvit.get_config("vit_base_patch16_224")
    macs = bench.forward_macs(cfg)
    assert abs(macs / 17.58e9 - 1) < 0.005, macs  # timm's count (NOTES.md)
    assert bench.flop_per_image(cfg) == 2 * macs
    assert bench.flop_per_image(cfg, "training") == 6 * macs
    with pytest.raises(ValueError, match="unknown mode"):
        bench.flop_per_image(cfg, "train")


@pytest.mark.parametrize(
    "cfg",
    [
        fastvit.get_config("vit_tiny_patch16_224"),
        fastvit.ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10, representation_size=16, distilled=True),
        fastvit.ViTConfig(img_size=(32, 48), patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10, global_pool="avg", class_token=False),
        # hybrids: the ResNet stem's convolutions count too (odd maps exercise SAME padding's ceil)
        fastvit.ViTConfig(img_size=(40, 56), patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10, hybrid_layers=(1, 1)),
        fastvit.ViTConfig(img_size=48, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0, hybrid_layers=(2, 1, 1)),
        # the modern options: registers (tokens the blocks see beyond the position embedding's),
        # SwiGLU's packed fc1, the attention-pool head
        fastvit.ViTConfig(img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2, num_classes=5, reg_tokens=4,
                          no_embed_class=True, init_values=1e-5),
        fastvit.ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=5, mlp_layer="swiglu",
                          act_layer="silu", mlp_ratio=5.0),
        fastvit.ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=5, class_token=False,
                          global_pool="map"),
    ],
    ids=["vit_tiny", "distilled+pre_logits", "avg_pool-rectangular", "hybrid-2-stages", "hybrid-3-stages",
         "registers", "swiglu", "map_pool"],
)
def test_macs_equal_torch_flop_counter(cfg):
    """The analytic count equals what torch's FlopCounterMode sees (eager attention: CPU SDPA is not counted,
    so the attention pool's two latent-query products are taken out of the expected count)."""
    model = fastvit.VisionTransformer(cfg.replace(attn_impl="eager")).eval()
    with FlopCounterMode(display=False) as counter:  # (forward only; its module tracker needs grad mode)
        model(torch.randn(1, cfg.in_chans, *cfg.img_size))
    uncounted = 2 * (2 * cfg.num_patches * cfg.embed_dim) if cfg.global_pool == "map" else 0
    assert counter.get_total_flops() == bench.flop_per_image(cfg) - uncounted


# -- peaks and names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "gpu,dtype,tf32,peak",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", False, 989),
        ("NVIDIA H100 SXM5 80GB", "fp16", False, 989),
        ("NVIDIA H100 PCIe", "bf16", False, 756),
        ("NVIDIA H200", "bf16", False, 989),
        ("NVIDIA A100-SXM4-80GB", "bf16", False, 312),
        ("NVIDIA A100-SXM4-40GB", "fp32", False, 19.5),
        ("NVIDIA A100 80GB PCIe", "fp32", True, 156),
        ("NVIDIA L40S", "bf16", False, 362),
        ("NVIDIA L4", "bf16", False, 121),
        ("NVIDIA GeForce RTX 4090", "bf16", False, 165),
        ("NVIDIA A10", "bf16", False, 125),
        ("Tesla V100-SXM2-16GB", "fp16", False, 125),
        ("Tesla V100-SXM2-16GB", "bf16", False, None),  # no bf16 tensor cores
        ("NVIDIA L40", "bf16", False, None),  # not "L4", not "L40S": unknown -> measured on the GPU
        ("NVIDIA B200", "bf16", False, None),
    ],
)
def test_peak_table(gpu, dtype, tf32, peak):
    value, source = bench.table_peak(gpu, dtype, tf32=tf32)
    assert value == peak, source
    assert source


def test_device_slug():
    cuda = dict(device_type="cuda")
    assert bench.device_slug(dict(cuda, device="NVIDIA H100 80GB HBM3")) == "h100-sxm"
    assert bench.device_slug(dict(cuda, device="NVIDIA H200")) == "h200"
    assert bench.device_slug(dict(cuda, device="NVIDIA A100-SXM4-80GB")) == "a100-sxm4-80gb"
    assert bench.device_slug(dict(cuda, device="NVIDIA GeForce RTX 4090")) == "rtx-4090"
    assert bench.device_slug(dict(device_type="cpu", device="cpu")) == "cpu"
    env = bench.environment("cpu")
    assert bench.default_output(env, datetime.date(2026, 11, 22)) == Path("bench-out/cpu-2026-11-22.json")


def test_cpu_peak_is_none():
    assert bench.peak_tflops("cpu", "fp32")[0] is None


# -- variants -------------------------------------------------------------------------------


def test_variants():
    v = bench.get_variant("fused+compile")
    assert v.compile and v.base == "fused" and dict(v.overrides)["attn_impl"] == "triton"
    assert dict(bench.get_variant("reference").overrides) == dict(attn_impl="eager", norm_impl="torch", linear_impl="torch")
    assert not bench.get_variant("sdpa").compile
    with pytest.raises(ValueError, match="valid: reference, reference\\+compile"):
        bench.get_variant("fast")
    for name in bench.CUDA_DEFAULTS["variants"] + bench.CPU_DEFAULTS["variants"]:
        bench.get_variant(name)


def test_unavailable_reasons_on_cpu():
    cfg = fastvit.get_config("vit_tiny_patch16_224")
    assert "CUDA" in bench.unavailable_reason(bench.get_variant("fused"), cfg, "cpu", "fp32", "inference")
    assert bench.unavailable_reason(bench.get_variant("sdpa+compile"), cfg, "cpu", "fp32", "inference") is None
    headless = cfg.replace(num_classes=0)
    assert "num_classes" in bench.unavailable_reason(bench.get_variant("sdpa"), headless, "cpu", "fp32", "training")
    avg = cfg.replace(global_pool="avg")
    if importlib_ok("transformers"):
        assert "Hugging Face" in bench.unavailable_reason(bench.get_variant("hf"), avg, "cpu", "fp32", "inference")


def importlib_ok(name: str) -> bool:
    try:
        __import__(name)
    except Exception:  # noqa: BLE001
        return False
    return True


# -- timing ----------------------------------------------------------------------------------


def test_time_case_rotates_buffers_and_keeps_warmup_out():
    seen = []

    def step(i):
        seen.append(i)
        time.sleep(0.002)
        return torch.tensor([float(i)])

    timing = bench.time_case(step, [(0,), (1,), (2,)], device="cpu", rounds=5, warmup=2, check=lambda out: out.item())
    assert timing.check == 0.0  # the first call read buffer 0
    assert seen == [i % 3 for i in range(8)]  # first call + 2 warm-up + 5 rounds, buffers in turn
    assert len(timing.times) == 5 and timing.iters_per_round == 1 and timing.warmup_iters == 3
    assert all(t >= 0.002 for t in timing.times)
    assert timing.median_s == sorted(timing.times)[2]
    assert timing.peak_mem_bytes is None


def test_time_case_sizes_rounds_for_short_calls(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(fastvit.timing, "clock", lambda: now[0])  # each call takes exactly 1 ms of this clock

    def step():
        now[0] += 0.001

    timing = bench.time_case(step, [()], device="cpu", rounds=2, warmup=1, min_round_s=0.01)
    assert timing.iters_per_round == 10
    assert timing.median_s == pytest.approx(0.001)  # per call, not per round


def test_parity():
    ref = torch.tensor([1.0, -4.0, 2.0])
    p = bench.parity(torch.tensor([1.0, -4.0, 2.5]), ref)
    assert p == dict(max_abs_err=0.5, max_rel_err=0.125)


# -- model cases -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_context():
    return bench.ModelContext("vit_tiny_patch16_224", "fp32", 2, "cpu", overrides=TINY)


def _case(variant, mode="inference"):
    return bench.ModelCase("vit_tiny_patch16_224", variant, mode, "fp32", 2, TINY)


def _check_record(record, ctx, case):
    assert tuple(record) == bench.RECORD_FIELDS
    assert record["status"] == "ok", record["reason"]
    assert (record["kind"], record["model"], record["variant"], record["mode"]) == ("model", case.model, case.variant, case.mode)
    assert (record["dtype"], record["batch"]) == ("fp32", 2)
    seconds = record["ms_per_iter"] / 1e3
    assert record["images_per_s"] == pytest.approx(2 / seconds)
    assert record["flop_per_iter"] == 2 * bench.flop_per_image(ctx.cfg, case.mode)
    assert record["tflops"] == pytest.approx(record["flop_per_iter"] / seconds / 1e12)
    assert record["mfu"] is None and record["peak_tflops"] is None and record["peak_mem_bytes"] is None
    assert len(record["round_ms"]) == record["rounds"] == 2
    assert record["device"] == "cpu" and record["torch"] == torch.__version__ and record["fastvit"] == fastvit.__version__
    assert record["config"]["depth"] == 2 and record["config"]["img_size"] == [32, 32]
    json.dumps(record)  # serialisable as it is


def test_run_model_case_inference_and_training(tiny_context):
    records = []
    for variant, mode in [("reference", "inference"), ("sdpa", "inference"), ("reference", "training"), ("sdpa", "training")]:
        case = _case(variant, mode)
        records.append(bench.run_model_case(case, tiny_context, rounds=2, warmup=1))
        _check_record(records[-1], tiny_context, case)
    ref_inf, sdpa_inf, ref_train, sdpa_train = records
    assert ref_inf["max_rel_err"] == 0.0  # fp32 eager against itself
    assert sdpa_inf["max_rel_err"] < 1e-5 and sdpa_train["max_rel_err"] < 1e-5
    assert ref_train["gflop_per_image"] == pytest.approx(3 * ref_inf["gflop_per_image"])
    assert ref_inf["compile"] is False and ref_inf["compile_s"] is None
    bench.add_speedups(records)
    assert ref_inf["speedup_vs_reference"] == 1.0 and ref_train["speedup_vs_reference"] == 1.0
    assert sdpa_inf["speedup_vs_reference"] == pytest.approx(sdpa_inf["images_per_s"] / ref_inf["images_per_s"])
    assert sdpa_train["speedup_vs_reference"] == pytest.approx(sdpa_train["images_per_s"] / ref_train["images_per_s"])
    table = bench.format_table(records, warnings=False)
    assert table.splitlines()[1].split() == ["variant", "mode", "images/s", "spread", "vs", "ref", "MFU", "max", "err", "peak", "mem",
                                             "compile", "s"]  # fmt: skip
    assert len(table.splitlines()) == 2 + 4
    # 2 blocks at 32x32 is not ViT-Ti: the title says so
    assert "[TOY RUN: img_size=32x32, depth=2, embed_dim=192; not a measurement of vit_tiny_patch16_224]" in table.splitlines()[0]
    for line, r in zip(table.splitlines()[2:], records):
        assert line.split()[3] == f"{100 * bench.spread(r):.0f}%" + ("!" if bench.spread(r) > 0.1 else "")
        a, b = r["round_ms"]  # two rounds: the median is their mean
        assert bench.spread(r) == pytest.approx(abs(a - b) / ((a + b) / 2)) == pytest.approx(r["spread"])


def test_compiled_variant_records_compile_time(tiny_context, monkeypatch):
    monkeypatch.setattr(bench.cases, "COMPILE_KWARGS", {"backend": "eager"})  # the +compile path without inductor's C++ build
    case = _case("sdpa+compile")
    record = bench.run_model_case(case, tiny_context, rounds=2, warmup=1)
    _check_record(record, tiny_context, case)
    assert record["compile"] is True and record["compile_s"] > 0
    assert record["max_rel_err"] < 1e-5


def test_unavailable_variants_are_skipped_not_raised(tiny_context):
    fused = bench.run_model_case(_case("fused"), tiny_context, rounds=1, warmup=0)
    assert fused["status"] == "skipped" and "CUDA" in fused["reason"]
    assert tuple(fused) == bench.RECORD_FIELDS and fused["images_per_s"] is None
    for variant in ("timm", "hf"):
        record = bench.run_model_case(_case(variant), tiny_context, rounds=1, warmup=0)
        assert record["status"] in ("ok", "skipped"), record["reason"]
        if record["status"] == "ok":  # same weights, another implementation
            assert record["max_rel_err"] < 1e-5
        else:
            assert variant in record["reason"].lower() or "transformers" in record["reason"]


def test_errors_are_recorded_or_raised(tiny_context, monkeypatch):
    def broken(variant, ctx):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(bench.cases, "build_model", broken)  # patched where run_model_case looks it up
    record = bench.run_model_case(_case("sdpa"), tiny_context, rounds=1, warmup=0)
    assert (record["status"], record["reason"]) == ("error", "RuntimeError: boom")
    with pytest.raises(RuntimeError, match="boom"):
        bench.run_model_case(_case("sdpa"), tiny_context, rounds=1, warmup=0, raise_errors=True)


def test_context_mismatch_is_an_error(tiny_context):
    with pytest.raises(ValueError, match="does not match"):
        bench.run_model_case(bench.ModelCase("vit_tiny_patch16_224", "sdpa", batch=4, dtype="fp32"), tiny_context, rounds=1, warmup=0)


def test_make_record_rejects_unknown_fields():
    assert tuple(bench.make_record(kind="model")) == bench.RECORD_FIELDS
    with pytest.raises(KeyError, match="imgs"):
        bench.make_record(imgs=1)


# -- fastvit bench ----------------------------------------------------------------------------


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--batch", "--dtype", "--variants", "--modes", "--rounds", "--out", "--quick", "--no-compile"):
        assert option in out


def test_cpu_settings():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    bench.add_parser(sub)
    settings = bench.resolve_settings(parser.parse_args(["bench"]), "cpu")
    assert (settings["model"], settings["batch"], settings["dtype"]) == ("vit_tiny_patch16_224", 8, "fp32")
    assert settings["variants"] == ["reference", "sdpa", "sdpa+compile"] and settings["modes"] == ["inference"]
    assert bench.resolve_settings(parser.parse_args(["bench", "--no-compile"]), "cpu")["variants"] == ["reference", "sdpa"]
    cuda = bench.resolve_settings(parser.parse_args(["bench", "--modes", "training", "--batch", "64"]), "cuda")
    assert (cuda["model"], cuda["batch"], cuda["dtype"], cuda["modes"]) == ("vit_base_patch16_224", 64, "bf16", ["training"])
    assert "fused+compile" in cuda["variants"] and "timm" in cuda["variants"] and "hf" in cuda["variants"]


def test_cli_bench_writes_results(tmp_path, capsys):
    out = tmp_path / "deep" / "cpu-test.json"
    argv = ["bench", "--device", "cpu", "--batch", "1", "--variants", "reference,sdpa,fused", "--rounds", "1",
            "--warmup", "0", "--out", str(out), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].split()[:4] == ["vit_tiny_patch16_224", "fp32", "batch", "1"]
    assert [line.split()[0] for line in lines[2:5]] == ["reference", "sdpa", "fused"]
    assert "fused inference: skipped: Triton kernels need a CUDA GPU" in printed
    doc = json.loads(out.read_text())
    assert doc["format"] == bench.FORMAT and doc["env"]["device"] == "cpu"
    records = doc["records"]
    assert [(r["variant"], r["status"]) for r in records] == [("reference", "ok"), ("sdpa", "ok"), ("fused", "skipped")]
    assert all(tuple(r) == bench.RECORD_FIELDS for r in records)
    assert records[1]["speedup_vs_reference"] == pytest.approx(records[0]["ms_per_iter"] / records[1]["ms_per_iter"])


def test_cli_bench_rejects_bad_options(capsys):
    assert cli.main(["bench", "--device", "cpu", "--variants", "reference,fastest"]) == 2
    assert "unknown variant 'fastest'" in capsys.readouterr().err
    assert cli.main(["bench", "--device", "cpu", "--model", "vit_base"]) == 2
    assert cli.main(["bench", "--device", "cpu", "--modes", "train"]) == 2


# -- the pytest-benchmark suite -----------------------------------------------------------------


def test_benchmark_suite_json_carries_records(tmp_path):
    """One model-throughput case of benchmarks/ through pytest-benchmark: its JSON holds the record."""
    out = tmp_path / "pytest-benchmark.json"
    case = "vit_base_patch16_224-bf16-b256-reference-inference" if torch.cuda.is_available() else "vit_tiny_patch16_224-fp32-b4-reference-inference"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "--benchmark-only", f"--benchmark-json={out}",
           "-k", case, "-q", "-p", "no:cacheprovider"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert len(doc["benchmarks"]) == 1
    entry = doc["benchmarks"][0]
    info = entry["extra_info"]
    assert tuple(info) == bench.RECORD_FIELDS
    assert info["status"] == "ok" and info["variant"] == "reference" and info["speedup_vs_reference"] == 1.0
    assert info["images_per_s"] == pytest.approx(info["batch"] / info["ms_per_iter"] * 1e3)
    assert info["max_rel_err"] < 1e-2 and info["torch"] == torch.__version__
    assert entry["stats"]["rounds"] == info["rounds"]
    # fastvit compare reads pytest-benchmark files too
    assert [r["name"] for r in compare.load_records(out)] == [info["name"]]


def test_kernel_benchmarks_run_on_cpu_in_smoke_mode(tmp_path):
    """benchmarks/test_kernels.py end to end at toy sizes on the CPU (interpreter):
    one case of every op and provider kind, so the CUDA-only suite's code runs in CI.
    The times mean nothing; the records' fields and parity figures are checked."""
    out = tmp_path / "kernels.json"
    env = dict(os.environ, FASTVIT_KERNEL_BENCH_SMOKE="1", TRITON_INTERPRET="1", FASTVIT_AUTOTUNE="0")
    cases = " or ".join((
        "N197-D64-bf16-fwd-sdpa-flash", "N197-D64-bf16-fwd+bwd-triton",
        "add_layer_norm-N768-fwd+bwd-torch]", "add_layer_norm-N768-fwd+bwd-triton",
        "linear_gelu-fwd+bwd-triton", "linear_residual-fwd-torch]", "linear_residual-fwd+bwd-triton",
        "residual_norm and not compile", "junction-N768-torch]", "junction-N768-triton-fork",
    ))  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks" / "test_kernels.py"), "--benchmark-only",
           f"--benchmark-json={out}", "-k", cases, "-q", "-p", "no:cacheprovider"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    records = [entry["extra_info"] for entry in json.loads(out.read_text())["benchmarks"]]
    names = sorted((r["op"], r["variant"], r["mode"]) for r in records)
    expected = [("attention", "sdpa-flash", "fwd"), ("attention", "triton", "fwd+bwd"),
                ("add_layer_norm", "torch", "fwd+bwd"), ("add_layer_norm", "triton", "fwd+bwd"),
                ("linear_gelu", "triton", "fwd+bwd"), ("linear_residual", "torch", "fwd"),
                ("linear_residual", "triton", "fwd+bwd")]
    expected += [("residual_norm", p, m) for p in ("torch", "triton-epilogue", "cublas+add-norm") for m in ("fwd", "fwd+bwd")]
    expected += [("layer_norm_junction", p, "fwd+bwd") for p in ("torch", "triton-fork")]
    assert names == sorted(expected)  # fmt: skip
    for r in records:
        assert tuple(r) == bench.RECORD_FIELDS and r["status"] == "ok" and r["device"] == "cpu", r
        assert r["max_rel_err"] < 2e-2, (r["name"], r["max_rel_err"])  # bf16 against an fp32 reference
        assert (r["tflops"] or r["gbps"]) > 0
    speedups = {(r["op"], r["variant"], r["mode"]): r["speedup_vs_reference"] for r in records}
    assert speedups[("residual_norm", "torch", "fwd")] == 1.0
    assert speedups[("layer_norm_junction", "torch", "fwd+bwd")] == 1.0 and speedups[("layer_norm_junction", "triton-fork", "fwd+bwd")] > 0
    assert speedups[("add_layer_norm", "triton", "fwd+bwd")] > 0 and speedups[("attention", "triton", "fwd+bwd")] is None


# -- how much to trust a benchmark: interleaving, spread, load, nothing to run ------------------


class _VirtualTime:
    """A clock the tests own: every fake model call advances it by the variant's cost,
    times a factor that grows with the time already spent (a machine slowing down during the run)."""

    def __init__(self, drift_per_s: float = 0.0, alternate: float = 0.0):
        self.now, self.calls, self.drift, self.alternate = 0.0, 0, drift_per_s, alternate

    def __call__(self) -> float:
        return self.now

    def spend(self, cost: float) -> None:
        self.calls += 1
        wobble = 1 + (self.alternate if self.calls % 2 else -self.alternate)
        self.now += cost * (1 + self.drift * self.now) * wobble


COSTS = {"reference": 0.002, "sdpa": 0.001}  # seconds per call: sdpa is truly 2x faster


def _fake_models(monkeypatch, clock: _VirtualTime):
    """Replace the timer's clock and the variants' models: a call costs COSTS[variant] of virtual time."""

    class Fake(torch.nn.Module):
        def __init__(self, cost, num_classes):
            super().__init__()
            self.cost, self.num_classes = cost, num_classes

        def forward(self, x):
            clock.spend(self.cost)
            return torch.zeros(x.shape[0], self.num_classes)

    monkeypatch.setattr(fastvit.timing, "clock", clock)
    monkeypatch.setattr(bench.cases, "build_model", lambda variant, ctx: Fake(COSTS[variant.base], ctx.cfg.num_classes))


def _cli_speedup(tmp_path, variants: str, rounds: int = 8) -> tuple[float, list[dict]]:
    out = tmp_path / f"{variants.replace(',', '-')}.json"
    argv = ["bench", "--device", "cpu", "--model", "vit_tiny_patch16_224", "--batch", "1", "--variants", variants,
            "--rounds", str(rounds), "--warmup", "1", "--out", str(out), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    records = {r["variant"]: r for r in json.loads(out.read_text())["records"]}
    return records["sdpa"]["speedup_vs_reference"], list(records.values())


def test_variant_order_does_not_change_ratios(tmp_path, monkeypatch):
    """On a machine that slows down by 20% every 10 ms of (virtual) time, the old way (each variant's rounds
    one after another) favours whichever variant runs first; interleaved rounds give the same ratio in either order."""
    clock = _VirtualTime(drift_per_s=20.0)
    _fake_models(monkeypatch, clock)
    forward, _ = _cli_speedup(tmp_path, "reference,sdpa")
    clock.now = 0.0
    backward, _ = _cli_speedup(tmp_path, "sdpa,reference")
    assert forward == pytest.approx(backward, rel=0.02), (forward, backward)
    assert forward == pytest.approx(2.0, rel=0.1)

    # the control: the same clock and models measured one variant after the other
    def sequential(order):
        clock.now = 0.0
        times = {}
        for name in order:
            timing = bench.time_case(lambda: clock.spend(COSTS[name]), [()], device="cpu", rounds=8, warmup=1)
            times[name] = timing.median_s
        return times["reference"] / times["sdpa"]

    assert abs(sequential(["reference", "sdpa"]) - sequential(["sdpa", "reference"])) > 0.5  # 1.50 vs 2.71


def test_measure_interleaved_rotates_the_order():
    seen = []
    timers = [bench.Timer(lambda i=i: seen.append(i), [()], "cpu") for i in range(3)]
    bench.measure_interleaved(timers, rounds=3)
    assert seen == [0, 1, 2, 1, 2, 0, 2, 0, 1]
    assert all(len(t.times) == 3 for t in timers)


def test_interleaved_case_that_fails_is_an_error_record_the_others_still_run(tiny_context, monkeypatch):
    clock = _VirtualTime()
    _fake_models(monkeypatch, clock)
    calls = {"n": 0}
    original = clock.spend

    def spend(cost):
        if cost == COSTS["sdpa"]:
            calls["n"] += 1
            if calls["n"] > 3:  # first call and warm-up pass, a timed round raises
                raise RuntimeError("out of memory in round 2")
        original(cost)

    clock.spend = spend
    records = bench.run_model_cases([_case("reference"), _case("sdpa"), _case("fused")], tiny_context, rounds=4, warmup=1)
    assert [r["status"] for r in records] == ["ok", "error", "skipped"]
    assert records[1]["reason"] == "RuntimeError: out of memory in round 2"
    assert records[0]["rounds"] == 4 and records[0]["label"] == "toy"


def test_noisy_rounds_and_a_loaded_machine_are_warned(tmp_path, monkeypatch, capsys):
    clock = _VirtualTime(alternate=0.3)  # every other call 30% slower, 30% faster: a spread of ~86%
    _fake_models(monkeypatch, clock)
    monkeypatch.setattr(fastvit.timing, "machine_load", lambda: (9.0, 2))
    _, records = _cli_speedup(tmp_path, "reference,sdpa", rounds=4)
    captured = capsys.readouterr()
    assert "fastvit bench: warning: 2 of 2 measurements vary by more than 10% between rounds" in captured.err
    assert "fastvit bench: warning: the machine was loaded: 1-minute load average 9.0 on 2 cores" in captured.err
    rows = [line.split() for line in captured.out.splitlines()[2:4]]
    assert [row[3] for row in rows] == [f"{100 * bench.spread(r):.0f}%!" for r in records]
    assert all(bench.spread(r) > 0.5 for r in records)


def test_a_single_round_has_no_spread(tmp_path, monkeypatch, capsys):
    """One timed round (gpu-check --smoke's way) shows no spread ("0%" would claim a quiet measurement) and says so."""
    _fake_models(monkeypatch, _VirtualTime())
    monkeypatch.setattr(fastvit.timing, "machine_load", lambda: (0.5, 2))
    _, records = _cli_speedup(tmp_path, "reference,sdpa", rounds=1)
    captured = capsys.readouterr()
    assert [line.split()[3] for line in captured.out.splitlines()[2:4]] == ["-", "-"]
    assert all(bench.spread(r) is None and r["spread"] is None for r in records)
    assert "warning: 2 of 2 measurements were timed in a single round: their noise is unknown" in captured.err


def test_a_quiet_run_is_not_warned(tmp_path, monkeypatch, capsys):
    _fake_models(monkeypatch, _VirtualTime())
    monkeypatch.setattr(fastvit.timing, "machine_load", lambda: (0.5, 2))
    _cli_speedup(tmp_path, "reference,sdpa", rounds=3)
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    assert [line.split()[3] for line in captured.out.splitlines()[2:4]] == ["0%", "0%"]


def test_bench_with_no_runnable_variant_fails(tmp_path, monkeypatch, capsys):
    """`--variants timm,hf` where neither package is installed: exit 2 with why, before any work."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("timm", "transformers") else real(name, *a))
    monkeypatch.setattr(bench.command, "ModelContext", lambda *a, **k: pytest.fail("the benchmark started"))
    out = tmp_path / "r.json"
    assert cli.main(["bench", "--device", "cpu", "--variants", "timm,hf", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "fastvit bench: error: none of the variants can run here" in err
    assert "timm inference: timm is not installed" in err and "hf inference: transformers is not installed" in err


def test_bench_that_measured_nothing_fails(tmp_path, monkeypatch, capsys):
    """Available in principle, but every case failed: exit 1 with a message, not 0."""
    monkeypatch.setattr(bench.cases, "build_model", lambda variant, ctx: (_ for _ in ()).throw(RuntimeError("no")))
    out = tmp_path / "r.json"
    assert cli.main(["bench", "--device", "cpu", "--model", "vit_tiny_patch16_224", "--batch", "1", "--variants", "sdpa",
                     "--rounds", "1", "--out", str(out), "--no-progress"]) == 1  # fmt: skip
    assert "nothing was measured" in capsys.readouterr().err
