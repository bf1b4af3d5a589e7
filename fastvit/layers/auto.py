"""``auto`` layers: drop-in for the torch/Triton ones, choosing per shape which implementation runs.

Each class is the torch layer it replaces (same parameters, same forward
contract, so state dicts never change). Off CUDA its forward is exactly the
torch path. On CUDA it hands the call to :func:`fastvit.dispatch.choose`
with its candidates -- fastvit's Triton kernel and PyTorch's equivalent --
and runs the one chosen for the key (measured once per key, then cached).
The kernel candidates import :mod:`fastvit.kernels` on their first call.

For the wiring in ``fastvit/parts.py`` (``*_impl="auto"``):

- ``AutoLayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None)``:
  ``nn.LayerNorm``; candidates torch ``F.layer_norm`` / Triton ``layer_norm``.
- ``AutoPreNorm(...)``: the same for a block's norms whose output only feeds a GEMM (as ``TritonPreNorm``):
  under autocast the output is stored in the autocast dtype.
- ``AutoLinearGELU(in_features, out_features, bias=True, approximate="none", device=None, dtype=None)``:
  fc1 with its activation (use ``nn.Identity`` after it); approximate "none" | "tanh" (GELU) | "quick"
  (``x * sigmoid(1.702 x)``); candidates ``F.linear`` + activation / ``linear_gelu``.
- ``AutoResidualLinear(in_features, out_features, drop=0.0, drop_path=0.0)``: ``ResidualLinear``'s contract,
  ``forward(x, residual, gamma=None) = residual + drop_path(gamma * drop(x W^T + b))`` (gamma: LayerScale's
  per-channel (out_features,) factor, or None); candidates torch ops / ``linear_residual``.
- ``auto_attention(q, k, v, dropout_p=0.0, scale=None)`` over (B, H, N, D) and
  ``auto_attention_packed(qkv, dropout_p=0.0, scale=None)`` over the (B, N, 3, H, D) qkv projection
  (out (B, H, N, D)): candidates plain SDPA, SDPA restricted to flash / cuDNN / efficient, Triton
  ``attention`` / ``attention_qkvpacked``. Attention dropout (> 0) always runs plain SDPA.

:mod:`fastvit.layers.impls` lists these classes as ``norm_impl`` / ``linear_impl`` "auto",
and :data:`fastvit.layers.attention.BACKENDS` the two functions as ``attn_impl="auto"``.
Whether the Triton candidate can take a call is asked of the op's contract
(:func:`fastvit.kernels.registry.supports`). ``fastvit.compile`` prepares any model with
a submodule whose ``dispatches`` is True (these classes) or whose ``attn_fn`` is one of
the two functions above (:func:`uses_dispatch`).

Keys: dtype(s), the row count (GEMM M, LayerNorm rows) or the batch (attention) rounded up to a power of
two (:func:`fastvit.dispatch.bucket`), and the exact sizes that shape the kernel (N, K / features / tokens,
heads, head dim), plus the flags that change the call (bias, stochastic depth scale, LayerScale).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from fastvit.dispatch import Candidate, bucket, choose, dtype_name, get_dispatcher
from fastvit.kernels import registry

from .drop import drop_path_scale
from .linear import ResidualLinear, _autocast, autocast_dtype

APPROXIMATIONS = ("none", "tanh", "quick")


def _on_cuda(*args) -> bool:
    """The dispatcher's device predicate (the first tensor is on CUDA; tests inject another)."""
    return get_dispatcher().on_cuda(args)


def _rows(x) -> int:
    rows = 1
    for size in x.shape[:-1]:
        rows = rows * size
    return rows


# --------------------------------------------------------------------------- LayerNorm


def _layer_norm_torch(x, weight, bias, eps, out_dtype):
    out = F.layer_norm(x, (x.shape[-1],), weight, bias, eps)
    return out if out_dtype is None else out.to(out_dtype)


def _layer_norm_triton(x, weight, bias, eps, out_dtype):
    from fastvit.kernels import layer_norm

    return layer_norm(x, weight, bias, eps, out_dtype=out_dtype)


def _layer_norm_supports(x, weight, bias, eps, out_dtype):
    if weight is None or bias is None:
        return "no affine weight and bias (the kernel needs both)"
    return registry.supports("layer_norm", device=x.device, dtype=x.dtype, width=x.shape[-1], weight_dtype=weight.dtype,
                             out_dtype=out_dtype)  # fmt: skip


LAYER_NORM_CANDIDATES = (
    Candidate("torch", _layer_norm_torch, "torch"),
    Candidate("triton", _layer_norm_triton, "kernel", _layer_norm_supports),
)


class AutoLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm``; on CUDA the faster of torch's and fastvit's kernel for the shape."""

    dispatches = True  # fastvit.compile prepares the choices of modules that have this

    def out_dtype(self, x):
        """Output dtype; None keeps torch's (x's, or fp32 under autocast)."""
        return None

    def _choice(self, x):
        """(the chosen "layer_norm" candidate, its arguments) for ``x`` (on CUDA)."""
        out_dtype = self.out_dtype(x)
        args = (x, self.weight, self.bias, self.eps, out_dtype)
        key = (dtype_name(x.dtype), None if out_dtype is None else dtype_name(out_dtype), bucket(_rows(x)), x.shape[-1],
               x.is_contiguous())
        return choose("layer_norm", key, LAYER_NORM_CANDIDATES, args), args

    def forward(self, x):
        if not _on_cuda(x):
            return super().forward(x)
        candidate, args = self._choice(x)
        return candidate.fn(*args)


def _layer_norm_fork_torch(x, weight, bias, eps, out_dtype):
    return _layer_norm_torch(x, weight, bias, eps, out_dtype), x


def _layer_norm_fork_triton(x, weight, bias, eps, out_dtype):
    from fastvit.kernels import layer_norm_fork

    return layer_norm_fork(x, weight, bias, eps, out_dtype=out_dtype)


# a "layer_norm" candidate's name -> its fork (LN(x), x); the kernel's adds the residual's gradient in its backward
LAYER_NORM_FORKS = {"torch": _layer_norm_fork_torch, "triton": _layer_norm_fork_triton}


class AutoPreNorm(AutoLayerNorm):
    """A block's LayerNorm whose output only feeds a GEMM: under autocast its output has the autocast
    dtype (the values the GEMM's input cast would produce), as :class:`~fastvit.layers.norm.TritonPreNorm`.

    ``fork(x) -> (LN(x), x)``: off CUDA torch's; on CUDA the implementation measured for its forward
    (the same "layer_norm" key), the Triton one being :func:`fastvit.kernels.layer_norm_fork`.
    """

    def out_dtype(self, x):
        return autocast_dtype(x)

    def fork(self, x):
        if not _on_cuda(x):
            return super().forward(x), x
        candidate, args = self._choice(x)
        return LAYER_NORM_FORKS[candidate.name](*args)


# --------------------------------------------------------------------------- fc1 + activation


def activation(h, approximate: str):
    """fc1's activation: GELU ("none": exact, "tanh") or QuickGELU ("quick": ``h * sigmoid(1.702 h)``)."""
    if approximate == "quick":
        return h * torch.sigmoid(1.702 * h)
    return F.gelu(h, approximate=approximate)


def _linear_act_torch(x, weight, bias, approximate):
    return activation(F.linear(x, weight, bias), approximate)


def _linear_act_triton(x, weight, bias, approximate):
    from fastvit.kernels import linear_gelu

    return linear_gelu(x, weight, bias, approximate=approximate)


def _linear_gelu_supports(x, weight, bias, approximate, op="linear_gelu"):
    if bias is None:
        return "no bias (the kernel's epilogue adds one)"
    return registry.supports(op, device=x.device, dtype=x.dtype, in_features=weight.shape[1], out_features=weight.shape[0],
                             approximate=approximate)  # fmt: skip


def _linear_gelu_tma(x, weight, bias, approximate):
    from fastvit.kernels import linear_gelu_tma

    return linear_gelu_tma(x, weight, bias, approximate=approximate)


def _linear_gelu_tma_supports(x, weight, bias, approximate):
    return _linear_gelu_supports(x, weight, bias, approximate, op="linear_gelu_tma")


LINEAR_GELU_CANDIDATES = (
    Candidate("torch", _linear_act_torch, "torch"),
    Candidate("triton", _linear_act_triton, "kernel", _linear_gelu_supports),
    Candidate("triton-tma", _linear_gelu_tma, "kernel", _linear_gelu_tma_supports),  # Hopper: persistent, TMA
)


class AutoLinearGELU(nn.Linear):
    """fc1 and its activation: ``act(x W^T + b)``; on CUDA the faster of cuBLAS + the activation and
    fastvit's GEMM with the activation in its epilogue."""

    dispatches = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, approximate: str = "none", device=None, dtype=None):
        if approximate not in APPROXIMATIONS:
            raise ValueError(f"AutoLinearGELU: approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.approximate = approximate

    def forward(self, x):
        if not _on_cuda(x):
            return activation(super().forward(x), self.approximate)
        x, weight, bias = _autocast(x, self.weight, self.bias)
        args = (x, weight, bias, self.approximate)
        key = (dtype_name(x.dtype), self.approximate, bucket(_rows(x)), weight.shape[0], weight.shape[1], bias is not None)
        return choose("linear_gelu", key, LINEAR_GELU_CANDIDATES, args).fn(*args)

    def extra_repr(self):
        return f"{super().extra_repr()}, approximate={self.approximate!r}"


# --------------------------------------------------------------------------- residual projection


def _linear_residual_torch(x, weight, bias, residual, scale, gamma):
    branch = F.linear(x, weight, bias)
    if gamma is not None:
        branch = branch * gamma
    if scale is not None:
        branch = branch * scale.view((-1,) + (1,) * (branch.ndim - 1))
    return residual + branch


def _linear_residual_triton(x, weight, bias, residual, scale, gamma):
    from fastvit.kernels import linear_residual

    extra = {} if gamma is None else {"gamma": gamma}
    return linear_residual(x, weight, bias, residual, scale=scale, **extra)


def _linear_residual_supports(x, weight, bias, residual, scale, gamma, op="linear_residual"):
    if bias is None:
        return "no bias (the kernel's epilogue adds one)"
    return registry.supports(op, device=x.device, dtype=x.dtype, in_features=weight.shape[1],
                             out_features=weight.shape[0], residual_dtype=residual.dtype)  # fmt: skip


def _linear_residual_tma(x, weight, bias, residual, scale, gamma):
    from fastvit.kernels import linear_residual_tma

    return linear_residual_tma(x, weight, bias, residual, scale=scale, gamma=gamma)


def _linear_residual_tma_supports(x, weight, bias, residual, scale, gamma):
    return _linear_residual_supports(x, weight, bias, residual, scale, gamma, op="linear_residual_tma")


LINEAR_RESIDUAL_CANDIDATES = (
    Candidate("torch", _linear_residual_torch, "torch"),
    Candidate("triton", _linear_residual_triton, "kernel", _linear_residual_supports),
    Candidate("triton-tma", _linear_residual_tma, "kernel", _linear_residual_tma_supports),  # Hopper: persistent, TMA
)


class AutoResidualLinear(ResidualLinear):
    """A branch's last projection plus the residual add (and LayerScale's ``gamma``);
    on CUDA the faster of torch's ops and fastvit's GEMM with the add in its epilogue.

    Element-wise dropout while training, and a residual in a third dtype
    (fp16 under bf16 autocast), run the torch ops, as TritonResidualLinear does.
    """

    dispatches = True

    def _torch_forward(self, x, residual, gamma):
        branch = self.drop(F.linear(x, self.weight, self.bias))
        if gamma is not None:
            branch = branch * gamma
        return residual + self.drop_path(branch)

    def forward(self, x, residual, gamma=None):
        if not _on_cuda(x) or (self.training and self.drop.p > 0):
            return self._torch_forward(x, residual, gamma)
        x, weight, bias = _autocast(x, self.weight, self.bias)
        if residual.dtype not in (x.dtype, torch.float32):
            return self._torch_forward(x, residual, gamma)
        scale = None
        if self.training and self.drop_path.p > 0:
            scale = drop_path_scale(residual.shape[0], self.drop_path.p, dtype=torch.float32, device=x.device)
        args = (x, weight, bias, residual, scale, gamma)
        key = (dtype_name(x.dtype), dtype_name(residual.dtype), bucket(_rows(x)), weight.shape[0], weight.shape[1],
               bias is not None, scale is not None, gamma is not None)
        return choose("linear_residual", key, LINEAR_RESIDUAL_CANDIDATES, args).fn(*args)


# --------------------------------------------------------------------------- attention


def unpack_qkv(qkv):
    """(B, H, N, D) views of q, k, v in a (B, N, 3, H, D) tensor; no copy."""
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


def _sdpa(q, k, v, scale):
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def _sdpa_backend(backend: str, q, k, v, scale):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(getattr(SDPBackend, backend)):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)


def _sdpa_flash(q, k, v, scale):
    return _sdpa_backend("FLASH_ATTENTION", q, k, v, scale)


def _sdpa_cudnn(q, k, v, scale):
    return _sdpa_backend("CUDNN_ATTENTION", q, k, v, scale)


def _sdpa_efficient(q, k, v, scale):
    return _sdpa_backend("EFFICIENT_ATTENTION", q, k, v, scale)


def _half_only(q, *rest):
    return None if q.dtype in (torch.float16, torch.bfloat16) else f"dtype {dtype_name(q.dtype)}: this backend takes float16 or bfloat16"


def _triton_attention(q, k, v, scale):
    from fastvit.kernels import attention

    return attention(q, k, v, scale=scale)


def _triton_supports(q, *rest):
    if q.dtype not in (torch.float16, torch.bfloat16):
        # the Triton kernel's fp32 configurations spill registers on sm_90: fp32 stays with SDPA
        return f"dtype {dtype_name(q.dtype)}: the Triton attention kernel is offered for float16 and bfloat16"
    return registry.supports("attention", device=q.device, dtype=q.dtype, head_dim=q.shape[-1])


ATTENTION_CANDIDATES = (
    Candidate("sdpa", _sdpa, "torch"),
    Candidate("sdpa-flash", _sdpa_flash, "torch", _half_only),
    Candidate("sdpa-cudnn", _sdpa_cudnn, "torch", _half_only),
    Candidate("sdpa-efficient", _sdpa_efficient, "torch"),
    Candidate("triton", _triton_attention, "kernel", _triton_supports),
)


def auto_attention(q, k, v, dropout_p=0.0, scale=None):
    """The ``auto`` attention backend over (B, H, N, D) tensors (semantics of SDPA, non-causal)."""
    if dropout_p > 0 or not _on_cuda(q):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    args = (q, k, v, scale)
    b, h, n, d = q.shape
    key = (dtype_name(q.dtype), bucket(b), h, n, d)
    return choose("attention", key, ATTENTION_CANDIDATES, args).fn(*args)


def _packed(fn, qkv, scale):
    q, k, v = unpack_qkv(qkv)
    return fn(q, k, v, scale)


def _sdpa_packed(qkv, scale):
    return _packed(_sdpa, qkv, scale)


def _sdpa_flash_packed(qkv, scale):
    return _packed(_sdpa_flash, qkv, scale)


def _sdpa_cudnn_packed(qkv, scale):
    return _packed(_sdpa_cudnn, qkv, scale)


def _sdpa_efficient_packed(qkv, scale):
    return _packed(_sdpa_efficient, qkv, scale)


def _triton_attention_packed(qkv, scale):
    from fastvit.kernels import attention_qkvpacked

    return attention_qkvpacked(qkv, scale=scale)


PACKED_ATTENTION_CANDIDATES = (
    Candidate("sdpa", _sdpa_packed, "torch"),
    Candidate("sdpa-flash", _sdpa_flash_packed, "torch", _half_only),
    Candidate("sdpa-cudnn", _sdpa_cudnn_packed, "torch", _half_only),
    Candidate("sdpa-efficient", _sdpa_efficient_packed, "torch"),
    Candidate("triton", _triton_attention_packed, "kernel", _triton_supports),
)


def auto_attention_packed(qkv, dropout_p=0.0, scale=None):
    """The ``auto`` backend's packed form: qkv (B, N, 3, H, D) -> out (B, H, N, D)."""
    if dropout_p > 0 or not _on_cuda(qkv):
        q, k, v = unpack_qkv(qkv)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    args = (qkv, scale)
    b, n, _, h, d = qkv.shape
    key = (dtype_name(qkv.dtype), bucket(b), h, n, d)
    return choose("attention_packed", key, PACKED_ATTENTION_CANDIDATES, args).fn(*args)


AUTO_ATTENTION_FNS = (auto_attention, auto_attention_packed)


def uses_dispatch(model: nn.Module) -> bool:
    """True when some submodule dispatches: an ``auto`` layer (``dispatches = True``), or an attention module
    whose ``attn_fn`` is an ``auto`` backend."""
    return any(getattr(m, "dispatches", False) is True or getattr(m, "attn_fn", None) in AUTO_ATTENTION_FNS
               for m in model.modules())


# op name -> its candidates (``fastvit info`` lists them)
OPS = {
    "layer_norm": LAYER_NORM_CANDIDATES,
    "linear_gelu": LINEAR_GELU_CANDIDATES,
    "linear_residual": LINEAR_RESIDUAL_CANDIDATES,
    "attention": ATTENTION_CANDIDATES,
    "attention_packed": PACKED_ATTENTION_CANDIDATES,
}
