"""``auto`` layers: drop-in for the torch/Triton ones, choosing per shape which implementation runs.

Each class is the torch layer it replaces (same parameters, same forward
contract, so state dicts never change). Its forward computes the call's key
and runs the candidate bound for it (:func:`fastvit.dispatch.lookup`: one dict
lookup); the first eager call for a key asks the dispatcher, which checks the
kernel against PyTorch, times the candidates (forward + backward under grad)
and caches the pick -- fastvit's Triton kernel or PyTorch's equivalent. Off
CUDA the bound choice is the plain torch path. Under ``torch.compile`` the
bound choices are constants of the graph (:func:`fastvit.dispatch.prepare`
binds them ahead of time); an unbound call runs PyTorch's candidate.

For the wiring in ``fastvit/parts.py`` (``*_impl="auto"``):

- ``AutoLayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None)``:
  ``nn.LayerNorm``; candidates torch ``F.layer_norm`` / Triton ``layer_norm``.
- ``AutoBlockNorm(...)``: the same for a block's norms whose output only feeds a GEMM (as ``TritonBlockNorm``):
  under autocast the output is stored in the autocast dtype. Its ``fork(x) -> (LN(x), x)`` (the block's
  residual junction) is its own op, ``layer_norm_fork``: under grad it is timed forward + backward, where
  the kernel's fork adds the residual's gradient inside the LayerNorm backward.
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
Whether the Triton candidate can take a call is asked of the op's declaration, in one place
(:func:`declared`). ``fastvit.compile`` prepares any model with
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
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastvit.dispatch import OFF_CUDA, Bindings, Candidate, bucket, dtype_name, lookup
from fastvit.kernels import ops

from .activations import quick_gelu
from .fused_branch import branch_scale, fused_branch
from .kernel_ops import kernel_op
from .linear import ResidualLinear, _autocast, autocast_dtype

APPROXIMATIONS = ("none", "tanh", "quick")

def declared(op: str, **query) -> str | None:
    """None when ``op``'s declaration (:mod:`fastvit.kernels.ops`) lets ``auto`` offer the kernel for a
    call with these properties, else why not: the one place ``auto`` reads a kernel's declaration
    (``auto_dtypes``, then the device, dtype, widths, head dim, ... its ``supports`` checks)."""
    decl = ops.declaration(op)
    if query.get("dtype") not in decl.auto_dtypes:
        names = " and ".join(dtype_name(d) for d in decl.auto_dtypes) or "no dtype"
        return f"dtype {dtype_name(query.get('dtype'))}: auto offers the Triton {op} kernel for {names}"
    return decl.supports(**query)


def _bound(op: str):
    """The correctness gate's bound for ``op``'s kernel, as its declaration writes it."""
    return ops.declaration(op).tolerance.bound


class _Kernel:
    """``fastvit.kernels.<name>``, looked up on its first call (``import fastvit`` stays Triton-free); the first
    call is the eager one that checks and times the candidate, so a bound forward goes straight to the op."""

    def __init__(self, name: str):
        self.name, self.fn = name, None

    def __call__(self, *args, **kwargs):
        if self.fn is None:
            self.fn = kernel_op(self.name)
        return self.fn(*args, **kwargs)

    def __repr__(self):
        return f"fastvit.kernels.{self.name}"


_LAYER_NORM, _LAYER_NORM_FORK = _Kernel("layer_norm"), _Kernel("layer_norm_fork")
_LINEAR_GELU, _LINEAR_GELU_TMA = _Kernel("linear_gelu"), _Kernel("linear_gelu_tma")
_LINEAR_RESIDUAL, _LINEAR_RESIDUAL_TMA = _Kernel("linear_residual"), _Kernel("linear_residual_tma")
_ATTENTION, _ATTENTION_QKVPACKED = _Kernel("attention"), _Kernel("attention_qkvpacked")


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
    return _LAYER_NORM(x, weight, bias, eps, out_dtype=out_dtype)


def _layer_norm_supports(x, weight, bias, eps, out_dtype):
    if weight is None or bias is None:
        return "no affine weight and bias (the kernel needs both)"
    return declared("layer_norm", device=x.device, dtype=x.dtype, width=x.shape[-1], weight_dtype=weight.dtype,
                    out_dtype=out_dtype)  # fmt: skip


LAYER_NORM_CANDIDATES = (
    Candidate("torch", _layer_norm_torch, "torch"),
    Candidate("triton", _layer_norm_triton, "kernel", _layer_norm_supports, bound=_bound("layer_norm")),
)


class AutoLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm``; on CUDA the faster of torch's and fastvit's kernel for the shape (where they agree)."""

    dispatches = True  # fastvit.compile prepares the choices of modules that have this

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bound = Bindings()

    def out_dtype(self, x):
        """Output dtype; None keeps torch's (x's, or fp32 under autocast)."""
        return None

    def _call(self, x):
        """(the op's key, its arguments) for ``x``."""
        out_dtype = self.out_dtype(x)
        key = (dtype_name(x.dtype), None if out_dtype is None else dtype_name(out_dtype), bucket(_rows(x)), x.shape[-1],
               x.is_contiguous())
        return key, (x, self.weight, self.bias, self.eps, out_dtype)

    def forward(self, x):
        if not isinstance(x, torch.Tensor):  # a torch.fx proxy (symbolic tracing): the plain torch path
            return super().forward(x)
        key, args = self._call(x)
        impl = lookup(self._bound, "layer_norm", key, LAYER_NORM_CANDIDATES, args)
        return super().forward(x) if impl is OFF_CUDA else impl.fn(*args)


def _layer_norm_fork_torch(x, weight, bias, eps, out_dtype):
    return _layer_norm_torch(x, weight, bias, eps, out_dtype), x


def _layer_norm_fork_triton(x, weight, bias, eps, out_dtype):
    return _LAYER_NORM_FORK(x, weight, bias, eps, out_dtype=out_dtype)


# a block norm at its residual junction: (LN(x), x); the kernel's fork adds the residual's gradient in its backward
LAYER_NORM_FORK_CANDIDATES = (
    Candidate("torch", _layer_norm_fork_torch, "torch"),
    Candidate("triton", _layer_norm_fork_triton, "kernel", _layer_norm_supports, bound=_bound("layer_norm")),
)
LAYER_NORM_FORKS = {c.name: c.fn for c in LAYER_NORM_FORK_CANDIDATES}


class AutoBlockNorm(AutoLayerNorm):
    """A block's LayerNorm whose output only feeds a GEMM: under autocast its output has the autocast
    dtype (the values the GEMM's input cast would produce), as :class:`~fastvit.layers.norm.TritonBlockNorm`.

    ``fork(x) -> (LN(x), x)``: off CUDA torch's; on CUDA the ``layer_norm_fork`` candidate bound for the
    key (measured on its own: under grad forward + backward), the Triton one being
    :func:`fastvit.kernels.layer_norm_fork`.
    """

    def out_dtype(self, x):
        return autocast_dtype(x)

    def fork(self, x):
        if not isinstance(x, torch.Tensor):  # a torch.fx proxy
            return nn.LayerNorm.forward(self, x), x
        key, args = self._call(x)
        impl = lookup(self._bound, "layer_norm_fork", key, LAYER_NORM_FORK_CANDIDATES, args)
        return (nn.LayerNorm.forward(self, x), x) if impl is OFF_CUDA else impl.fn(*args)


AutoPreNorm = AutoBlockNorm  # the old name (nothing to do with CLIP's pre_norm), kept as an alias


# --------------------------------------------------------------------------- fc1 + activation


def activation(h, approximate: str):
    """fc1's activation: GELU ("none": exact, "tanh") or QuickGELU ("quick": ``h * sigmoid(1.702 h)``)."""
    if approximate == "quick":
        return quick_gelu(h)
    return F.gelu(h, approximate=approximate)


def _linear_act_torch(x, weight, bias, approximate):
    return activation(F.linear(x, weight, bias), approximate)


def _linear_act_triton(x, weight, bias, approximate):
    return _LINEAR_GELU(x, weight, bias, approximate=approximate)


def _linear_gelu_supports(x, weight, bias, approximate, op="linear_gelu"):
    if bias is None:
        return "no bias (the kernel's epilogue adds one)"
    return declared(op, device=x.device, dtype=x.dtype, in_features=weight.shape[1], out_features=weight.shape[0],
                    approximate=approximate)  # fmt: skip


def _linear_gelu_tma(x, weight, bias, approximate):
    return _LINEAR_GELU_TMA(x, weight, bias, approximate=approximate)


def _linear_gelu_tma_supports(x, weight, bias, approximate):
    return _linear_gelu_supports(x, weight, bias, approximate, op="linear_gelu_tma")


LINEAR_GELU_CANDIDATES = (
    Candidate("torch", _linear_act_torch, "torch"),
    Candidate("triton", _linear_act_triton, "kernel", _linear_gelu_supports, bound=_bound("linear_gelu")),
    Candidate("triton-tma", _linear_gelu_tma, "kernel", _linear_gelu_tma_supports, bound=_bound("linear_gelu_tma")),  # Hopper: persistent, TMA
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
        self._bound = Bindings()

    def forward(self, x):
        if not isinstance(x, torch.Tensor):  # a torch.fx proxy
            return activation(super().forward(x), self.approximate)
        h, weight, bias = _autocast(x, self.weight, self.bias)
        args = (h, weight, bias, self.approximate)
        key = (dtype_name(h.dtype), self.approximate, bucket(_rows(h)), weight.shape[0], weight.shape[1], bias is not None)
        impl = lookup(self._bound, "linear_gelu", key, LINEAR_GELU_CANDIDATES, args)
        return activation(super().forward(x), self.approximate) if impl is OFF_CUDA else impl.fn(*args)

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
    extra = {} if gamma is None else {"gamma": gamma}
    return _LINEAR_RESIDUAL(x, weight, bias, residual, scale=scale, **extra)


def _linear_residual_supports(x, weight, bias, residual, scale, gamma, op="linear_residual"):
    if bias is None:
        return "no bias (the kernel's epilogue adds one)"
    return declared(op, device=x.device, dtype=x.dtype, in_features=weight.shape[1],
                    out_features=weight.shape[0], residual_dtype=residual.dtype)  # fmt: skip


def _linear_residual_tma(x, weight, bias, residual, scale, gamma):
    return _LINEAR_RESIDUAL_TMA(x, weight, bias, residual, scale=scale, gamma=gamma)


def _linear_residual_tma_supports(x, weight, bias, residual, scale, gamma):
    return _linear_residual_supports(x, weight, bias, residual, scale, gamma, op="linear_residual_tma")


LINEAR_RESIDUAL_CANDIDATES = (
    Candidate("torch", _linear_residual_torch, "torch"),
    Candidate("triton", _linear_residual_triton, "kernel", _linear_residual_supports, bound=_bound("linear_residual")),
    Candidate("triton-tma", _linear_residual_tma, "kernel", _linear_residual_tma_supports, bound=_bound("linear_residual_tma")),  # Hopper: persistent, TMA
)


class AutoResidualLinear(ResidualLinear):
    """A branch's last projection plus the residual add (and LayerScale's ``gamma``);
    on CUDA the faster of torch's ops and fastvit's GEMM with the add in its epilogue.

    When the fused op may run at all is :func:`fastvit.layers.fused_branch.fused_branch`'s rule, shared with
    TritonResidualLinear: element-wise dropout while training, and a residual in a third dtype (fp16 under
    bf16 autocast), run the torch ops; a gamma in a third dtype is promoted to float32.
    """

    dispatches = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bound = Bindings()

    def _torch_forward(self, x, residual, gamma):
        branch = self.drop(F.linear(x, self.weight, self.bias))
        if gamma is not None:
            branch = branch * gamma
        return residual + self.drop_path(branch)

    def forward(self, x, residual, gamma=None):
        if not isinstance(x, torch.Tensor):  # a torch.fx proxy
            return self._torch_forward(x, residual, gamma)
        h, weight, bias = _autocast(x, self.weight, self.bias)
        plan = fused_branch(h, residual, gamma, training=self.training, dropout_p=self.drop.p, drop_path_p=self.drop_path.p)
        if plan is None:
            return self._torch_forward(x, residual, gamma)
        fused_gamma, stochastic = plan
        key = (dtype_name(h.dtype), dtype_name(residual.dtype), bucket(_rows(h)), weight.shape[0], weight.shape[1],
               bias is not None, stochastic, None if fused_gamma is None else dtype_name(fused_gamma.dtype))
        # the slot is found before stochastic depth draws its scale (off CUDA the torch path draws its own);
        # a first call measures with a scale of ones
        args = (h, weight, bias, residual, None, fused_gamma)
        probe = (lambda: (h, weight, bias, residual, torch.ones(residual.shape[0], device=h.device), fused_gamma)) if stochastic else None
        impl = lookup(self._bound, "linear_residual", key, LINEAR_RESIDUAL_CANDIDATES, args, probe=probe)
        if impl is OFF_CUDA:
            return self._torch_forward(x, residual, gamma)
        if stochastic:
            args = (h, weight, bias, residual, branch_scale(residual, self.drop_path.p), fused_gamma)
        return impl.fn(*args)


# --------------------------------------------------------------------------- attention


def unpack_qkv(qkv):
    """(B, H, N, D) views of q, k, v in a (B, N, 3, H, D) tensor; no copy."""
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


def _sdpa(q, k, v, scale):
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def _sdpa_backend(backend: str, q, k, v, scale):
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
    return _ATTENTION(q, k, v, scale=scale)


def _triton_supports(q, *rest):
    # auto_dtypes: the Triton kernel's fp32 configurations spill registers on sm_90, so fp32 stays with SDPA
    return declared("attention", device=q.device, dtype=q.dtype, head_dim=q.shape[-1])


ATTENTION_CANDIDATES = (
    Candidate("sdpa", _sdpa, "torch"),
    Candidate("sdpa-flash", _sdpa_flash, "torch", _half_only),
    Candidate("sdpa-cudnn", _sdpa_cudnn, "torch", _half_only),
    Candidate("sdpa-efficient", _sdpa_efficient, "torch"),
    Candidate("triton", _triton_attention, "kernel", _triton_supports, bound=_bound("attention")),
)


# the attention backends are functions (an Attention module's attn_fn): their choices are bound here, per key
ATTENTION_BOUND = Bindings()
PACKED_ATTENTION_BOUND = Bindings()


def auto_attention(q, k, v, dropout_p=0.0, scale=None):
    """The ``auto`` attention backend over (B, H, N, D) tensors (semantics of SDPA, non-causal)."""
    if dropout_p > 0 or not isinstance(q, torch.Tensor):  # dropout, or a torch.fx proxy: plain SDPA
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    args = (q, k, v, scale)
    b, h, n, d = q.shape
    key = (dtype_name(q.dtype), bucket(b), h, n, d)
    impl = lookup(ATTENTION_BOUND, "attention", key, ATTENTION_CANDIDATES, args)
    return F.scaled_dot_product_attention(q, k, v, scale=scale) if impl is OFF_CUDA else impl.fn(*args)


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
    return _ATTENTION_QKVPACKED(qkv, scale=scale)


PACKED_ATTENTION_CANDIDATES = (
    Candidate("sdpa", _sdpa_packed, "torch"),
    Candidate("sdpa-flash", _sdpa_flash_packed, "torch", _half_only),
    Candidate("sdpa-cudnn", _sdpa_cudnn_packed, "torch", _half_only),
    Candidate("sdpa-efficient", _sdpa_efficient_packed, "torch"),
    Candidate("triton", _triton_attention_packed, "kernel", _triton_supports, bound=_bound("attention")),
)


def auto_attention_packed(qkv, dropout_p=0.0, scale=None):
    """The ``auto`` backend's packed form: qkv (B, N, 3, H, D) -> out (B, H, N, D)."""
    if dropout_p > 0 or not isinstance(qkv, torch.Tensor):  # dropout, or a torch.fx proxy: plain SDPA
        q, k, v = unpack_qkv(qkv)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    args = (qkv, scale)
    b, n, _, h, d = qkv.shape
    key = (dtype_name(qkv.dtype), bucket(b), h, n, d)
    impl = lookup(PACKED_ATTENTION_BOUND, "attention_packed", key, PACKED_ATTENTION_CANDIDATES, args)
    if impl is OFF_CUDA:
        q, k, v = unpack_qkv(qkv)
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    return impl.fn(*args)


AUTO_ATTENTION_FNS = (auto_attention, auto_attention_packed)


def uses_dispatch(model: nn.Module) -> bool:
    """True when some submodule dispatches: an ``auto`` layer (``dispatches = True``), or an attention module
    whose ``attn_fn`` is an ``auto`` backend."""
    return any(getattr(m, "dispatches", False) is True or getattr(m, "attn_fn", None) in AUTO_ATTENTION_FNS
               for m in model.modules())


# op name -> its candidates (``fastvit info`` lists them)
OPS = {
    "layer_norm": LAYER_NORM_CANDIDATES,
    "layer_norm_fork": LAYER_NORM_FORK_CANDIDATES,
    "linear_gelu": LINEAR_GELU_CANDIDATES,
    "linear_residual": LINEAR_RESIDUAL_CANDIDATES,
    "attention": ATTENTION_CANDIDATES,
    "attention_packed": PACKED_ATTENTION_CANDIDATES,
}
