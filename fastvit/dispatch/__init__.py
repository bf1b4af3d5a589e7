"""``auto``: choose, per op and shape, the fastest implementation on this GPU.

A layer describes an op by its :class:`Candidate` implementations (fastvit's
Triton kernel, PyTorch's equivalents) and asks :func:`choose` which one to run
for a call, with a key naming what the choice depends on (dtype and the shapes
that matter). The first call for a new (op, GPU, key) times the supported
candidates; the pick is kept in memory and in a JSON file in the user cache
dir (:func:`cache_dir`), keyed by GPU name and torch/triton/fastvit versions,
so the next process pays nothing. ``FASTVIT_DISPATCH=measure|kernel|torch``
forces a policy; off CUDA it is always PyTorch. :func:`choices` lists what
was chosen and why; :func:`prepare` makes a model's choices eagerly (what
``fastvit.compile`` does before dynamo traces, so the graph sees fixed choices).

Importing this package imports neither triton nor :mod:`fastvit.kernels`.
"""

from __future__ import annotations

from .cache import ENV_CACHE_DIR, DispatchCacheWarning, cache_dir, software_versions
from .dispatcher import (
    Choice, Dispatcher, choices, choose, cuda_inputs, default_timer, get_dispatcher, in_capture, mark, set_dispatcher, using,
)
from .policy import DEFAULT_POLICY, ENV_POLICY, MARGIN, POLICIES, Candidate, bucket, dtype_name, normalize_key, policy
from .prepare import prepare

__all__ = [
    "Candidate", "Choice", "DEFAULT_POLICY", "DispatchCacheWarning", "Dispatcher", "ENV_CACHE_DIR", "ENV_POLICY", "MARGIN", "POLICIES", "bucket",
    "cache_dir", "choices", "choose", "cuda_inputs", "default_timer", "dtype_name", "get_dispatcher", "in_capture", "mark",
    "normalize_key", "policy", "prepare", "set_dispatcher", "software_versions", "using",
]
