"""Benchmark core shared by ``fastvit bench`` and the pytest-benchmark suite in ``benchmarks/``.

The modules, in the order they build on each other:

- :mod:`.variants`: :data:`BASE_VARIANTS`, the implementations
  compared (fastvit's reference, SDPA and fused builds, timm, Hugging Face),
  each optionally ``+compile``; the CLI's defaults; dtype names.
- :mod:`.flops`: :func:`forward_macs` / :func:`flop_per_image`, the analytic FLOP count.
- :mod:`.hardware`: :data:`PEAKS` / :func:`peak_tflops`, dense tensor-core peaks
  of known GPUs; :func:`environment`, hardware and versions copied into every record.
- :mod:`.timing`: :class:`Timer` / :func:`time_case`: warm-up, then timed rounds
  over rotating input buffers (CUDA events on a GPU, ``perf_counter`` on the CPU), median;
  :func:`measure_interleaved`: several cases' rounds in turn (:func:`run_model_cases`).
- :mod:`.records`: :data:`RECORD_FIELDS`, :func:`make_record`, :func:`add_speedups`,
  :func:`write_results`, :func:`format_table`: records, files and the table.
- :mod:`.models`: :class:`ModelCase`, :class:`ModelContext`, :func:`unavailable_reason`,
  :func:`build_model`: what a model case needs.
- :mod:`.cases`: :func:`run_model_case` / :func:`run_kernel_case`: one measurement -> one record.
- :mod:`.command`: :func:`add_parser` / :func:`run`: the ``fastvit bench`` command.

Every record, from the CLI or from pytest (``benchmark.extra_info``), has the
same keys (:data:`RECORD_FIELDS`); a figure that does not apply is ``None``.
torch is imported inside functions so ``fastvit bench --help`` stays cheap.

The names below are re-exported so callers use ``fastvit.bench.<name>``. To
monkeypatch a module-level value, patch it in the module that reads it (e.g.
``fastvit.bench.cases.COMPILE_KWARGS``): rebinding it here changes nothing.
"""

from __future__ import annotations

from .cases import COMPILE_KWARGS, run_kernel_case, run_model_case, run_model_cases
from .command import add_parser, resolve_settings, run
from .flops import TRAINING_FLOP_FACTOR, flop_per_image, forward_macs, rope_traffic_saved
from .hardware import (
    PEAKS,
    device_slug,
    environment,
    measured_gemm_tflops,
    peak_tflops,
    prepare_device,
    resolve_device,
    slugify,
    table_peak,
)
from .models import ModelCase, ModelContext, build_model, unavailable_reason
from .models import _free_memory  # noqa: F401 - used by benchmarks/conftest.py
from .records import (
    ENV_FIELDS,
    FORMAT,
    KERNEL_REFERENCE,
    RECORD_FIELDS,
    TABLE_COLUMNS,
    SPREAD_WARN,
    References,
    add_speedups,
    default_output,
    format_spread,
    format_table,
    is_reference,
    loaded,
    make_record,
    reference_key,
    run_label,
    speedup,
    spread,
    trust_warnings,
    unwritable,
    write_results,
)
from ..timing import Timer, Timing, measure_interleaved, measure_rounds, parity, pedantic_measure, prepare_case, time_case
from .variants import (
    BASE_VARIANTS,
    COMPILE_SUFFIX,
    CPU_DEFAULTS,
    CPU_QUICK,
    CUDA_DEFAULTS,
    CUDA_QUICK,
    DTYPES,
    MODES,
    REFERENCE,
    Variant,
    dtype_name,
    get_variant,
    torch_dtype,
    variant_names,
)

__all__ = [
    "SPREAD_WARN",
    "format_spread",
    "loaded",
    "measure_interleaved",
    "prepare_case",
    "run_label",
    "run_model_cases",
    "spread",
    "trust_warnings",
    "BASE_VARIANTS",
    "COMPILE_KWARGS",
    "COMPILE_SUFFIX",
    "CPU_DEFAULTS",
    "CPU_QUICK",
    "CUDA_DEFAULTS",
    "CUDA_QUICK",
    "DTYPES",
    "ENV_FIELDS",
    "FORMAT",
    "KERNEL_REFERENCE",
    "MODES",
    "PEAKS",
    "RECORD_FIELDS",
    "REFERENCE",
    "TABLE_COLUMNS",
    "TRAINING_FLOP_FACTOR",
    "ModelCase",
    "ModelContext",
    "References",
    "Timer",
    "Timing",
    "Variant",
    "add_parser",
    "add_speedups",
    "build_model",
    "default_output",
    "device_slug",
    "dtype_name",
    "environment",
    "flop_per_image",
    "format_table",
    "forward_macs",
    "rope_traffic_saved",
    "get_variant",
    "is_reference",
    "make_record",
    "measure_rounds",
    "measured_gemm_tflops",
    "parity",
    "peak_tflops",
    "pedantic_measure",
    "prepare_device",
    "reference_key",
    "resolve_device",
    "resolve_settings",
    "run",
    "run_kernel_case",
    "run_model_case",
    "slugify",
    "speedup",
    "table_peak",
    "time_case",
    "torch_dtype",
    "unavailable_reason",
    "unwritable",
    "variant_names",
    "write_results",
]
