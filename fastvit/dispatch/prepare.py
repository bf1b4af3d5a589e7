"""Making a model's dispatch choices ahead of tracing."""

from __future__ import annotations

from typing import Any

import torch

from .dispatcher import get_dispatcher


def prepare(model: torch.nn.Module, *args, **kwargs) -> list[dict[str, Any]]:
    """Run one eager forward of ``model`` on ``args`` so every ``auto`` layer makes its choice for these shapes.

    The forward runs under ``torch.no_grad`` with every submodule in eval mode
    (no dropout, no stochastic depth, no running-statistics update; each
    module's mode is restored afterwards), inside the caller's autocast state,
    so the keys match the real call's. A compiled graph traced afterwards finds
    the choices recorded (:func:`~fastvit.dispatch.choose` inside capture
    returns them). Off CUDA nothing is chosen and the forward is skipped.
    Returns the choices this forward used.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"prepare: expected a torch.nn.Module, got {type(model).__name__}")
    dispatcher = get_dispatcher()
    if not dispatcher.on_cuda(tuple(args) + tuple(kwargs.values())):
        return []
    since = dispatcher.mark()
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for m, training in modes:
            m.training = training
    return dispatcher.choices(since)
