"""Test setup: run Triton kernels through the interpreter when no GPU is present.

TRITON_INTERPRET must be set before triton is imported anywhere, so it is set
here, at collection time. Tests marked ``cuda`` skip cleanly without a GPU.
"""

import os
import sys

# The interpreter's per-tile numpy matmuls are small: a multithreaded BLAS only adds overhead.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

# Test modules in sub-folders import the shared helpers (parity.py) from here.
sys.path.insert(0, os.path.dirname(__file__))

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Triton 3.9 warns on every compile unless this is set; 1 keeps its current default.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
# One configuration per kernel in tests; the benchmarks autotune.
os.environ.setdefault("FASTVIT_AUTOTUNE", "0")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device():
    return "cuda" if HAS_CUDA else "cpu"
