"""Model throughput: presets x variants x dtype x batch, inference and training step.

Each case is one :func:`fastvit.bench.run_model_case` (the same measurement
``fastvit bench`` makes), driven through ``benchmark.pedantic``; the record
lands in ``benchmark.extra_info``. Without a GPU only the CPU subset runs:
ViT-Ti, batch 4, fp32, reference vs sdpa vs sdpa+compile (one compile, ~30 s).

CUDA grid (~7 minutes on an H100, most of it torch.compile): ViT-B/16 across
every variant, ViT-L/14 and ViT-H/14 (head_dim 80) across the eager fastvit
variants. ``-m slow`` adds the rest: the other compiled variants, fp16 and a
smaller batch.
"""

from __future__ import annotations

import pytest
import torch

from fastvit import bench

BOTH = bench.MODES
SLOW = pytest.mark.slow

# (model, dtype, batch, variants (reference first), modes, marks)
CUDA_GRID = [
    ("vit_base_patch16_224", "bf16", 256, ("reference", "sdpa", "fused", "sdpa+compile", "fused+compile", "timm", "hf"), BOTH, ()),
    ("vit_large_patch14_224", "bf16", 128, ("reference", "sdpa", "fused"), BOTH, ()),
    ("vit_huge_patch14_224", "bf16", 64, ("reference", "sdpa", "fused"), BOTH, ()),
    ("vit_base_patch16_224", "bf16", 256, ("reference+compile", "timm+compile"), BOTH, SLOW),
    ("vit_base_patch16_224", "fp16", 256, ("reference", "sdpa", "fused", "fused+compile"), BOTH, SLOW),
    ("vit_base_patch16_224", "bf16", 64, ("reference", "sdpa", "fused", "fused+compile"), BOTH, SLOW),
    ("vit_large_patch14_224", "bf16", 128, ("sdpa+compile", "fused+compile"), BOTH, SLOW),
]
CPU_GRID = [
    ("vit_tiny_patch16_224", "fp32", 4, ("reference", "sdpa", "sdpa+compile"), ("inference",), ()),
]


def _params(grid):
    for model, dtype, batch, variants, modes, marks in grid:
        for mode in modes:
            for variant in variants:
                case = bench.ModelCase(model, variant, mode, dtype, batch)
                yield pytest.param(case, id=f"{model}-{dtype}-b{batch}-{variant}-{mode}", marks=marks)


@pytest.mark.parametrize("case", list(_params(CUDA_GRID if torch.cuda.is_available() else CPU_GRID)))
def test_model_throughput(benchmark, case, model_context, model_rounds, references):
    rounds, warmup = model_rounds
    ctx = model_context(case)
    record = bench.run_model_case(
        case, ctx, rounds=rounds, warmup=warmup, measure=bench.pedantic_measure(benchmark), raise_errors=True
    )
    if record["status"] == "skipped":
        pytest.skip(record["reason"])
    benchmark.group = f"{case.model} {case.dtype} b{case.batch} {case.mode}"
    references.attach(benchmark, record)
