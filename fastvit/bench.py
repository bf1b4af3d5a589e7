"""Benchmark core shared by ``fastvit bench`` and the pytest-benchmark suite in ``benchmarks/``.

What is here, in order:

- :data:`VARIANTS`: the implementations compared (fastvit's reference, SDPA and
  fused builds, timm, Hugging Face), each optionally ``+compile``.
- :func:`forward_macs` / :func:`flop_per_image`: the analytic FLOP count.
- :data:`PEAKS` / :func:`peak_tflops`: dense tensor-core peaks of known GPUs.
- :func:`environment`: hardware and versions, copied into every record.
- :class:`Timer` / :func:`time_case`: warm-up, then timed rounds over rotating
  input buffers (CUDA events on a GPU, ``perf_counter`` on the CPU), median.
- :func:`run_model_case` / :func:`run_kernel_case`: one measurement -> one record.
- :data:`RECORD_FIELDS`, :func:`make_record`, :func:`add_speedups`,
  :func:`write_results`, :func:`format_table`: records, files and the table.
- :func:`add_parser` / :func:`run`: the ``fastvit bench`` command.

Every record, from the CLI or from pytest (``benchmark.extra_info``), has the
same keys (:data:`RECORD_FIELDS`); a figure that does not apply is ``None``.
torch is imported inside functions so ``fastvit bench --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import functools
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

# ---------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------

COMPILE_SUFFIX = "+compile"
# Keyword arguments of torch.compile for "+compile" variants: the default mode.
# (Tests swap in {"backend": "eager"} to exercise the path without inductor's C++ build.)
COMPILE_KWARGS: dict[str, Any] = {}


@dataclass(frozen=True)
class Variant:
    """One implementation of the same model and weights.

    ``impl``: "fastvit" (built with ``overrides`` of the ``*_impl`` switches),
    "timm" (timm's VisionTransformer) or "hf" (transformers' ViTForImageClassification).
    """

    name: str
    impl: str
    overrides: tuple[tuple[str, str], ...] = ()
    compile: bool = False
    needs_cuda: bool = False
    package: str | None = None  # optional package the variant needs

    @property
    def base(self) -> str:
        return self.name.removesuffix(COMPILE_SUFFIX)


_TORCH_PARTS = (("norm_impl", "torch"), ("linear_impl", "torch"))
BASE_VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("reference", "fastvit", (("attn_impl", "eager"), *_TORCH_PARTS)),
        Variant("sdpa", "fastvit", (("attn_impl", "sdpa"), *_TORCH_PARTS)),
        Variant("fused", "fastvit", (("attn_impl", "triton"), ("norm_impl", "triton"), ("linear_impl", "triton")), needs_cuda=True),
        Variant("flash_attn", "fastvit", (("attn_impl", "flash_attn"), *_TORCH_PARTS), needs_cuda=True, package="flash_attn"),
        Variant("xformers", "fastvit", (("attn_impl", "xformers"), *_TORCH_PARTS), needs_cuda=True, package="xformers"),
        Variant("timm", "timm", package="timm"),
        Variant("hf", "hf", package="transformers"),
    )
}
REFERENCE = "reference"
MODES = ("inference", "training")


def variant_names() -> list[str]:
    """Every valid variant name: each base name, and each with ``+compile``."""
    return [n for base in BASE_VARIANTS for n in (base, base + COMPILE_SUFFIX)]


def get_variant(name: str) -> Variant:
    base = name.removesuffix(COMPILE_SUFFIX)
    if base not in BASE_VARIANTS:
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(variant_names())}")
    return dataclasses.replace(BASE_VARIANTS[base], name=name, compile=name.endswith(COMPILE_SUFFIX))


# What `fastvit bench` runs when not told otherwise.
CUDA_DEFAULTS = dict(
    model="vit_base_patch16_224", batch=256, dtype="bf16", modes=MODES, rounds=20, warmup=5,
    variants=("reference", "sdpa", "fused", "reference+compile", "sdpa+compile", "fused+compile", "timm", "timm+compile", "hf"),
)
CUDA_QUICK = dict(variants=("reference", "sdpa", "fused", "fused+compile"), rounds=10, warmup=3)
CPU_DEFAULTS = dict(
    model="vit_tiny_patch16_224", batch=8, dtype="fp32", modes=("inference",), rounds=5, warmup=1,
    variants=("reference", "sdpa", "sdpa+compile"),
)
CPU_QUICK = dict(variants=("reference", "sdpa"), rounds=3, warmup=1)

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def dtype_name(name: str) -> str:
    """Canonical short dtype name ("bf16", "fp16", "fp32") for any common spelling."""
    name = str(name).replace("torch.", "")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return name


def torch_dtype(name: str):
    import torch

    return getattr(torch, DTYPES[dtype_name(name)])


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------

TRAINING_FLOP_FACTOR = 3  # forward + backward (input and weight gradients) ~ 3 x forward


def forward_macs(cfg) -> int:
    """Multiply-accumulates of one image's forward pass, from a :class:`fastvit.ViTConfig`.

    Counts the GEMM-like work: patch embedding, qkv, the two attention matmuls
    (q k^T and attn v), the output projection, the MLP, the pre-logits layer
    and the head(s). Norms, softmax, GELU and adds are left out, as in timm's
    (fvcore's) count: ViT-B/16 at 224 gives 17.56e9 (timm: 17.58e9).
    """
    d, hidden, t = cfg.embed_dim, cfg.mlp_hidden_dim, cfg.num_tokens
    gh, gw = cfg.grid_size
    macs = gh * gw * cfg.in_chans * cfg.patch_size**2 * d  # patch embedding conv
    per_block = t * d * 3 * d  # qkv
    per_block += 2 * t * t * d  # q k^T and attn v, all heads together
    per_block += t * d * d  # output projection
    per_block += 2 * t * d * hidden  # fc1, fc2
    macs += cfg.depth * per_block
    heads = 2 if cfg.distilled else 1
    feat = d
    if cfg.representation_size:
        macs += heads * d * cfg.representation_size
        feat = cfg.representation_size
    if cfg.num_classes:
        macs += heads * feat * cfg.num_classes
    return macs


def flop_per_image(cfg, mode: str = "inference") -> int:
    """FLOPs per image: 2 per MAC; a training step counts 3x the forward."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    return 2 * forward_macs(cfg) * (TRAINING_FLOP_FACTOR if mode == "training" else 1)


# ---------------------------------------------------------------------------
# Device peaks
# ---------------------------------------------------------------------------

# Dense (no sparsity) tensor-core peaks in TFLOP/s from NVIDIA's datasheets, by
# a regex on torch.cuda.get_device_name(). First match wins, so the specific
# names come before the names they contain ("H100 PCIe" before "H100", "A100"
# before "A10", "L40S" before "L4"). "fp32" is the plain FP32 peak; "tf32" is
# used for fp32 when TF32 matmuls are enabled. A missing dtype means no such
# tensor-core path (V100 has no bf16).
PEAKS: list[tuple[str, str, dict[str, float]]] = [
    (r"H100.*PCIe", "h100-pcie", dict(bf16=756, fp16=756, tf32=378, fp32=51)),
    (r"H100.*NVL", "h100-nvl", dict(bf16=835, fp16=835, tf32=418, fp32=60)),
    (r"H100.*(SXM|HBM3)", "h100-sxm", dict(bf16=989, fp16=989, tf32=494, fp32=67)),
    (r"GH200", "gh200", dict(bf16=989, fp16=989, tf32=494, fp32=67)),
    (r"H200.*NVL", "h200-nvl", dict(bf16=835, fp16=835, tf32=418, fp32=60)),
    (r"H200", "h200", dict(bf16=989, fp16=989, tf32=494, fp32=67)),
    (r"A100", "", dict(bf16=312, fp16=312, tf32=156, fp32=19.5)),
    (r"L40S", "l40s", dict(bf16=362, fp16=362, tf32=183, fp32=91.6)),
    (r"\bL4\b", "l4", dict(bf16=121, fp16=121, tf32=60, fp32=30.3)),
    (r"RTX 4090", "rtx-4090", dict(bf16=165, fp16=165, tf32=82.6, fp32=82.6)),
    (r"\bA10\b", "a10", dict(bf16=125, fp16=125, tf32=62.5, fp32=31.2)),
    (r"V100", "", dict(fp16=125, fp32=15.7)),
]


def _peak_entry(gpu_name: str):
    for pattern, slug, peaks in PEAKS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            return pattern, slug, peaks
    return None


def table_peak(gpu_name: str, dtype: str, tf32: bool = False) -> tuple[float | None, str]:
    """(dense peak TFLOP/s, where it comes from) for a GPU name, or (None, why not)."""
    dtype = dtype_name(dtype)
    entry = _peak_entry(gpu_name)
    if entry is None:
        return None, f"{gpu_name!r} is not in fastvit.bench.PEAKS"
    pattern, _, peaks = entry
    key = "tf32" if dtype == "fp32" and tf32 else dtype
    if key not in peaks:
        return None, f"{gpu_name!r} has no {key} tensor-core peak"
    return float(peaks[key]), f"table {pattern!r} {key}"


def slugify(text: str) -> str:
    text = re.sub(r"^(nvidia|amd)\s+", "", text.strip(), flags=re.IGNORECASE)
    text = re.sub(r"(?i)\bgeforce\s+", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def device_slug(env: dict) -> str:
    """Short file-name label: "cpu", "h100-sxm", "a100-sxm4-80gb", ..."""
    if env["device_type"] != "cuda":
        return "cpu"
    entry = _peak_entry(env["device"])
    return entry[1] if entry and entry[1] else slugify(env["device"])


@functools.lru_cache(maxsize=None)
def measured_gemm_tflops(dtype: str, n: int = 8192, iters: int = 10) -> float:
    """A large square GEMM's throughput on the current GPU: the ceiling used for unknown GPUs."""
    import torch

    dt = torch_dtype(dtype)
    a = torch.randn(n, n, device="cuda", dtype=dt)
    b = torch.randn(n, n, device="cuda", dtype=dt)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(3):
        start.record()
        for _ in range(iters):
            a @ b
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3 / iters)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n**3 / best / 1e12


def peak_tflops(device: str, dtype: str) -> tuple[float | None, str]:
    """The dense peak to compute MFU against on ``device`` for ``dtype``: (TFLOP/s or None, source)."""
    if device != "cuda":
        return None, "cpu: no peak (MFU not reported)"
    import torch

    name = torch.cuda.get_device_name()
    peak, source = table_peak(name, dtype, tf32=torch.backends.cuda.matmul.allow_tf32)
    if peak is None:
        peak, source = measured_gemm_tflops(dtype_name(dtype)), f"measured {dtype_name(dtype)} GEMM 8192^3"
    return peak, source


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import torch

        v = torch._C._cuda_getDriverVersion()  # e.g. 12080
        return f"CUDA driver API {v // 1000}.{v % 1000 // 10}"
    except Exception:  # noqa: BLE001 - best effort
        return None


@functools.lru_cache(maxsize=None)
def _environment(device: str) -> tuple[tuple[str, Any], ...]:
    import torch

    import fastvit

    env: dict[str, Any] = dict(
        device="cpu", device_type=device, compute_capability=None, driver=None,
        cuda=torch.version.cuda, cudnn=None, torch=torch.__version__,
        triton=_package_version("triton"), fastvit=fastvit.__version__, python=platform.python_version(),
        cpu_model=_cpu_model(), num_threads=torch.get_num_threads(),
    )
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        env.update(
            device=torch.cuda.get_device_name(), compute_capability=f"{major}.{minor}", driver=_driver_version(),
            cudnn=torch.backends.cudnn.version(),
        )
    return tuple(env.items())


def environment(device: str) -> dict[str, Any]:
    """Hardware and software versions for ``device`` ("cuda" or "cpu"); cached per process."""
    return dict(_environment(device))


def resolve_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA GPU is visible to torch")
    if name not in ("cuda", "cpu"):
        raise ValueError(f"unknown device {name!r}; valid: auto, cuda, cpu")
    return name


def prepare_device(device: str) -> None:
    """Process-wide settings for a benchmark run (called by the CLI and the pytest suite, never at import)."""
    import torch

    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # the patch-embedding conv picks its fastest algorithm once


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


class Timer:
    """Calls ``step(*inputs[i % len(inputs)])`` with i counting up, so consecutive
    calls read different buffers, and times rounds of ``iters_per_round`` calls.

    On CUDA a round is timed with a pair of CUDA events and ends with a
    synchronisation, so it measures GPU time and nothing leaks into the next
    round; on the CPU with ``time.perf_counter``. :attr:`times` holds seconds
    per call, one entry per round. ``round`` is what pytest-benchmark's
    ``pedantic`` calls (with ``sync`` as its setup).
    """

    def __init__(self, step: Callable, inputs: Sequence[tuple], device: str):
        if not inputs:
            raise ValueError("Timer needs at least one input buffer")
        self.step, self.inputs, self.cuda = step, list(inputs), device == "cuda"
        self.iters_per_round = 1
        self.times: list[float] = []
        self.calls = 0

    def call(self):
        args = self.inputs[self.calls % len(self.inputs)]
        self.calls += 1
        return self.step(*args)

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def round(self) -> float:
        k = self.iters_per_round
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(k):
                self.call()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3 / k
        else:
            t0 = time.perf_counter()
            for _ in range(k):
                self.call()
            seconds = (time.perf_counter() - t0) / k
        self.times.append(seconds)
        return seconds

    def timed_call(self) -> tuple[Any, float]:
        """One synchronised call and its wall time (for the first call and the round-size estimate)."""
        self.sync()
        t0 = time.perf_counter()
        out = self.call()
        self.sync()
        return out, time.perf_counter() - t0


def measure_rounds(timer: Timer, rounds: int) -> None:
    """The plain measurement loop (the CLI's); pytest uses :func:`pedantic_measure` instead."""
    for _ in range(rounds):
        timer.round()


def pedantic_measure(benchmark) -> Callable[[Timer, int], None]:
    """A ``measure`` for :func:`time_case` that lets pytest-benchmark drive the rounds.

    pytest-benchmark's own statistics are the wall time of each round (which
    ends in a synchronisation); the figures in ``extra_info`` come from the
    same rounds' CUDA-event times.
    """

    def measure(timer: Timer, rounds: int) -> None:
        benchmark.pedantic(timer.round, setup=timer.sync, rounds=rounds, warmup_rounds=0, iterations=1)

    return measure


@dataclass
class Timing:
    times: list[float]  # seconds per call, one per round
    iters_per_round: int
    warmup_iters: int
    first_call_s: float
    peak_mem_bytes: int | None
    check: Any = None  # what ``check`` returned for the first call's output

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)


def time_case(
    step: Callable,
    inputs: Sequence[tuple],
    *,
    device: str,
    rounds: int,
    warmup: int,
    measure: Callable[[Timer, int], None] | None = None,
    check: Callable[[Any], Any] | None = None,
    min_round_s: float | None = None,
) -> Timing:
    """Warm up, then time ``rounds`` rounds of ``step`` over the rotating ``inputs``.

    Warm-up (outside the measurement): one synchronised first call (compilation
    and autotuning happen here; its wall time is ``first_call_s``; ``check``
    sees its output, e.g. to measure parity) and ``warmup`` more calls, the
    last one timed to size the rounds: a round makes ``ceil(min_round_s / t)``
    calls (default 20 ms on CUDA, one call on the CPU) so short kernels are not
    dominated by the per-round synchronisation. Peak memory (CUDA) is reset
    after the warm-up and read after the rounds.
    """
    import torch

    cuda = device == "cuda"
    timer = Timer(step, inputs, device)
    out, first_call_s = timer.timed_call()
    checked = check(out) if check is not None else None
    del out
    estimate = first_call_s
    for i in range(max(warmup, 1)):
        if i == max(warmup, 1) - 1:
            _, estimate = timer.timed_call()
        else:
            timer.call()
    if min_round_s is None:
        min_round_s = 0.02 if cuda else 0.0
    timer.iters_per_round = max(1, min(1000, math.ceil(min_round_s / max(estimate, 1e-9))))
    timer.sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    (measure or measure_rounds)(timer, rounds)
    timer.sync()
    peak = torch.cuda.max_memory_allocated() if cuda else None
    if not timer.times:
        raise RuntimeError("the measurement ran no rounds")
    return Timing(timer.times, timer.iters_per_round, max(warmup, 1) + 1, first_call_s, peak, checked)


def parity(out, ref) -> dict[str, float]:
    """max |out - ref| and that over max |ref| (a norm-wise relative error that zero logits cannot blow up)."""
    diff = (out.detach().double() - ref.detach().double()).abs().max().item()
    scale = ref.detach().double().abs().max().item()
    return dict(max_abs_err=diff, max_rel_err=diff / scale if scale > 0 else diff)


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------

ENV_FIELDS = (
    "device", "device_type", "compute_capability", "driver", "cuda", "cudnn", "torch", "triton", "fastvit",
    "python", "cpu_model", "num_threads",
)
RECORD_FIELDS = (
    "name", "kind", "status", "reason",
    "model", "op", "variant", "mode", "dtype", "batch", "shape", "config",
    "images_per_s", "ms_per_iter", "round_ms", "rounds", "iters_per_round", "warmup_iters",
    "flop_per_iter", "gflop_per_image", "tflops", "bytes_per_iter", "gbps", "peak_tflops", "peak_source", "mfu",
    "speedup_vs_reference", "max_rel_err", "max_abs_err", "peak_mem_bytes",
    "first_call_s", "compile", "compile_s",
    *ENV_FIELDS,
    "timestamp",
)  # fmt: skip


def make_record(**fields) -> dict[str, Any]:
    """A record with every key of :data:`RECORD_FIELDS` (unset ones None); unknown keys are an error."""
    unknown = sorted(set(fields) - set(RECORD_FIELDS))
    if unknown:
        raise KeyError(f"not record fields: {unknown}")
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(fields)
    record["timestamp"] = record["timestamp"] or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return record


def _timing_fields(timing: Timing) -> dict[str, Any]:
    return dict(
        ms_per_iter=timing.median_s * 1e3, round_ms=[t * 1e3 for t in timing.times], rounds=len(timing.times),
        iters_per_round=timing.iters_per_round, warmup_iters=timing.warmup_iters,
        first_call_s=timing.first_call_s, peak_mem_bytes=timing.peak_mem_bytes,
    )


# Kernel benchmarks: the provider each op's speed-up is measured against.
KERNEL_REFERENCE = {
    "attention": "sdpa-flash", "layer_norm": "torch", "add_layer_norm": "torch",
    "linear_gelu": "torch", "linear_residual": "torch",
}


def reference_key(record: dict) -> tuple | None:
    """Key shared by a record and the record of its reference; None for records without one."""
    shape = json.dumps(record.get("shape"), sort_keys=True)
    config = record.get("config") and {k: v for k, v in record["config"].items() if not k.endswith("impl")}
    config = json.dumps(config, sort_keys=True)
    return (record["kind"], record["model"], record["op"], config, shape, record["dtype"], record["batch"],
            record["mode"], record["device"])  # fmt: skip


def is_reference(record: dict) -> bool:
    if record["kind"] == "kernel":
        return record["variant"] == KERNEL_REFERENCE.get(record["op"])
    return record["variant"] == REFERENCE


def speedup(record: dict, ref: dict | None) -> float | None:
    """Throughput of ``record`` over its reference's (images/s ratio = inverse ms ratio)."""
    if ref is None or record.get("status") != "ok" or ref.get("status") != "ok":
        return None
    return ref["ms_per_iter"] / record["ms_per_iter"]


def add_speedups(records: list[dict]) -> list[dict]:
    """Fill ``speedup_vs_reference`` in place, from the reference record of the same group."""
    refs = {reference_key(r): r for r in records if r["status"] == "ok" and is_reference(r)}
    for r in records:
        r["speedup_vs_reference"] = speedup(r, refs.get(reference_key(r)))
    return records


class References:
    """Reference records seen so far in a pytest session, so each case can carry its speed-up."""

    def __init__(self):
        self.seen: dict[tuple, dict] = {}

    def attach(self, benchmark, record: dict) -> dict:
        """Fill the speed-up, remember references, and store the record in ``benchmark.extra_info``."""
        if record["status"] == "ok" and is_reference(record):
            self.seen[reference_key(record)] = record
        record["speedup_vs_reference"] = speedup(record, self.seen.get(reference_key(record)))
        benchmark.extra_info.update(record)
        return record


# ---------------------------------------------------------------------------
# Model cases
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCase:
    model: str
    variant: str
    mode: str = "inference"
    dtype: str = "bf16"
    batch: int = 256
    overrides: tuple[tuple[str, Any], ...] = ()  # architecture fields of ViTConfig, e.g. (("depth", 2),)

    @property
    def name(self) -> str:
        extra = "".join(f",{k}={v}" for k, v in self.overrides)
        return f"{self.model}{extra}/{self.dtype}/b{self.batch}/{self.variant}/{self.mode}"


class ModelContext:
    """What every variant of one (model, dtype, batch) shares: the weights (one
    random init, fp32 on the CPU), the rotating input buffers (random normal
    images and labels, generated on the CPU so every device sees the same
    values) and the fp32 eager reference logits for buffer 0."""

    def __init__(self, model: str, dtype: str, batch: int, device: str, overrides=(), buffers: int | None = None, seed: int = 0):
        import torch

        import fastvit

        self.model, self.dtype, self.batch, self.device, self.overrides = model, dtype_name(dtype), batch, device, tuple(overrides)
        self.cfg = fastvit.get_config(model, **dict(self.overrides))
        torch.manual_seed(seed)
        reference = fastvit.VisionTransformer(self.cfg.replace(**dict(BASE_VARIANTS[REFERENCE].overrides)))
        self.state_dict = {k: v.detach().clone() for k, v in reference.state_dict().items()}
        del reference
        gen = torch.Generator().manual_seed(seed + 1)
        h, w = self.cfg.img_size
        dt = torch_dtype(self.dtype)
        self.inputs = []
        for _ in range(buffers or (3 if device == "cuda" else 2)):
            x = torch.randn(batch, self.cfg.in_chans, h, w, generator=gen)
            y = torch.randint(0, max(self.cfg.num_classes, 1), (batch,), generator=gen)
            self.inputs.append((x.to(device=device, dtype=dt), y.to(device)))
        self._ref_logits = None

    def matches(self, case: ModelCase) -> bool:
        return (self.model, self.dtype, self.batch, self.overrides) == (case.model, dtype_name(case.dtype), case.batch, tuple(case.overrides))

    def reference_logits(self):
        """Logits of the fp32 eager reference model on buffer 0 (TF32 off), computed once."""
        if self._ref_logits is None:
            import torch

            import fastvit

            model = fastvit.VisionTransformer(self.cfg.replace(**dict(BASE_VARIANTS[REFERENCE].overrides)))
            model.load_state_dict(self.state_dict)
            model.to(self.device).eval()
            saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            try:
                with torch.inference_mode():
                    self._ref_logits = model(self.inputs[0][0].float()).float()
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
            del model
            _free_memory(self.device)
        return self._ref_logits


def _free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _import_error(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - e.g. timm failing on a broken torchvision
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"{module} does not import ({type(e).__name__}: {first})"
    return None


def _hf_mismatch(cfg) -> str | None:
    """Why transformers has no equivalent of this config (fastvit's own exporter decides), or None."""
    import types

    from fastvit.checkpoints import to_hf_config

    try:
        to_hf_config(types.SimpleNamespace(cfg=cfg))
    except ValueError as e:
        return str(e)
    return None


def unavailable_reason(variant: Variant, cfg, device: str, dtype: str, mode: str, model: str | None = None) -> str | None:
    """None when ``variant`` can run here, else why not (it is then skipped, not an error).

    ``model`` is the preset name (timm builds its model from it)."""
    if mode not in MODES:
        return f"unknown mode {mode!r}"
    if mode == "training" and not cfg.num_classes:
        return "training needs a classification head (num_classes > 0)"
    if variant.needs_cuda and device != "cuda":
        if variant.impl == "fastvit" and ("attn_impl", "triton") in variant.overrides:
            return "Triton kernels need a CUDA GPU (TRITON_INTERPRET=1 runs them on the CPU far too slowly to time)"
        return f"{variant.base} needs a CUDA GPU"
    if variant.package and importlib.util.find_spec(variant.package) is None:
        return f"{variant.package} is not installed"
    if variant.base == "flash_attn" and dtype_name(dtype) == "fp32":
        return "flash-attn takes fp16 or bf16 only"
    if variant.impl == "timm":
        reason = _import_error("timm")
        if reason:
            return reason
        import timm

        if model is not None and not timm.is_model(model):
            return f"timm has no model {model!r}"
    if variant.impl == "hf":
        from fastvit import checkpoints

        if not hasattr(checkpoints, "to_hf_state_dict"):
            return "fastvit.checkpoints.to_hf_state_dict does not exist (needed to copy the weights)"
        reason = _import_error("transformers") or _hf_mismatch(cfg)
        if reason:
            return reason
    return None


def _logits_module(hf):
    """Wrap a transformers model so that ``model(x)`` returns the logits tensor."""
    from torch import nn

    class HFLogits(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(pixel_values=x).logits

    return HFLogits(hf)


def _architecture(overrides) -> dict:
    return {k: v for k, v in dict(overrides).items() if not k.endswith("_impl")}


def build_model(variant: Variant, ctx: ModelContext):
    """The variant's model with the context's weights, on its device and dtype (mode not set)."""
    import fastvit

    if variant.impl == "fastvit":
        model = fastvit.VisionTransformer(ctx.cfg.replace(**dict(variant.overrides)))
        model.load_state_dict(ctx.state_dict)
    elif variant.impl == "timm":
        import timm

        model = timm.create_model(ctx.model, pretrained=False, **_architecture(ctx.overrides))
        model.load_state_dict(ctx.state_dict)
    elif variant.impl == "hf":
        import transformers

        from fastvit.checkpoints import to_hf_config, to_hf_state_dict

        source = fastvit.VisionTransformer(ctx.cfg)
        source.load_state_dict(ctx.state_dict)
        kw = to_hf_config(source)
        kw.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        cls = getattr(transformers, kw["architectures"][0])
        hf = cls._from_config(cls.config_class(**kw), attn_implementation="sdpa")
        legacy = any(".encoder.layer." in k for k in hf.state_dict())  # transformers 4.x block names
        hf.load_state_dict(to_hf_state_dict(source, legacy=legacy))
        model = _logits_module(hf)
    else:
        raise ValueError(f"unknown variant implementation {variant.impl!r}")
    return model.to(device=ctx.device, dtype=torch_dtype(ctx.dtype))


def _logits(out):
    """Logits from a model output; a distilled model in training returns (class, distillation) logits."""
    if isinstance(out, (tuple, list)):
        return (out[0] + out[1]) / 2
    return out


def _error_text(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


def _model_fields(case: ModelCase, ctx: ModelContext, variant: Variant, env: dict) -> dict:
    cfg = ctx.cfg.replace(**dict(variant.overrides)) if variant.impl == "fastvit" else ctx.cfg
    config = dict(
        img_size=list(cfg.img_size), patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, num_classes=cfg.num_classes, impl=variant.impl,
    )
    if variant.impl == "fastvit":
        config.update(attn_impl=cfg.attn_impl, norm_impl=cfg.norm_impl, linear_impl=cfg.linear_impl)
    return dict(
        name=case.name, kind="model", model=case.model, variant=case.variant, mode=case.mode,
        dtype=dtype_name(case.dtype), batch=case.batch, config=config, compile=variant.compile, **env,
    )


def run_model_case(
    case: ModelCase,
    ctx: ModelContext,
    *,
    rounds: int,
    warmup: int,
    measure: Callable[[Timer, int], None] | None = None,
    raise_errors: bool = False,
) -> dict[str, Any]:
    """Measure one (model, variant, mode, dtype, batch) and return its record.

    Status "skipped" (with the reason) when the variant cannot run here,
    "error" when it raised (unless ``raise_errors``), else "ok".
    """
    if not ctx.matches(case):
        raise ValueError(f"context {ctx.model}/{ctx.dtype}/b{ctx.batch} does not match case {case.name}")
    variant = get_variant(case.variant)
    env = environment(ctx.device)
    fields = _model_fields(case, ctx, variant, env)
    reason = unavailable_reason(variant, ctx.cfg, ctx.device, case.dtype, case.mode, case.model)
    if reason is not None:
        return make_record(status="skipped", reason=reason, **fields)
    try:
        return make_record(status="ok", **fields, **_measure_model(case, ctx, variant, rounds, warmup, measure))
    except Exception as e:
        if raise_errors:
            raise
        return make_record(status="error", reason=_error_text(e), **fields)
    finally:
        if variant.compile:
            import torch

            torch._dynamo.reset()
        _free_memory(ctx.device)


def _measure_model(case, ctx, variant, rounds, warmup, measure) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    ref = ctx.reference_logits()
    model = build_model(variant, ctx)
    training = case.mode == "training"
    model.train(training)
    if variant.compile:
        torch._dynamo.reset()
        fn = torch.compile(model, **COMPILE_KWARGS)
    else:
        fn = model

    if training:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            logits = _logits(fn(x))
            F.cross_entropy(logits.float(), y).backward()
            opt.step()
            return logits.detach()

    else:

        def step(x, y):
            with torch.inference_mode():
                return _logits(fn(x))

    timing = time_case(
        step, ctx.inputs, device=ctx.device, rounds=rounds, warmup=warmup, measure=measure,
        check=lambda out: parity(out, ref), min_round_s=0.0 if ctx.device != "cuda" else None,
    )
    del model, fn, step
    if training:
        del opt
    gflop = flop_per_image(ctx.cfg, case.mode)
    flop_per_iter = gflop * case.batch
    seconds = timing.median_s
    tflops = flop_per_iter / seconds / 1e12
    peak, source = peak_tflops(ctx.device, case.dtype)
    return dict(
        images_per_s=case.batch / seconds, flop_per_iter=flop_per_iter, gflop_per_image=gflop / 1e9, tflops=tflops,
        peak_tflops=peak, peak_source=source, mfu=tflops / peak if peak else None,
        compile_s=timing.first_call_s if variant.compile else None,
        **timing.check, **_timing_fields(timing),
    )


# ---------------------------------------------------------------------------
# Kernel cases (used by benchmarks/test_kernels.py)
# ---------------------------------------------------------------------------


def run_kernel_case(
    *,
    op: str,
    provider: str,
    mode: str,
    dtype: str,
    shape: dict,
    step: Callable,
    inputs: Sequence[tuple],
    device: str = "cuda",
    rounds: int = 20,
    warmup: int = 3,
    flop_per_iter: float | None = None,
    bytes_per_iter: float | None = None,
    check: Callable[[Any], dict] | None = None,
    compiled: bool = False,
    measure: Callable[[Timer, int], None] | None = None,
) -> dict[str, Any]:
    """Time one kernel call pattern and return its record (same fields as a model record).

    ``flop_per_iter`` gives TFLOP/s and MFU; ``bytes_per_iter`` (the minimal
    traffic the op must move) gives GB/s. ``check(first_output)`` returns the
    parity fields (``max_rel_err``, ``max_abs_err``).
    """
    env = environment(device)
    timing = time_case(step, inputs, device=device, rounds=rounds, warmup=warmup, measure=measure, check=check)
    seconds = timing.median_s
    tflops = flop_per_iter / seconds / 1e12 if flop_per_iter else None
    peak, source = peak_tflops(device, dtype) if flop_per_iter else (None, None)
    shape_text = ",".join(f"{k}={v}" for k, v in shape.items())
    return make_record(
        name=f"{op}/{shape_text}/{dtype_name(dtype)}/{provider}/{mode}", kind="kernel", status="ok", op=op,
        variant=provider, mode=mode, dtype=dtype_name(dtype), shape=dict(shape),
        flop_per_iter=flop_per_iter, tflops=tflops, bytes_per_iter=bytes_per_iter,
        gbps=bytes_per_iter / seconds / 1e9 if bytes_per_iter else None,
        peak_tflops=peak, peak_source=source, mfu=tflops / peak if (tflops and peak) else None,
        compile=compiled, compile_s=timing.first_call_s if compiled else None,
        **(timing.check or {}), **_timing_fields(timing), **env,
    )


# ---------------------------------------------------------------------------
# Files and the table
# ---------------------------------------------------------------------------

FORMAT = "fastvit-bench/1"


def default_output(env: dict, date: _dt.date | None = None) -> Path:
    date = date or _dt.date.today()
    return Path("bench-out") / f"{device_slug(env)}-{date.isoformat()}.json"


def write_results(path: str | os.PathLike, records: list[dict], argv: Sequence[str] | None = None) -> Path:
    """Write ``{"format", "created", "argv", "env", "records"}`` as JSON (atomically; parent dirs created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {k: records[0][k] for k in ENV_FIELDS} if records else {}
    doc = dict(
        format=FORMAT, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        argv=list(argv) if argv is not None else None, env=env, records=records,
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return path


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _mem(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**30:.2f} GiB"


TABLE_COLUMNS = ("variant", "mode", "images/s", "vs ref", "MFU", "max err", "peak mem", "compile s")


def format_table(records: list[dict]) -> str:
    """Plain-text table of model records, one block per (model, dtype, batch, device)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["kind"] == "model":
            groups.setdefault((r["model"], r["dtype"], r["batch"], r["device"]), []).append(r)
    blocks = []
    for (model, dtype, batch, device), rows in groups.items():
        cells = []
        notes = []
        for r in rows:
            if r["status"] != "ok":
                cells.append([r["variant"], r["mode"], r["status"], "", "", "", "", ""])
                notes.append(f"  {r['variant']} {r['mode']}: {r['status']}: {r['reason']}")
                continue
            cells.append([
                r["variant"], r["mode"], f"{r['images_per_s']:,.1f}", _fmt(r["speedup_vs_reference"], ".2f") + ("x" if r["speedup_vs_reference"] else ""),
                _fmt(r["mfu"] and 100 * r["mfu"], ".1f") + ("%" if r["mfu"] else ""), f"{r['max_rel_err']:.1e}",
                _mem(r["peak_mem_bytes"]), _fmt(r["compile_s"], ".1f"),
            ])  # fmt: skip
        widths = [max(len(c[i]) for c in [list(TABLE_COLUMNS), *cells]) for i in range(len(TABLE_COLUMNS))]
        left = 2  # variant and mode left-aligned, figures right-aligned

        def line(row):
            return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

        title = f"{model}  {dtype}  batch {batch}  {device}"
        blocks.append("\n".join([title, line(TABLE_COLUMNS), *map(line, cells), *notes]))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------
# fastvit bench
# ---------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="time fastvit's variants (reference, sdpa, fused, +compile, timm, hf) and write a JSON result file",
        description=(
            "Time one model across implementation variants, in inference and/or training-step mode, "
            "print a table and write a JSON result file. On CUDA the default is vit_base_patch16_224, bf16, "
            f"batch 256, variants {','.join(CUDA_DEFAULTS['variants'])}, both modes; on the CPU "
            f"vit_tiny_patch16_224, fp32, batch 8, variants {','.join(CPU_DEFAULTS['variants'])}, inference."
        ),
    )
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"), help="default: cuda when a GPU is visible")
    p.add_argument("--model", help="preset name (fastvit.list_models())")
    p.add_argument("--batch", type=int, help="images per step")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="parameter and activation dtype")
    p.add_argument("--variants", type=_split, help=f"comma-separated; valid: {','.join(variant_names())}")
    p.add_argument("--modes", type=_split, help="comma-separated: inference,training")
    p.add_argument("--rounds", type=int, help="timed rounds (the median is reported)")
    p.add_argument("--warmup", type=int, help="warm-up calls after the first (compiling) call; at least 1 is made")
    p.add_argument("--quick", action="store_true", help="fewer variants and rounds")
    p.add_argument("--no-compile", action="store_true", help="drop the +compile variants")
    p.add_argument("--out", help="JSON result file (default: bench-out/<gpu-or-cpu>-<date>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, _parser=p)
    return p


def resolve_settings(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """The effective settings: explicit options over --quick over the device's defaults."""
    settings = dict(CUDA_DEFAULTS if device == "cuda" else CPU_DEFAULTS)
    if args.quick:
        settings.update(CUDA_QUICK if device == "cuda" else CPU_QUICK)
    for key in ("model", "batch", "dtype", "variants", "modes", "rounds", "warmup"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    variants = list(settings["variants"])
    if args.no_compile:
        variants = [v for v in variants if not v.endswith(COMPILE_SUFFIX)]
    for v in variants:
        get_variant(v)
    for m in settings["modes"]:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}; valid: {', '.join(MODES)}")
    import fastvit

    fastvit.get_config(settings["model"])
    if settings["batch"] < 1 or settings["rounds"] < 1 or settings["warmup"] < 0:
        raise ValueError("--batch and --rounds must be >= 1 and --warmup >= 0")
    settings.update(variants=variants, modes=list(settings["modes"]), dtype=dtype_name(settings["dtype"]))
    return settings


def run(args: argparse.Namespace) -> int:
    """``fastvit bench``: 0 when every case ran or was skipped, 1 when one raised, 2 for bad options."""
    try:
        device = resolve_device(args.device)
        s = resolve_settings(args, device)
    except (ValueError, RuntimeError) as e:
        print(f"fastvit bench: error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    prepare_device(device)
    env = environment(device)
    out = Path(args.out) if args.out else default_output(env)
    cases = [ModelCase(s["model"], v, m, s["dtype"], s["batch"]) for m in s["modes"] for v in s["variants"]]
    print(f"fastvit bench: {s['model']} {s['dtype']} batch {s['batch']} on {env['device']}; "
          f"{len(cases)} cases, {s['rounds']} rounds each -> {out}", file=sys.stderr)  # fmt: skip
    try:
        ctx = ModelContext(s["model"], s["dtype"], s["batch"], device)
    except Exception as e:  # e.g. out of memory for the input buffers
        print(f"fastvit bench: error: preparing weights and inputs failed: {_error_text(e)}", file=sys.stderr)
        return 1
    records: list[dict] = []
    bar = tqdm(cases, desc="bench", unit="case", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True)
    for case in bar:
        bar.set_postfix_str(f"{case.variant} {case.mode}")
        record = run_model_case(case, ctx, rounds=s["rounds"], warmup=s["warmup"])
        records.append(record)
        if record["status"] != "ok":
            tqdm.write(f"{case.variant} {case.mode}: {record['status']}: {record['reason']}", file=sys.stderr)
        write_results(out, add_speedups(records), sys.argv)  # after every case: a cut-off run keeps its data
    bar.close()
    print(format_table(records))
    print(f"wrote {out}")
    return 1 if any(r["status"] == "error" for r in records) else 0
