"""``fastvit.compile``: torch.compile with the settings fastvit is tested under."""

from __future__ import annotations

import torch


def compile(model: torch.nn.Module, mode: str | None = None, dynamic: bool | None = None, fullgraph: bool = True, backend: str = "inductor", **kwargs):
    """Compile a fastvit model (or any module) with ``torch.compile``.

    - ``fullgraph=True``: every fastvit implementation traces without a graph
      break (the Triton kernels are registered custom ops), so a break is a bug
      and raises instead of silently splitting the graph.
    - ``mode``: ``None`` (default inductor), ``"max-autotune"``, or
      ``"reduce-overhead"`` for CUDA graphs (inference at fixed shapes).
    - ``dynamic``: ``None`` lets PyTorch start static and recompile once with
      symbolic sizes when a second input size arrives; with
      ``dynamic_img_size=True`` models that means one compile for the first
      image size, one more for the second, and none after. ``True`` compiles
      dynamic from the start; ``False`` specializes on every size.

    Nothing global is changed: no inductor or dynamo configuration is touched.
    """
    return torch.compile(model, mode=mode, dynamic=dynamic, fullgraph=fullgraph, backend=backend, **kwargs)
