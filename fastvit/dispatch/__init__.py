"""``auto``: choose, per op and shape, the fastest implementation on this GPU that is right.

A layer describes an op by its :class:`Candidate` implementations (fastvit's
Triton kernel, PyTorch's equivalents). The first eager call for a new (op,
GPU, key, mode) asks the dispatcher (:func:`choose`): every kernel candidate
must first agree with PyTorch's on the call (:mod:`~fastvit.dispatch.gate`),
then the candidates left are timed (forward + backward for a training call);
the pick is kept in memory and in a JSON file in the user cache dir
(:func:`cache_dir`), keyed by GPU name and torch/triton/fastvit versions, so the
next process pays nothing. The layer binds the pick (:mod:`~fastvit.dispatch.binding`)
and runs it from then on without asking again. ``FASTVIT_DISPATCH=measure|kernel|torch``
forces a policy (read when a choice is made); off CUDA it is always PyTorch.
:func:`choices` lists what was chosen and why; :func:`prepare` makes a model's
choices ahead of time, so a plain ``torch.compile(model)`` traces them.

Importing this package imports neither triton nor :mod:`fastvit.kernels`. See docs/auto.md.
"""

from __future__ import annotations

from .binding import OFF_CUDA, Bindings, lookup, unbind_all
from .cache import ENV_CACHE_DIR, DispatchCacheWarning, cache_dir, software_versions
from .dispatcher import (
    Choice, Dispatcher, KernelMismatchWarning, UnpreparedWarning, choices, choose, cuda_inputs, default_timer, forward_backward,
    get_dispatcher, in_capture, mark, set_dispatcher, using,
)
from .policy import DEFAULT_POLICY, ENV_POLICY, MARGIN, MODES, POLICIES, Candidate, bucket, dtype_name, mode_of, normalize_key, policy
from .prepare import prepare

__all__ = [
    "Bindings", "Candidate", "Choice", "DEFAULT_POLICY", "DispatchCacheWarning", "Dispatcher", "ENV_CACHE_DIR", "ENV_POLICY",
    "KernelMismatchWarning", "MARGIN", "MODES", "OFF_CUDA", "POLICIES", "UnpreparedWarning", "bucket", "cache_dir", "choices",
    "choose", "cuda_inputs", "default_timer", "dtype_name", "forward_backward", "get_dispatcher", "in_capture", "lookup", "mark",
    "mode_of", "normalize_key", "policy", "prepare", "set_dispatcher", "software_versions", "unbind_all", "using",
]
