"""pytest-benchmark suite: fixtures shared by the model and kernel benchmarks.

Run with ``pytest benchmarks --benchmark-only`` (add ``--benchmark-json=FILE``
to keep the records: each case's ``extra_info`` is a :mod:`fastvit.bench`
record, readable by ``fastvit compare``). Cases marked ``cuda`` skip without a
GPU; cases marked ``slow`` (the wider grid) are deselected unless ``-m slow``
(pyproject's addopts).
Unlike ``tests/``, nothing here sets TRITON_INTERPRET or FASTVIT_AUTOTUNE: the
kernels autotune as they would in use.
"""

from __future__ import annotations

import os

import pytest
import torch

from fastvit import bench

HAS_CUDA = torch.cuda.is_available()
HERE = os.path.dirname(os.path.abspath(__file__))

# (rounds, warm-up calls) per measurement
MODEL_ROUNDS = (20, 5) if HAS_CUDA else (3, 1)
KERNEL_ROUNDS = (1, 1) if os.environ.get("FASTVIT_KERNEL_BENCH_SMOKE") == "1" else (30, 5)


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and str(item.path).startswith(HERE + os.sep):  # only this folder's cases
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def device() -> str:
    device = "cuda" if HAS_CUDA else "cpu"
    bench.prepare_device(device)
    return device


@pytest.fixture(scope="session")
def model_rounds() -> tuple[int, int]:
    """(timed rounds, warm-up calls) for a model case."""
    return MODEL_ROUNDS


@pytest.fixture(scope="session")
def kernel_rounds() -> tuple[int, int]:
    """(timed rounds, warm-up calls) for a kernel case."""
    return KERNEL_ROUNDS


@pytest.fixture(scope="session")
def references() -> bench.References:
    """Reference records seen so far, so each case's extra_info carries its speed-up."""
    return bench.References()


@pytest.fixture(scope="session")
def model_context(device):
    """``get(case)`` -> the :class:`fastvit.bench.ModelContext` for the case's (model, dtype, batch).

    One context is kept at a time (cases are ordered by group), so GPU memory
    holds one set of input buffers.
    """
    held: dict[str, bench.ModelContext] = {}

    def get(case: bench.ModelCase) -> bench.ModelContext:
        ctx = held.get("ctx")
        if ctx is None or not ctx.matches(case):
            held.clear()
            del ctx
            bench._free_memory(device)
            held["ctx"] = ctx = bench.ModelContext(case.model, case.dtype, case.batch, device, case.overrides)
        return ctx

    yield get
    held.clear()
