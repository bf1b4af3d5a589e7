"""The SwiGLU MLP branches' shared fc1 gate, and timm's packed SwiGLU (``SwiGLUPacked``, DINOv2 giant).

Every SwiGLU branch computes ``act(x W_g^T + b_g) * (x W_x^T + b_x)`` before its dropout, optional
norm and ``fc2``: :class:`GluMlp` from the two halves of one packed ``fc1`` (gate first), timm's
``SwiGLU`` (:class:`fastvit.layers.eva_block.SwiGLU`, :class:`fastvit.layers.bias_free.SwiGLU`) from
``fc1_g`` and ``fc1_x``. How that gate runs is chosen once, at construction, by ``gate_impl``
(the model's ``linear_impl``; :class:`FusedGate`):

- ``torch``: the branch's own PyTorch ops (timm's order of operations);
- ``triton``: :func:`fastvit.kernels.linear_swiglu`, both GEMMs and the gate in one kernel;
- ``auto``: on CUDA the faster of the two per shape (op ``linear_swiglu``: checked against PyTorch,
  timed, bound, as every ``auto`` layer), PyTorch's off CUDA. Whether the fused gate pays can only be
  measured on a GPU; ``auto`` measures it there.

The fused gate needs SiLU (a branch built with another activation keeps PyTorch's ops). The
parameters, and so the state dict, are the same for every ``gate_impl``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastvit.dispatch import OFF_CUDA, Bindings, Candidate, bucket, dtype_name, lookup
from fastvit.kernels import ops

from .auto import _Kernel, _rows, declared
from .kernel_ops import kernel_op
from .linear import ResidualLinear, _autocast

GATE_IMPLS = ("auto", "torch", "triton")

_LINEAR_SWIGLU = _Kernel("linear_swiglu")


def _swiglu_torch(x, wg, bg, wx, bx):
    return F.silu(F.linear(x, wg, bg)) * F.linear(x, wx, bx)


def _swiglu_triton(x, wg, bg, wx, bx):
    return _LINEAR_SWIGLU(x, wg, bg, wx, bx)


def _swiglu_supports(x, wg, bg, wx, bx):
    return declared("linear_swiglu", device=x.device, dtype=x.dtype, in_features=wg.shape[1], out_features=wg.shape[0])


LINEAR_SWIGLU_CANDIDATES = (
    Candidate("torch", _swiglu_torch, "torch"),
    Candidate("triton", _swiglu_triton, "kernel", _swiglu_supports, bound=ops.declaration("linear_swiglu").tolerance.bound),
)


def _cast(x, wg, bg, wx, bx):
    """Under torch.autocast, everything in its dtype (as nn.Linear casts); biases may be None."""
    x, wg, wx = _autocast(x, wg, wx)
    bg, bx = (None, None) if bg is None else (bg.to(x.dtype), bx.to(x.dtype))
    return x, wg, bg, wx, bx


def _gate_torch(branch, x):
    return branch.torch_gate(x)


def _gate_triton(branch, x):
    return branch.linear_swiglu(*_cast(x, *branch.fc1_weights()))


def _gate_auto(branch, x):
    if not isinstance(x, torch.Tensor):  # a torch.fx proxy
        return branch.torch_gate(x)
    args = _cast(x, *branch.fc1_weights())
    wg = args[1]
    key = (dtype_name(args[0].dtype), bucket(_rows(args[0])), wg.shape[0], wg.shape[1], args[2] is not None)
    impl = lookup(branch._bound, "linear_swiglu", key, LINEAR_SWIGLU_CANDIDATES, args)
    return branch.torch_gate(x) if impl is OFF_CUDA else impl.fn(*args)


class FusedGate:
    """Mixin of the SwiGLU branches: ``gate(x) = act(x W_g^T + b_g) * (x W_x^T + b_x)`` by ``gate_impl``.

    The class gives ``fc1_weights() -> (W_g, b_g, W_x, b_x)`` (biases None without) and
    ``torch_gate(x)`` (its PyTorch ops); :meth:`init_gate` binds the implementation once.
    """

    def init_gate(self, gate_impl: str, act: nn.Module) -> None:
        if gate_impl not in GATE_IMPLS:
            raise ValueError(f"gate_impl must be one of {GATE_IMPLS} (the model's linear_impl), got {gate_impl!r}")
        if type(act) is not nn.SiLU:  # the kernel gates with SiLU only
            gate_impl = "torch"
        self.gate_impl = gate_impl
        self._gate = {"torch": _gate_torch, "triton": _gate_triton, "auto": _gate_auto}[gate_impl]
        if gate_impl == "triton":
            self.linear_swiglu = kernel_op("linear_swiglu")
        if gate_impl == "auto":
            self._bound = Bindings()
            self.dispatches = True  # fastvit.compile prepares the choices of modules that have this

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self._gate(self, x)


class GluMlp(FusedGate, nn.Module):
    """``residual + fc2(act(x1) * x2)`` where ``x1, x2`` are the two halves of ``fc1(x)``.

    timm's parameter names (``fc1`` D -> H, ``fc2`` H/2 -> D, ``norm`` an Identity as in
    timm's ``GluMlp`` without ``scale_mlp_norm``) and the same ``forward(x, residual)``
    contract as :class:`fastvit.layers.mlp.Mlp`: the branch owns the residual add, in
    ``fc2`` (a residual linear: dropout, stochastic depth, the LayerScale ``gamma``).
    The layers are given as for ``Mlp``; ``act_layer`` is the gate's activation class;
    ``gate_impl`` how the gate runs (:class:`FusedGate`).
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0, *,
                 fc1_layer=nn.Linear, act_layer=nn.SiLU, fc2_layer=ResidualLinear, gate_impl: str = "torch"):
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"a gated MLP splits fc1's outputs in two halves: hidden_dim must be even, got {hidden_dim}")
        self.fc1 = fc1_layer(dim, hidden_dim)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = fc2_layer(hidden_dim // 2, dim, drop=drop, drop_path=drop_path)
        self.init_gate(gate_impl, self.act)

    def fc1_weights(self):
        """The gate's and the value's (weight, bias): the two halves of ``fc1`` (views)."""
        w, b = self.fc1.weight, self.fc1.bias
        h = w.shape[0] // 2
        return w[:h], None if b is None else b[:h], w[h:], None if b is None else b[h:]

    def torch_gate(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.act(gate) * value

    def gated(self, x: torch.Tensor) -> torch.Tensor:
        """fc2's input: ``act(first half) * second half`` of fc1's output, after dropout."""
        return self.norm(self.drop1(self.gate(x)))

    def forward(self, x: torch.Tensor, residual: torch.Tensor, gamma=None) -> torch.Tensor:
        """``residual + MLP(x)`` (times the LayerScale ``gamma`` if given); x is the normalized input."""
        return self.fc2(self.gated(x), residual, gamma)
