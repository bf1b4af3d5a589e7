"""Multi-head self-attention and its interchangeable backends (``attn_impl``).

A backend is a function ``(q, k, v, dropout_p, scale) -> out`` over
(B, H, N, D) tensors with the semantics of
``torch.nn.functional.scaled_dot_product_attention`` (non-causal). The
:class:`Attention` module picks its backend once, at construction, from
:data:`BACKENDS`; the optional packages (flash-attn, xformers) are imported
only when their backend is chosen.

``auto`` (:mod:`fastvit.layers.auto`) runs, per shape, the fastest of SDPA
(plain, or restricted to its flash, cuDNN or efficient backend) and fastvit's
Triton kernel, measured once on this GPU and cached; SDPA off CUDA. Triton
does not implement attention dropout: with dropout > 0 in training,
``triton`` and ``auto`` run SDPA.

The module calls a backend's packed form, ``(qkv, dropout_p, scale) -> out``
over the (B, N, 3, H, D) view of the qkv projection (:func:`get_packed_backend`):
``triton`` and ``auto`` take it whole, so the backward
writes one packed gradient; the others get (B, H, N, D) views of it.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import ops
from ..kernels.tuning import interpreting
from ..kernels.reference import attention_ref
from .auto import auto_attention, auto_attention_packed
from .kernel_ops import kernel_op
from .linear import ResidualLinear

AttentionFn = Callable[..., torch.Tensor]

def eager_attention(q, k, v, dropout_p=0.0, scale=None):
    """The reference: explicit softmax(q k^T * scale) v."""
    return attention_ref(q, k, v, scale, upcast=False, dropout_p=dropout_p)


def sdpa_attention(q, k, v, dropout_p=0.0, scale=None):
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)


def _require_triton_device(t: torch.Tensor) -> None:
    if not (t.is_cuda or interpreting()):
        raise RuntimeError(
            "attn_impl='triton' needs a CUDA tensor (or TRITON_INTERPRET=1 to run the kernel on the CPU, slowly); "
            f"got a tensor on {t.device}. Use attn_impl='auto' to fall back to SDPA off the GPU."
        )


def triton_attention(kernel, q, k, v, dropout_p=0.0, scale=None):
    """fastvit's kernel (``fastvit.kernels.attention``, bound when the backend is chosen) over q, k, v."""
    if dropout_p > 0:  # the kernel has no dropout; documented fallback
        return sdpa_attention(q, k, v, dropout_p, scale)
    _require_triton_device(q)
    return kernel(q, k, v, scale=scale)


def unpack_qkv(qkv):
    """(B, H, N, D) views of q, k, v in a (B, N, 3, H, D) tensor; no copy."""
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


def triton_attention_packed(kernel, qkv, dropout_p=0.0, scale=None):
    """The packed form: ``fastvit.kernels.attention_qkvpacked`` takes the (B, N, 3, H, D) qkv whole."""
    if dropout_p > 0:
        return sdpa_attention(*unpack_qkv(qkv), dropout_p, scale)
    _require_triton_device(qkv)
    return kernel(qkv, scale=scale)


def _load_triton() -> AttentionFn:
    return functools.partial(triton_attention, kernel_op("attention"))


def _load_triton_packed() -> AttentionFn:
    return functools.partial(triton_attention_packed, kernel_op("attention_qkvpacked"))


def triton_unsupported(device_type: str, dtype: torch.dtype, head_dim: int, dropout_p: float = 0.0) -> str | None:
    """None when the Triton kernel can take such a call, else the reason it cannot."""
    return ops.supports("attention", device=device_type, dtype=dtype, head_dim=head_dim, dropout_p=dropout_p,
                             interpret=False)  # fmt: skip


def flash_attn_attention(q, k, v, dropout_p=0.0, scale=None):
    from flash_attn import flash_attn_func

    if q.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"attn_impl='flash_attn' takes fp16 or bf16 tensors, got {q.dtype}; use attn_impl='triton' or 'sdpa' for fp32")
    if q.shape[-1] > 256 or q.shape[-1] % 8:
        raise ValueError(f"attn_impl='flash_attn' needs head_dim <= 256 and a multiple of 8, got {q.shape[-1]}")
    # flash-attn wants (B, N, H, D): the transposes are views of the packed qkv projection.
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p, softmax_scale=scale)
    return out.transpose(1, 2)


def xformers_attention(q, k, v, dropout_p=0.0, scale=None):
    import xformers.ops as xops

    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), p=dropout_p, scale=scale)
    return out.transpose(1, 2)


# Backends are module-level functions (never closures), so a model holding one pickles and deep-copies.
def _load_flash_attn() -> AttentionFn:
    try:
        import flash_attn  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "attn_impl='flash_attn' needs the flash-attn package (CUDA only): pip install flash-attn --no-build-isolation"
        ) from e
    return flash_attn_attention


def _load_xformers() -> AttentionFn:
    try:
        import xformers.ops  # noqa: F401
    except ImportError as e:
        raise ImportError("attn_impl='xformers' needs the xformers package: pip install xformers") from e
    return xformers_attention


# attn_impl -> a loader returning the backend function (loaders import optional packages).
BACKENDS: dict[str, Callable[[], AttentionFn]] = {
    "auto": lambda: auto_attention,
    "triton": _load_triton,
    "flash_attn": _load_flash_attn,
    "xformers": _load_xformers,
    "sdpa": lambda: sdpa_attention,
    "eager": lambda: eager_attention,
}


def get_attention_backend(name: str) -> AttentionFn:
    if name not in BACKENDS:
        raise ValueError(f"unknown attn_impl {name!r}; valid: {list(BACKENDS)}")
    return BACKENDS[name]()


# attn_impl -> its packed form, where it has its own; the rest unpack (get_packed_backend).
PACKED_BACKENDS: dict[str, Callable[[], AttentionFn]] = {"auto": lambda: auto_attention_packed, "triton": _load_triton_packed}


def get_packed_backend(name: str) -> AttentionFn:
    """``(qkv, dropout_p, scale) -> out`` for attn_impl ``name``, qkv (B, N, 3, H, D), out (B, H, N, D)."""
    if name in PACKED_BACKENDS:
        return PACKED_BACKENDS[name]()
    return functools.partial(_unpacked, get_attention_backend(name))  # a partial of module-level functions pickles; a closure would not


def _unpacked(fn: AttentionFn, qkv, dropout_p=0.0, scale=None):
    return fn(*unpack_qkv(qkv), dropout_p=dropout_p, scale=scale)


def backend_status() -> dict[str, str | None]:
    """attn_impl -> None if it can be selected here, else why not (used by ``fastvit info``)."""
    status = {}
    for name, package in (("auto", None), ("triton", "triton"), ("flash_attn", "flash_attn"), ("xformers", "xformers"), ("sdpa", None), ("eager", None)):
        missing = package is not None and importlib.util.find_spec(package) is None
        status[name] = f"{package} is not installed" if missing else None
    return status


class Attention(nn.Module):
    """qkv projection -> attention backend -> output projection (+ residual).

    ``attn_fn`` is the packed backend (:func:`get_packed_backend`), ``proj_layer``
    the residual projection's class; both are given by
    :func:`fastvit.parts.resolve_parts`. Without ``attn_fn`` the module resolves
    ``attn_impl`` itself (``attn_impl`` is otherwise only its label).

    ``qk_norm_layer`` (a norm class or factory taking the width) adds timm's
    ``q_norm`` / ``k_norm`` over each head's queries and keys; the packed qkv is
    then unpacked into (B, H, N, D) views, normalized, and given to
    ``unpacked_attn_fn`` (:func:`get_attention_backend`, by default of ``attn_impl``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        *,
        attn_fn: AttentionFn | None = None,
        attn_impl: str = "auto",
        proj_layer: type[ResidualLinear] = ResidualLinear,
        qk_norm_layer: Callable[[int], nn.Module] | None = None,
        unpacked_attn_fn: AttentionFn | None = None,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.attn_impl = attn_impl
        self.qk_norm = qk_norm_layer is not None
        if self.qk_norm:  # q and k are normalized apart: the backend gets (B, H, N, D) views
            self.unpacked_attn_fn = get_attention_backend(attn_impl) if unpacked_attn_fn is None else unpacked_attn_fn
        else:
            self.attn_fn = get_packed_backend(attn_impl) if attn_fn is None else attn_fn
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = qk_norm_layer(self.head_dim) if self.qk_norm else nn.Identity()
        self.k_norm = qk_norm_layer(self.head_dim) if self.qk_norm else nn.Identity()
        self.proj = proj_layer(dim, dim, drop=proj_drop, drop_path=drop_path)

    def forward(self, x, residual, gamma=None):
        """``residual + Attn(x)`` (times the LayerScale ``gamma`` if given); x is the normalized input (B, N, C)."""
        out = self.attend(x)
        return self.proj(out, residual) if gamma is None else self.proj(out, residual, gamma)

    def attend(self, x):
        """The heads' outputs joined back to (B, N, C), before the projection."""
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim)
        dropout_p = self.attn_drop if self.training else 0.0
        if self.qk_norm:
            q, k, v = unpack_qkv(qkv)
            out = self.unpacked_attn_fn(self.q_norm(q), self.k_norm(k), v, dropout_p=dropout_p, scale=self.scale)
        else:
            out = self.attn_fn(qkv, dropout_p=dropout_p, scale=self.scale)
        return out.transpose(1, 2).reshape(b, n, c)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, attn_impl={self.attn_impl!r}"
