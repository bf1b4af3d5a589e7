"""LayerNorm and RMSNorm implementations, chosen by ``norm_impl``. Same parameters in each
(LayerNorm: weight, bias; RMSNorm: weight, as timm's ``RmsNorm`` and PyTorch's ``nn.RMSNorm``).

RMSNorm (``norm_layer="rmsnorm"``: AIMv2, the ViT-22B layouts): :class:`TritonRMSNorm` runs
:func:`fastvit.kernels.rms_norm` (LayerNorm's kernels without mean and bias), :class:`AutoRMSNorm`
weighs it against ``F.rms_norm`` per shape as ``auto``'s LayerNorm does (op ``rms_norm``: checked
against PyTorch, timed, bound; PyTorch's off CUDA); a block's RMS norms, :class:`TritonBlockRMSNorm` and
:class:`AutoBlockRMSNorm`, store their output in the autocast dtype and fork as LayerNorm's do (op
``rms_norm_fork``: :func:`fastvit.kernels.rms_norm_fork` adds the residual's gradient in the RMSNorm
backward kernel). All are ``nn.RMSNorm``s (same state dict).

A block's norms (the second class of each :data:`~fastvit.layers.impls.NORM_IMPLS`
entry) are used through a fork, ``(normed, residual)``: the branch's input and
the residual the branch adds back (``x`` itself). A fork can join the two
gradients at ``x`` inside its own backward: the Triton norm's ``fork`` does
(:func:`fastvit.kernels.layer_norm_fork`, one LayerNorm backward launch with
the residual's gradient added, no separate add pass), as ``auto``'s does where
it picks the kernel. :func:`fork_function` gives :class:`~fastvit.model.Block`
the fork of any norm it is built with, once: a norm without ``fork`` (torch's
``nn.LayerNorm``, or any norm in custom parts) gets :func:`plain_fork`, which
calls the norm and leaves the sum to autograd. Forward hooks on a block's norm
fire as on timm's: while any is registered the fork is the plain one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from fastvit.dispatch import OFF_CUDA, Bindings, Candidate, bucket, dtype_name, lookup
from fastvit.kernels import ops

from .auto import _Kernel, _rows, declared
from .kernel_ops import kernel_op
from .linear import autocast_dtype


class TritonLayerNorm(nn.LayerNorm):
    """nn.LayerNorm computed by fastvit's Triton kernel (fp32 statistics)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_norm = kernel_op("layer_norm")

    def out_dtype(self, x):
        """Output dtype; None keeps x's, as nn.LayerNorm does (fp32 even under autocast)."""
        return None

    def forward(self, x):
        return self.layer_norm(x, self.weight, self.bias, self.eps, out_dtype=self.out_dtype(x))


class TritonBlockNorm(TritonLayerNorm):
    """A block's LayerNorm (``norm1``, ``norm2``), whose output only feeds a GEMM.

    Under autocast it stores its output straight in the autocast dtype -- the
    values the GEMM's input cast would produce from nn.LayerNorm's fp32 output
    -- so an fp32 residual stream costs no separate cast pass. Outside autocast
    it is TritonLayerNorm. ``fork(x)`` returns ``(LN(x), x)`` from
    :func:`fastvit.kernels.layer_norm_fork`: the backward adds the residual's
    gradient inside the LayerNorm backward kernel.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_norm_fork = kernel_op("layer_norm_fork")

    def out_dtype(self, x):
        return autocast_dtype(x)

    def fork(self, x):
        return self.layer_norm_fork(x, self.weight, self.bias, self.eps, out_dtype=self.out_dtype(x))


# The old name (it has nothing to do with CLIP's ``pre_norm``, the norm before the blocks); kept as an alias.
TritonPreNorm = TritonBlockNorm


def plain_fork(norm: nn.Module, x):
    """The fork of a norm that has none: ``(norm(x), x)`` (autograd sums the gradients at ``x``)."""
    return norm(x), x


def _hooked(norm: nn.Module) -> bool:
    return bool(norm._forward_hooks or norm._forward_pre_hooks or _global_forward_hooks or _global_forward_pre_hooks)


def fused_fork(norm: nn.Module, x):
    """``norm.fork(x)``; while forward hooks watch ``norm`` (its own or global ones),
    :func:`plain_fork`, so the hooks see (and may change) its forward as on any module."""
    return plain_fork(norm, x) if _hooked(norm) else norm.fork(x)


def fork_function(norm: nn.Module):
    """``f(norm, x) -> (normed, residual)`` for ``norm``: :func:`fused_fork` when its class has ``fork``,
    else :func:`plain_fork`.

    A plain function (not bound to ``norm``), so a module keeping it pickles and deep-copies as before.
    """
    return fused_fork if callable(getattr(type(norm), "fork", None)) else plain_fork


# --------------------------------------------------------------------------- RMSNorm


def _check_rms(norm: nn.RMSNorm, cls: str) -> None:
    if len(norm.normalized_shape) != 1 or not norm.elementwise_affine:
        raise ValueError(f"{cls}: the kernel normalizes the last dim with an affine weight; got normalized_shape "
                         f"{tuple(norm.normalized_shape)}, elementwise_affine={norm.elementwise_affine}")  # fmt: skip


class TritonRMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` (one normalized dim, affine) computed by fastvit's Triton kernel (fp32 statistics)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_rms(self, type(self).__name__)
        self.rms_norm = kernel_op("rms_norm")

    def out_dtype(self, x):
        """Output dtype; None keeps x's (as ``F.rms_norm``)."""
        return None

    def forward(self, x):
        return self.rms_norm(x, self.weight, self.eps, out_dtype=self.out_dtype(x))


class TritonBlockRMSNorm(TritonRMSNorm):
    """A block's RMSNorm, whose output only feeds a GEMM: stored in the autocast dtype under autocast
    (as :class:`TritonBlockNorm`); ``fork(x) -> (RMSNorm(x), x)`` from :func:`fastvit.kernels.rms_norm_fork`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rms_norm_fork = kernel_op("rms_norm_fork")

    def out_dtype(self, x):
        return autocast_dtype(x)

    def fork(self, x):
        return self.rms_norm_fork(x, self.weight, self.eps, out_dtype=self.out_dtype(x))


_RMS_NORM, _RMS_NORM_FORK = _Kernel("rms_norm"), _Kernel("rms_norm_fork")
_RMS_BOUND = ops.declaration("rms_norm").tolerance.bound


def _rms_norm_torch(x, weight, eps, out_dtype):
    out = F.rms_norm(x, (x.shape[-1],), weight, eps)
    return out if out_dtype is None else out.to(out_dtype)


def _rms_norm_triton(x, weight, eps, out_dtype):
    return _RMS_NORM(x, weight, eps, out_dtype=out_dtype)


def _rms_norm_supports(x, weight, eps, out_dtype):
    return declared("rms_norm", device=x.device, dtype=x.dtype, width=x.shape[-1], weight_dtype=weight.dtype,
                    out_dtype=out_dtype)  # fmt: skip


def _rms_norm_fork_torch(x, weight, eps, out_dtype):
    return _rms_norm_torch(x, weight, eps, out_dtype), x


def _rms_norm_fork_triton(x, weight, eps, out_dtype):
    return _RMS_NORM_FORK(x, weight, eps, out_dtype=out_dtype)


RMS_NORM_CANDIDATES = (
    Candidate("torch", _rms_norm_torch, "torch"),
    Candidate("triton", _rms_norm_triton, "kernel", _rms_norm_supports, bound=_RMS_BOUND),
)
# a block's RMS norm at its residual junction: (RMSNorm(x), x); the kernel's fork adds the residual's gradient
RMS_NORM_FORK_CANDIDATES = (
    Candidate("torch", _rms_norm_fork_torch, "torch"),
    Candidate("triton", _rms_norm_fork_triton, "kernel", _rms_norm_supports, bound=_RMS_BOUND),
)


class AutoRMSNorm(nn.RMSNorm):
    """``nn.RMSNorm``; on CUDA the faster of ``F.rms_norm`` and fastvit's kernel for the shape (where they agree).
    Without an affine weight or over several dims: ``nn.RMSNorm``'s forward."""

    dispatches = True  # fastvit.compile prepares the choices of modules that have this

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bound = Bindings()

    def out_dtype(self, x):
        """Output dtype; None keeps ``F.rms_norm``'s."""
        return None

    def _plain(self, x) -> bool:
        """Whether the call takes ``nn.RMSNorm``'s forward: a torch.fx proxy, or what the kernel does not compute."""
        return not isinstance(x, torch.Tensor) or self.weight is None or len(self.normalized_shape) != 1

    def _call(self, x):
        """(the op's key, its arguments) for ``x``."""
        out_dtype = self.out_dtype(x)
        key = (dtype_name(x.dtype), None if out_dtype is None else dtype_name(out_dtype), dtype_name(self.weight.dtype),
               bucket(_rows(x)), x.shape[-1], x.is_contiguous())  # fmt: skip
        return key, (x, self.weight, self.eps, out_dtype)

    def forward(self, x):
        if self._plain(x):
            return super().forward(x)
        key, args = self._call(x)
        impl = lookup(self._bound, "rms_norm", key, RMS_NORM_CANDIDATES, args)
        return super().forward(x) if impl is OFF_CUDA else impl.fn(*args)


class AutoBlockRMSNorm(AutoRMSNorm):
    """A block's RMSNorm whose output only feeds a GEMM (autocast dtype under autocast, as
    :class:`AutoBlockNorm`); ``fork(x) -> (RMSNorm(x), x)`` is op ``rms_norm_fork``, timed forward +
    backward under grad, where the kernel's fork adds the residual's gradient in its backward."""

    def out_dtype(self, x):
        return autocast_dtype(x)

    def fork(self, x):
        if self._plain(x):
            return nn.RMSNorm.forward(self, x), x
        key, args = self._call(x)
        impl = lookup(self._bound, "rms_norm_fork", key, RMS_NORM_FORK_CANDIDATES, args)
        return (nn.RMSNorm.forward(self, x), x) if impl is OFF_CUDA else impl.fn(*args)
