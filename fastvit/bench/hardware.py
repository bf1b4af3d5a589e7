"""The device side of a record: GPU peaks (for MFU) and the hardware and versions.

- :data:`PEAKS` / :func:`table_peak` / :func:`peak_tflops`: dense tensor-core
  peaks of known GPUs; a measured GEMM ceiling for the others.
- :func:`device_slug`: the short device label of result file names.
- :func:`environment`: hardware and versions, copied into every record.
- :func:`resolve_device` / :func:`prepare_device`: which device, and its
  process-wide settings for a run.
"""

from __future__ import annotations

import functools
import math
import platform
import re
import subprocess
from typing import Any

from .variants import dtype_name, torch_dtype

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
