"""The Eva family's block parts under timm's parameter names: rotary attention with EVA's
q / v biases (no k bias) or a plain qkv bias, an optional inner norm; the MLPs (GELU, with an
optional inner norm; SwiGLU packed or split, with an optional inner norm); pre- and post-norm blocks.

Each choice is made once, at construction: the qkv projection (:data:`PROJECTIONS`), how q and k
are rotated and attended (``attn_impl``, :func:`fastvit.layers.rope_attention.resolve_rotary`: the
fused rotary attention kernel, auto's measured choice, or rotate-then-backend), the MLP class. As in
fastvit's ViT, a pre-norm branch owns its residual add in its last projection (a residual
linear of ``linear_impl``), with the block's LayerScale ``gamma_1`` / ``gamma_2`` applied there.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .drop import DropPath
from .glu import FusedGate, GluMlp
from .linear import ResidualLinear
from .mlp import Mlp
from .rope_attention import resolve_rotary, runner_name


def _qkv_fused(attn, x):
    return attn.qkv(x)


def _qkv_fused_qv_bias(attn, x):
    """EVA: one projection without bias, then q and v biases; k gets none."""
    return F.linear(x, attn.qkv.weight, torch.cat((attn.q_bias, attn.k_bias, attn.v_bias)))


def _qkv_split(attn, x):
    return torch.cat((attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)), dim=-1)


PROJECTIONS = {"fused": _qkv_fused, "fused_qv_bias": _qkv_fused_qv_bias, "split": _qkv_split}


class EvaAttention(nn.Module):
    """qkv projection -> rotary q, k (patches only) -> attention backend -> inner norm -> projection.

    ``attn_type`` "eva" (timm's ``EvaAttention``): fused ``qkv`` without bias plus ``q_bias`` /
    ``v_bias`` (a zero ``k_bias`` buffer), or split ``q_proj`` / ``k_proj`` (no bias) / ``v_proj``;
    "rope" (timm's ``AttentionRope``): ``qkv`` (or the three projections) with ordinary biases.
    ``forward(x, rope, residual, gamma)`` returns ``residual + drop_path(gamma * proj(...))``;
    :meth:`attend` the projection's input.

    How rotation and attention run is resolved here, once (:func:`fastvit.layers.rope_attention.resolve_rotary`):
    ``attn_impl="triton"`` the fused rotary attention kernel, ``"auto"`` a measured choice between it and
    rotate-then-SDPA, others rotate-then-backend. ``table_half``: the layout of the tables this layer will
    get (default: ``rotate_half``'s); ``rotary_reason`` says why the fused op is not used, where it is not.
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, qkv_fused: bool = True,
                 attn_type: str = "eva", num_prefix_tokens: int = 1, rotate: bool = True, rotate_half: bool = False,
                 inner_norm=None, attn_drop: float = 0.0, proj_drop: float = 0.0, drop_path: float = 0.0,
                 attn_impl: str = "auto", proj_layer=ResidualLinear, table_half: bool | None = None):
        super().__init__()
        if attn_type not in ("eva", "rope"):
            raise ValueError(f"attn_type must be 'eva' or 'rope', got {attn_type!r}")
        if dim % num_heads:
            raise ValueError(f"embed_dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.num_prefix_tokens, self.rotate_half = num_prefix_tokens, rotate_half
        self.attn_impl, self.attn_drop = attn_impl, attn_drop
        self._attend, self.rotary_reason, self.dispatches = resolve_rotary(attn_impl, rotate, self.head_dim, rotate_half,
                                                                           table_half)  # fmt: skip
        eva_bias = attn_type == "eva"
        if qkv_fused:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias and not eva_bias)
            if qkv_bias and eva_bias:
                self.q_bias = nn.Parameter(torch.zeros(dim))
                self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
                self.v_bias = nn.Parameter(torch.zeros(dim))
                self._project = _qkv_fused_qv_bias
            else:
                self._project = _qkv_fused
        else:
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=qkv_bias and not eva_bias)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self._project = _qkv_split
        self.norm = inner_norm(dim) if inner_norm is not None else nn.Identity()
        self.proj = proj_layer(dim, dim, drop=proj_drop, drop_path=drop_path)

    def attend(self, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._project(self, x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.attn_drop if self.training else 0.0
        out = self._attend(q, k, v, rope, self.num_prefix_tokens, self.rotate_half, dropout_p, self.scale)
        return self.norm(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x, rope, residual, gamma=None):
        return self.proj(self.attend(x, rope), residual, gamma)

    def extra_repr(self):
        reason = "" if self.rotary_reason is None else f", unfused: {self.rotary_reason}"
        return (f"num_heads={self.num_heads}, attn_impl={self.attn_impl!r}, rotate_half={self.rotate_half}, "
                f"runs={runner_name(self._attend)!r}{reason}")


class NormMlp(Mlp):
    """timm's ``Mlp`` with ``norm_layer`` (Eva's ``scale_mlp`` without SwiGLU): fc1 -> act -> norm -> fc2."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0, *, norm_layer,
                 fc1_layer=nn.Linear, act_layer=nn.GELU, fc2_layer=ResidualLinear):
        super().__init__(dim, hidden_dim, drop, drop_path, fc1_layer=fc1_layer, act_layer=act_layer, fc2_layer=fc2_layer)
        self.norm = norm_layer(hidden_dim)

    def forward(self, x, residual, gamma=None):
        return self.fc2(self.norm(self.drop(self.act(self.fc1(x)))), residual, gamma)


class SwiGLU(FusedGate, nn.Module):
    """timm's ``SwiGLU``: separate gate and value projections (``fc1_g``, ``fc1_x``),
    ``act(gate) * value``, an optional ``norm`` (``scale_mlp``), then ``fc2`` with the residual.
    ``align_to`` rounds the hidden width up to a multiple (DINOv3's SwiGLU models); ``gate_impl``:
    how the gate runs (:class:`~fastvit.layers.glu.FusedGate`)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, drop_path: float = 0.0, *, norm_layer=None,
                 align_to: int = 0, fc2_layer=ResidualLinear, gate_impl: str = "torch"):
        super().__init__()
        if align_to:
            hidden_dim = hidden_dim + (-hidden_dim % align_to)
        self.fc1_g = nn.Linear(dim, hidden_dim)
        self.fc1_x = nn.Linear(dim, hidden_dim)
        self.act = nn.SiLU()
        self.drop1 = nn.Dropout(drop)
        self.norm = norm_layer(hidden_dim) if norm_layer is not None else nn.Identity()
        self.fc2 = fc2_layer(hidden_dim, dim, drop=drop, drop_path=drop_path)
        self.init_gate(gate_impl, self.act)

    def fc1_weights(self):
        return self.fc1_g.weight, self.fc1_g.bias, self.fc1_x.weight, self.fc1_x.bias

    def torch_gate(self, x):
        return self.act(self.fc1_g(x)) * self.fc1_x(x)

    def forward(self, x, residual, gamma=None):
        return self.fc2(self.norm(self.drop1(self.gate(x))), residual, gamma)


def eva_mlp_layer(dim: int, mlp_ratio: float, *, swiglu: bool, align_to: int, scale_mlp: bool, norm_layer,
                  mlp_cls=Mlp, fc1_layer=nn.Linear, act_layer=nn.GELU, fc2_layer=ResidualLinear, drop: float = 0.0,
                  gate_impl: str = "torch"):  # fmt: skip
    """The MLP factory (``f(dim, drop_path=)``) timm's EvaBlock picks for these options; ``gate_impl``
    (the model's ``linear_impl``): how a SwiGLU's gate runs (:class:`~fastvit.layers.glu.FusedGate`)."""
    hidden = int(dim * mlp_ratio)
    if swiglu and (scale_mlp or align_to):
        return functools.partial(SwiGLU, hidden_dim=hidden, drop=drop, norm_layer=norm_layer if scale_mlp else None,
                                 align_to=align_to, fc2_layer=fc2_layer, gate_impl=gate_impl)
    if swiglu:  # packed fc1 (gate first), as timm's GluMlp with gate_last=False
        return functools.partial(GluMlp, hidden_dim=2 * hidden, drop=drop, act_layer=nn.SiLU, fc2_layer=fc2_layer,
                                 gate_impl=gate_impl)
    if scale_mlp:
        return functools.partial(NormMlp, hidden_dim=hidden, drop=drop, norm_layer=norm_layer, fc2_layer=fc2_layer)
    return functools.partial(mlp_cls, hidden_dim=hidden, drop=drop, fc1_layer=fc1_layer, act_layer=act_layer,
                             fc2_layer=fc2_layer)


class EvaBlock(nn.Module):
    """Pre-norm: ``x + gamma_1 * attn(norm1(x))``, then ``x + gamma_2 * mlp(norm2(x))``
    (timm's ``EvaBlock``; ``gamma_1`` / ``gamma_2`` only with ``init_values``)."""

    def __init__(self, dim: int, *, norm_layer, attn_layer, mlp_layer, drop_path: float = 0.0,
                 init_values: float | None = None):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, drop_path=drop_path)
        self.init_values = init_values
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values))) if init_values is not None else None
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, drop_path=drop_path)
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values))) if init_values is not None else None

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn(self.norm1(x), rope, x, self.gamma_1)
        return self.mlp(self.norm2(x), x, self.gamma_2)


class EvaBlockPostNorm(nn.Module):
    """Post-norm (timm's ``EvaBlockPostNorm``, EVA-02 E): ``x + norm1(attn(x))``, ``x + norm2(mlp(x))``;
    no LayerScale. The branches' residual projections add a zero residual, so their norms
    see the branch alone."""

    def __init__(self, dim: int, *, norm_layer, attn_layer, mlp_layer, drop_path: float = 0.0,
                 init_values: float | None = None):
        super().__init__()
        self.attn = attn_layer(dim, drop_path=0.0)
        self.norm1 = norm_layer(dim)
        self.drop_path1 = _drop_path(drop_path)
        self.mlp = mlp_layer(dim, drop_path=0.0)
        self.norm2 = norm_layer(dim)
        self.drop_path2 = _drop_path(drop_path)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        zero = x.new_zeros(())
        x = x + self.drop_path1(self.norm1(self.attn(x, rope, zero)))
        return x + self.drop_path2(self.norm2(self.mlp(x, zero)))


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0 else nn.Identity()
