"""Binding a layer to one of fastvit's Triton ops when the layer is built, not in its forward.

A Triton-backed layer calls :func:`kernel_op` in ``__init__`` and keeps the op
function: its forward then has no import and no decision left. The op is a
module-level function of :mod:`fastvit.kernels`, so the layer still pickles.
Building such a layer imports Triton; ``import fastvit`` does not.
"""

from __future__ import annotations

import importlib
from typing import Callable


def kernel_op(name: str) -> Callable:
    """The public op ``fastvit.kernels.<name>``; ImportError naming the fix when Triton is missing."""
    try:
        importlib.import_module("triton")
    except ImportError as e:
        raise ImportError(f"fastvit's Triton op {name!r} needs triton (pip install 'fastvit[triton]'); "
                          "or build the model with the 'torch' or 'auto' implementation") from e
    return getattr(importlib.import_module("fastvit.kernels"), name)
