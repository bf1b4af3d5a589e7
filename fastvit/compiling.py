"""``fastvit.compile``: torch.compile with the settings fastvit is tested under."""

from __future__ import annotations

import torch

from .dispatch import get_dispatcher, prepare
from .layers.auto import uses_dispatch


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

    ``auto`` layers choose their implementation before dynamo traces: on the
    first call for each input signature (shapes, dtypes, device, autocast
    state, grad mode), a forward pre-hook runs one eager forward
    (:func:`fastvit.dispatch.prepare`, under the call's grad mode) so every
    choice for those shapes is made -- checked, measured, cached or forced --
    and bound into the layers; the traced graph calls the bound ones. Off
    CUDA, or for a module with no ``auto`` layer, the hook does nothing. (A
    plain ``torch.compile`` after ``fastvit.prepare(model, example)`` does the
    same.)

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
    if isinstance(compiled, torch.nn.Module):
        compiled.register_forward_pre_hook(PrepareDispatch(), with_kwargs=True)
    return compiled


def _check_input_eagerly(module, args, kwargs):
    """Forward pre-hook of a compiled fastvit model: the eager model's input check, outside dynamo."""
    inputs = list(args) + [kwargs[k] for k in ("x",) if k in kwargs]
    if inputs:
        getattr(module, "_orig_mod", module)._check_input(inputs[0])


def _signature(args, kwargs) -> tuple:
    """What a dispatch key can depend on: each tensor input's shape, dtype, device; autocast; grad mode; the policy."""
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    autocast = tuple((d, torch.get_autocast_dtype(d)) for d in ("cuda", "cpu") if torch.is_autocast_enabled(d))
    dispatcher = get_dispatcher()
    return (tuple((tuple(t.shape), t.dtype, str(t.device)) for t in tensors), autocast, torch.is_grad_enabled(), id(dispatcher),
            dispatcher.policy())


class PrepareDispatch:
    """Forward pre-hook of a compiled module: :func:`fastvit.dispatch.prepare` once per input signature."""

    def __init__(self):
        self.seen: set[tuple] = set()
        self.dispatches: bool | None = None  # whether the model has auto layers (looked up once)

    def __call__(self, module, args, kwargs):
        model = getattr(module, "_orig_mod", module)
        if not get_dispatcher().on_cuda(tuple(args) + tuple(kwargs.values())):
            return None
        if self.dispatches is None:
            self.dispatches = uses_dispatch(model)
        if not self.dispatches:
            return None
        signature = _signature(args, kwargs)
        if signature not in self.seen:
            prepare(model, *args, grad=torch.is_grad_enabled(), **kwargs)
            self.seen.add(signature)
        return None
