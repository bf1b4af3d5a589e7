"""The steps of ``fastvit gpu-check``, each run in its own child process:
``python -m fastvit.gpucheck.steps STEP --out DIR --stamp STAMP --deadline EPOCH --grace S [--smoke]``.

``--deadline`` is absolute (wall clock, set by the parent when it started the
child): imports count against it. Every case's record is appended to the
step's stream as it finishes (:class:`~fastvit.gpucheck.files.Stream`); the
step ends with a status line (:func:`~fastvit.gpucheck.runner.verdict`), also
when the parent interrupts it (SIGINT). Exit status: 0 ok, 1 anything else,
3 from ``env`` when the run cannot go on (no CUDA GPU, Triton cannot compile).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .files import Stream, read_stream, result_path
from .gates import gate
from .runner import ROOT, Clock, injected_delay, log, run_cases, run_pytest, verdict
from .stepenv import step_env


def _device(smoke: bool) -> str:
    return "cpu" if smoke else "cuda"  # never a silent fallback: env has checked that torch sees the GPU


def _finish(a, stream: Stream, cut: bool, **details) -> int:
    got = read_stream(stream.path)
    status, reason = verdict(got["records"], got["planned"], cut)
    stream.end(status, reason, **details)
    log(f"{a.step}: {status}" + (f" ({reason})" if reason else ""))
    return 0 if status == "ok" else 1


def _work_dir(a) -> Path:
    """Where pytest's JUnit XML and benchmark JSON go (kept on the machine, not among the 8 result files)."""
    base = Path(os.environ.get("FASTVIT_GPUCHECK_CACHE") or ROOT / ".cache-gpucheck")
    path = base / "work" / a.stamp
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- parity (ViT-B shape, every op)


def step_parity(a, clock: Clock, stream: Stream) -> int:
    """Every implementation the model can dispatch to, at ViT-B's shape; then the fused model against fp64."""
    from fastvit.bench import environment, make_record

    from . import model, ops

    device, dtype = _device(a.smoke), ("fp32" if a.smoke else "bf16")
    env = environment(device)
    found = ops.candidates(device, dtype, a.smoke)
    shared: dict = {}
    cases = [(f"{op}/{name}", lambda op=op, name=name, c=c_op, impl=impl, why=why: [
        ops.check(op, name, c, impl, why, device=device, dtype=dtype, smoke=a.smoke, env=env, cases=shared)])
        for op, name, c_op, impl, why in found]  # fmt: skip

    def whole_model():
        try:
            return model.fused_model_parity(smoke=a.smoke, device=device)
        except Exception as e:  # noqa: BLE001 - recorded
            return [make_record(name="fused-model-parity", kind="model_parity", status="error",
                                reason=f"{type(e).__name__}: {e}"[:500], **env)]  # fmt: skip

    cases.append(("fused-model-parity", whole_model))
    stream.plan(len(cases))
    return _finish(a, stream, cut=not run_cases(stream, clock, cases))


# --------------------------------------------------------------------------- models

# (variant, mode) in priority order: the headline first (fused vs timm+compile, inference), every
# variant's inference next, then the eager training steps, then the compiled ones (a cold inductor
# compile of a ViT-B training step takes about a minute; a rerun on the same machine reads its cache).
VARIANTS = ("fused", "timm+compile", "fused+compile", "auto", "sdpa", "timm", "auto+compile", "sdpa+compile")
GPU_ORDER = tuple((v, "inference") for v in VARIANTS) + tuple((v, "training") for v in VARIANTS if "+" not in v) + tuple(
    (v, "training") for v in VARIANTS if "+" in v
)
SMOKE_ORDER = tuple((v, m) for v in ("reference", "sdpa", "auto", "fused", "timm", "sdpa+compile") for m in ("inference", "training"))
SMOKE_LABEL = "SMOKE-TOY vit_tiny 32px 1 block, CPU, timed once (not a measurement)"


def step_models(a, clock: Clock, stream: Stream) -> int:
    """ViT-B/16 224 bf16 batch 256, inference and training step, across variants (``fastvit bench`` records)."""
    from fastvit.bench import ModelCase, ModelContext, add_speedups, prepare_device, run_model_case
    from fastvit.bench import cases as bench_cases

    device = _device(a.smoke)
    prepare_device(device)
    if a.smoke:
        model, dtype, batch, overrides, rounds, warmup = "vit_tiny_patch16_224", "fp32", 2, (("img_size", 32), ("depth", 1)), 1, 0
        bench_cases.COMPILE_KWARGS = {"backend": "eager"}  # the +compile path without inductor's C++ build
        order = SMOKE_ORDER
    else:
        model, dtype, batch, overrides, rounds, warmup = "vit_base_patch16_224", "bf16", 256, (), 10, 2
        order = GPU_ORDER
    cases = [ModelCase(model, v, m, dtype, batch, overrides) for v, m in order]
    held: dict = {}
    done: list[dict] = []

    def run(case):
        if "ctx" not in held:
            held["ctx"] = ModelContext(model, dtype, batch, device, overrides)
        record = gate(run_model_case(case, held["ctx"], rounds=rounds, warmup=warmup))
        done.append(record)
        record = add_speedups(list(done))[-1]
        if a.smoke:  # a toy timed once must not read as a ViT-Ti measurement anywhere
            record = dict(record, model=SMOKE_LABEL, name=f"smoke-toy/{record['name']}")
        return [record]

    # a compiled case is not started without time for its compile (tens of seconds on a GPU)
    need = (lambda name: 0.0) if a.smoke else (lambda name: 45.0 if "+compile" in name else 12.0)
    stream.plan(len(cases))
    return _finish(a, stream, cut=not run_cases(stream, clock, [(c.name, lambda c=c: run(c)) for c in cases], need=need))


# --------------------------------------------------------------------------- kernels

# (label, pytest -k expression) in priority order. Each group is its own pytest session, stopped with
# SIGINT at the deadline (pytest-benchmark writes its JSON then); every case is streamed as it ends.
GPU_KERNEL_GROUPS = (
    ("attention", "test_attention and (N197 or N577) and D64"),
    ("linear", "(test_linear or test_mlp) and not compile"),
    ("layer_norm", "(test_layer_norm or test_norm_junction) and not compile"),
    ("residual_norm", "test_residual_norm and not compile"),
    ("inductor", "(test_layer_norm or test_norm_junction or test_linear or test_mlp or test_residual_norm) and compile"),
    ("rope_attention", "test_rope_attention"),
    ("attention-rest", "test_attention and not ((N197 or N577) and D64)"),
    ("varlen_attention", "test_varlen_attention"),
)
SMOKE_KERNEL_GROUPS = (
    ("attention", "N197-D64-bf16-fwd-sdpa-flash or N197-D64-bf16-fwd-triton"),
    ("layer_norm", "layer_norm-N768-fwd-triton and not add"),
    ("linear", "linear_residual-fwd-torch]"),
)


def _reconcile(stream: Stream, extra: list[dict]) -> int:
    """Append the records pytest's own files hold that the stream lacks (a case cut between its end and its line)."""
    seen = {r.get("name") for r in read_stream(stream.path)["records"]}
    added = 0
    for r in extra:
        if r.get("name") not in seen:
            stream.record(r)
            added += 1
    return added


def _benchmark_records(path: Path) -> list[dict]:
    import json

    from fastvit.bench import RECORD_FIELDS, make_record

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for b in doc.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if info.get("name") and info.get("kind"):
            out.append(gate(make_record(**{k: info[k] for k in RECORD_FIELDS if k in info and k != "timestamp"})))
    return out


def step_kernels(a, clock: Clock, stream: Stream) -> int:
    """benchmarks/test_kernels.py in priority groups, each a pytest session stopped with SIGINT at the deadline."""
    env = dict(os.environ)
    if a.smoke:
        env.update(FASTVIT_KERNEL_BENCH_SMOKE="1", TRITON_INTERPRET="1", FASTVIT_AUTOTUNE="0")
    work = _work_dir(a)
    groups = SMOKE_KERNEL_GROUPS if a.smoke else GPU_KERNEL_GROUPS
    # Each session adds its collected count; a group never started leaves the total unknown ("n of ?").
    stream.plan(None, groups=[g for g, _ in groups])
    status: dict[str, str] = {}
    cut = False
    for label, expr in groups:
        if cut or clock.left() < 5 + injected_delay():
            status[label], cut = "not run: no time", True
            continue
        part = work / f"kernels-{label}.json"
        part.unlink(missing_ok=True)
        ran = run_pytest(["benchmarks/test_kernels.py", "--benchmark-only", "-k", expr, f"--benchmark-json={part}"],
                         clock=clock, stream=stream, label=label, env=env)  # fmt: skip
        status[label] = "cut off (SIGINT)" if ran["cut"] else f"exit {ran['code']}"
        cut = cut or ran["cut"]
        _reconcile(stream, _benchmark_records(part))
    return _finish(a, stream, cut=cut, groups=status)


# --------------------------------------------------------------------------- tests

# A selection sized to the step's budget, not the whole cuda grid: about 45 distinct Triton compiles
# (~1-2.5 s each on an H100): attention at ViT-B's shape in both half dtypes and at head dims 72 and 80
# (3 kernels each), the norms and GEMMs at ViT-B's widths (forward and backward), the fp32/TF32 paths.
# tests/test_gpucheck.py proves every id is collected (a renamed test would fail the step otherwise).
_K = "tests/kernels/"
GPU_TESTS = (
    _K + "test_flash_attention_kernel.py::test_parity_cuda[B3-H12-N197-D64-bfloat16]",
    _K + "test_norm_kernel.py::test_parity_cuda[add_layer_norm-torch.bfloat16-(8, 197, 768)-same]",
    _K + "test_linear_kernel.py::test_parity_cuda[bfloat16-791-768-none]",
    _K + "test_linear_kernel.py::test_linear_residual_training_path[bf16]",
    # issues 25 and 26's kernels, never run on a GPU before: rotary attention (DINOv3's half pairs,
    # EVA's interleaved), packed varlen attention, RMSNorm and the SwiGLU fc1, in bf16
    _K + "test_rope_attention_kernel.py::test_parity_cuda[B2-H12-N197-D64-P1-half-bfloat16]",
    _K + "test_varlen_attention_kernel.py::test_parity_with_the_reference[L5-1-0-70-3-H2-D72-bfloat16]",
    _K + "test_rope_attention_kernel.py::test_parity_cuda[B2-H12-N197-D64-P1-pairs-bfloat16]",
    _K + "test_rms_norm_kernel.py::test_forward_and_backward_within_the_flash_rule[(2, 40, 64)-torch.bfloat16]",
    _K + "test_swiglu_kernel.py::test_forward_and_backward_within_the_flash_rule[37-45-70-True-False-torch.bfloat16]",
    _K + "test_flash_attention_kernel.py::test_parity_cuda[B3-H12-N197-D64-float16]",
    _K + "test_norm_kernel.py::test_parity_cuda[layer_norm-torch.bfloat16-(8, 197, 768)-same]",
    _K + "test_linear_kernel.py::test_parity_cuda[bfloat16-791-768-tanh]",
    _K + "test_flash_attention_kernel.py::test_parity_cuda[B1-H12-N197-D80-bfloat16]",
    _K + "test_flash_attention_kernel.py::test_parity_cuda[B1-H12-N197-D72-bfloat16]",
    _K + "test_norm_kernel.py::test_parity_cuda[layer_norm-torch.float16-(791, 1280)-same]",
    _K + "test_linear_kernel.py::test_linear_residual_training_path[bf16-x-fp32-residual]",
    _K + "test_flash_attention_kernel.py::test_tf32_only_on_opt_in",
    _K + "test_norm_kernel.py::test_fp32_input_to_bf16_output_cuda",
    _K + "test_linear_kernel.py::test_tf32_opt_in_cuda",
)
# The smoke run's: LayerNorm's argument checks and one launch through the interpreter (18 tests, ~2 s).
SMOKE_TESTS = ("tests/kernels/test_norm_kernel.py", "-k", "test_invalid_inputs_raise or out_dtype_equal")


def _junit_records(path: Path) -> list[dict]:
    import xml.etree.ElementTree as ET

    from fastvit.bench import make_record

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    out = []
    for case in root.iter("testcase"):
        status, reason = "ok", None
        for tag, label in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                status, reason = label, (node.get("message") or node.text or "")[:500]
                break
        name = f"{case.get('file') or case.get('classname', '').replace('.', '/') + '.py'}::{case.get('name')}"
        out.append(make_record(name=name, kind="test", status=status, reason=reason, first_call_s=float(case.get("time") or 0)))
    return out


def step_tests(a, clock: Clock, stream: Stream) -> int:
    """The CUDA tests' selection (:data:`GPU_TESTS`), one pytest session stopped with SIGINT at the deadline."""
    xml = _work_dir(a) / "tests.xml"
    xml.unlink(missing_ok=True)
    args = [*(SMOKE_TESTS if a.smoke else GPU_TESTS)]
    ran = run_pytest([*args, f"--junitxml={xml}", "-o", "junit_family=xunit1"], clock=clock, stream=stream, label="tests")
    if not ran["cut"] and ran["code"] not in (0, 1, 5):
        log(f"tests: pytest exit {ran['code']}")
    _reconcile(stream, [r for r in _junit_records(xml)])
    return _finish(a, stream, cut=ran["cut"], pytest_exit=ran["code"])


# --------------------------------------------------------------------------- sweep (every config, memcheck)


def step_sweep(a, clock: Clock, stream: Stream) -> int:
    """Every shipped launch configuration forced one by one at ViT shapes, then compute-sanitizer memcheck."""
    from . import configs, model

    device = _device(a.smoke)
    memcheck_s = min(60.0, 0.3 * max(clock.left(), 0)) if model.sanitizer_binary() and device == "cuda" else 0.0
    stream.plan(configs.planned(smoke=a.smoke) + 1)
    delay = injected_delay()

    def one(record):
        stream.record(record)
        log(f"{record['status']:<8} {record['name']}" + (f": {record['reason']}" if record.get("reason") else ""))
        if delay:
            time.sleep(delay)

    stop_at = clock.deadline - clock.grace - memcheck_s
    configs.sweep(smoke=a.smoke, device=device, emit=lambda records: None, emit_one=one, deadline=stop_at, clock=time.time)
    if time.time() > stop_at:
        return _finish(a, stream, cut=True)
    if clock.left() < 5:
        return _finish(a, stream, cut=True)
    for record in model.memcheck(device=device, timeout=max(5.0, clock.left()), log=log):
        stream.record(record)
    return _finish(a, stream, cut=False)


STEPS = {"env": None, "parity": step_parity, "models": step_models, "kernels": step_kernels, "tests": step_tests,
         "sweep": step_sweep}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastvit.gpucheck.steps")
    p.add_argument("step", choices=tuple(STEPS))
    p.add_argument("--out", required=True)
    p.add_argument("--stamp", required=True)
    p.add_argument("--deadline", type=float, required=True, help="wall-clock time (seconds since the epoch) the step ends by")
    p.add_argument("--grace", type=float, default=10.0, help="seconds kept before the deadline to stop children and finish")
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    clock = Clock(a.deadline, a.grace)
    if a.step == "env":
        return step_env(a, clock)
    stream = Stream(result_path(a, a.step))
    try:
        return STEPS[a.step](a, clock, stream)
    except KeyboardInterrupt:  # the parent's SIGINT at the deadline: say what was finished
        return _finish(a, stream, cut=True, interrupted=True)
    except Exception as e:  # noqa: BLE001 - the step's own crash is recorded, the records stay
        import traceback

        traceback.print_exc()
        from fastvit.bench import make_record

        stream.record(make_record(name=f"{a.step}-step", kind="step", status="error", reason=f"{type(e).__name__}: {e}"[:500]))
        return _finish(a, stream, cut=False)


if __name__ == "__main__":
    sys.exit(main())
