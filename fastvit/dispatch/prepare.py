"""Making a model's dispatch choices ahead of time (``fastvit.prepare``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .dispatcher import get_dispatcher


def prepare(model: torch.nn.Module, *args, batch_sizes: Sequence[int] | None = None, grad: bool | None = None,
            **kwargs) -> list[dict[str, Any]]:
    """Run eager forwards of ``model`` on ``args`` so every ``auto`` layer measures and binds its choice.

    ``batch_sizes``: also prepare these batch sizes (the example's tensors are
    repeated or cut along dim 0); the choices are kept per batch bucket (a
    power of two), so prepare every bucket a compiled model will meet. Without
    it, the example's own batch.

    ``grad``: which calls to prepare; None (default): as the model is set,
    training calls for a model in train mode, inference calls for one in eval mode.
    ``grad=False`` (inference): each forward runs under ``torch.no_grad`` with
    every submodule in eval mode (no dropout, no stochastic depth): the choices
    for calls made under ``torch.no_grad`` / ``torch.inference_mode``.
    ``grad=True``: under grad mode, in the model's own train/eval state, with the
    RNG state restored afterwards: the choices for calls autograd records (a
    training step; each op timed forward + backward). Each module's mode is
    restored afterwards; forwards run inside the caller's autocast state, so the
    keys match the real calls'.

    After it, a plain ``torch.compile(model)`` traces the bound choices: no
    measuring, no graph break. Off CUDA nothing is measured and the forwards
    are skipped (a layer binds PyTorch's path on its first call). Returns the choices these forwards made or used.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"prepare: expected a torch.nn.Module, got {type(model).__name__}")
    sizes = _batch_sizes(batch_sizes, args, kwargs)
    if grad is None:
        grad = model.training
    dispatcher = get_dispatcher()
    if not dispatcher.on_cuda(tuple(args) + tuple(kwargs.values())):
        return []
    since = dispatcher.mark()
    modes = [(m, m.training) for m in model.modules()]
    devices = sorted({t.device.index for t in _tensors(args, kwargs) if t.is_cuda and t.device.index is not None})
    try:
        if not grad:
            model.eval()
        with torch.random.fork_rng(devices=devices), torch.enable_grad() if grad else torch.no_grad():
            for size in sizes:
                call_args, call_kwargs = (args, kwargs) if size is None else _resized(args, kwargs, size)
                model(*call_args, **call_kwargs)
    finally:
        for m, was_training in modes:
            m.training = was_training
    return dispatcher.choices(since)


def _tensors(args, kwargs):
    return [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]


def _batch_sizes(batch_sizes, args, kwargs) -> list[int | None]:
    if batch_sizes is None:
        return [None]
    if isinstance(batch_sizes, int) and not isinstance(batch_sizes, bool):
        batch_sizes = [batch_sizes]
    sizes = list(batch_sizes) if isinstance(batch_sizes, (list, tuple, range)) else None
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise ValueError(f"prepare: batch_sizes must be a non-empty sequence of positive ints, got {batch_sizes!r}")
    if not any(t.ndim > 0 for t in _tensors(args, kwargs)):
        raise ValueError("prepare: batch_sizes needs an example tensor with a batch dimension")
    return sizes


def _resized(args, kwargs, size):
    def resize(a):
        if not isinstance(a, torch.Tensor) or a.ndim == 0:
            return a
        reps = -(-size // a.shape[0])
        return a.repeat(reps, *([1] * (a.ndim - 1)))[:size] if reps > 1 else a[:size]

    return tuple(resize(a) for a in args), {k: resize(v) for k, v in kwargs.items()}
