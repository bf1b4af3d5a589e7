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

    Bad input raises the same ``ValueError`` / ``TypeError`` as the eager model:
    a fastvit model's input check also runs eagerly, in a forward pre-hook of
    the compiled module, before dynamo sees the call. (Under ``fullgraph=True``
    dynamo cannot let an exception raised inside the traced code escape; it
    reports ``Unsupported`` instead.) On good input the traced graph is the
    same, with no graph break.
    """
    compiled = torch.compile(model, mode=mode, dynamic=dynamic, fullgraph=fullgraph, backend=backend, **kwargs)
    if isinstance(compiled, torch.nn.Module) and callable(getattr(model, "_check_input", None)):
        compiled.register_forward_pre_hook(_check_input_eagerly, with_kwargs=True)
    return compiled


def _check_input_eagerly(module, args, kwargs):
    """Forward pre-hook of a compiled fastvit model: the eager model's input check, outside dynamo."""
    inputs = list(args) + [kwargs[k] for k in ("x",) if k in kwargs]
    if inputs:
        getattr(module, "_orig_mod", module)._check_input(inputs[0])
