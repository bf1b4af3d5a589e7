"""Linear layers with fused epilogues, chosen by ``linear_impl``.

Every class here is an ``nn.Linear`` (same ``weight``/``bias``), so switching
implementation never changes the state dict. A "residual" linear owns the
residual add of a pre-norm block branch: ``residual + drop_path(dropout(x W^T + b))``.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import GELU_APPROXIMATE
from .drop import DropPath
from .fused_branch import branch_scale, fused_branch
from .kernel_ops import kernel_op


# Device types torch.autocast knows; asking about any other raises.
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu", "xla", "ipu", "mtia", "maia", "privateuseone")


def autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    """The dtype torch.autocast casts GEMM inputs to on ``t``'s device, or None outside autocast."""
    device = t.device.type
    if device not in _AUTOCAST_DEVICES:  # meta, say: torch.is_autocast_enabled raises for it
        return None
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def _autocast(*tensors):
    """Under torch.autocast, cast to its dtype as nn.Linear would; otherwise unchanged."""
    dtype = autocast_dtype(tensors[0])
    return tensors if dtype is None else tuple(t.to(dtype) for t in tensors)


def _layer_scaled(branch, gamma):
    """``gamma * branch`` as eager timm's LayerScale computes it (an fp32 gamma promotes the product)."""
    return branch if gamma is None else branch * gamma


class ResidualLinear(nn.Linear):
    """The branch's last projection plus the residual add (reference: separate ops).

    ``forward(x, residual, gamma=None)``: ``residual + drop_path(gamma * drop(x W^T + b))``,
    ``gamma`` an optional (out_features,) LayerScale owned by the caller.
    """

    def __init__(self, in_features: int, out_features: int, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__(in_features, out_features)
        self.drop = nn.Dropout(drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x, residual, gamma=None):
        return residual + self.drop_path(_layer_scaled(self.drop(super().forward(x)), gamma))


class TritonResidualLinear(ResidualLinear):
    """Bias, stochastic depth and residual applied in the GEMM's epilogue (one pass over the output).

    Under autocast the GEMM runs in the autocast dtype while an fp32 residual
    stream stays fp32: the add happens in fp32 and the output is fp32, as in
    eager. Stochastic depth becomes a per-sample scale in the epilogue, drawn
    as :class:`DropPath` draws it. Only element-wise dropout on the branch
    (``proj_drop`` / ``drop_rate`` > 0 while training) falls back to the
    separate ops, as does a residual in a third dtype (fp16 under bf16 autocast).
    A LayerScale ``gamma`` becomes the epilogue's per-channel factor (its
    gradient included); one in a third dtype is promoted to fp32, as eager's
    ``branch * gamma`` promotes.
    """

    def __init__(self, in_features: int, out_features: int, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__(in_features, out_features, drop=drop, drop_path=drop_path)
        self.linear_residual = kernel_op("linear_residual")

    def forward(self, x, residual, gamma=None):
        h, weight, bias = _autocast(x, self.weight, self.bias)
        plan = fused_branch(h, residual, gamma, training=self.training, dropout_p=self.drop.p, drop_path_p=self.drop_path.p)
        if plan is None:
            return super().forward(x, residual, gamma)
        gamma, stochastic = plan
        scale = branch_scale(residual, self.drop_path.p) if stochastic else None
        return self.linear_residual(h, weight, bias, residual, scale=scale, gamma=gamma)


class TritonLinearGELU(nn.Linear):
    """fc1 with bias and GELU in the GEMM's epilogue.

    ``approximate``: "none" (exact erf), "tanh" or "quick" (CLIP's ``h * sigmoid(1.702 h)``);
    :func:`fastvit.layers.activations.gelu_approximate` maps an ``act_layer`` name to it.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None,
                 approximate: str = "none"):  # fmt: skip
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if approximate not in GELU_APPROXIMATE.values():
            raise ValueError(f"approximate must be one of {sorted(GELU_APPROXIMATE.values())}, got {approximate!r}")
        self.approximate = approximate
        self.linear_gelu = kernel_op("linear_gelu")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, approximate={self.approximate!r}"

    def forward(self, x):
        return self.linear_gelu(*_autocast(x, self.weight, self.bias), approximate=self.approximate)


def triton_mlp_forward(mlp_residual, fc1: nn.Linear, drop: nn.Dropout, fc2: ResidualLinear, x, residual, gamma=None,
                       approximate=None):  # fmt: skip
    """``residual + gamma * fc2(drop(gelu(fc1(x))))`` as the one fused op :func:`fastvit.kernels.mlp_residual`.

    For an :class:`~fastvit.layers.mlp.Mlp` built with ``linear_impl="triton"``
    (pass the op and its ``fc1``, ``drop``, ``fc2``): the same result as its forward,
    with a backward that applies GELU's derivative in fc2's input-gradient GEMM
    instead of a separate pass. Element-wise dropout while training and a
    residual in a third dtype fall back to the separate ops, as
    :class:`TritonResidualLinear` does; stochastic depth becomes the per-sample
    scale, drawn as :class:`DropPath` draws it. ``gamma`` is an optional
    (dim,) LayerScale (as in :class:`TritonResidualLinear`); ``approximate``
    the GELU form, by default ``fc1.approximate`` ("none" if fc1 has none).
    """
    if approximate is None:
        approximate = getattr(fc1, "approximate", "none")
    h, w1, b1, w2, b2 = _autocast(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    plan = fused_branch(h, residual, gamma, training=fc2.training, dropout_p=max(drop.p, fc2.drop.p), drop_path_p=fc2.drop_path.p)
    if plan is None:
        return fc2(drop(fc1(x)), residual, gamma)
    gamma, stochastic = plan
    scale = branch_scale(residual, fc2.drop_path.p) if stochastic else None
    return mlp_residual(h, w1, b1, w2, b2, residual, scale=scale, gamma=gamma, approximate=approximate)
