"""timm's transformer blocks other than the pre-norm ``Block`` (:class:`fastvit.model.Block`).

Each takes the constructor keywords the model gives every block (``norm_layer``, ``attn_layer``,
``mlp_layer``, ``drop_path``, ``layer_scale``, ``depth``: the parts of
:func:`fastvit.parts.resolve_parts`) and keeps timm's parameter names:

- :class:`ResPostBlock` (``*_rpn_*``): ``x + norm1(attn(x))``, then ``x + norm2(mlp(x))``; the
  norms start at ``init_values`` instead of a LayerScale;
- :class:`ParallelThingsBlock` ("Three things everyone should know about ViTs", ``*_18x2_*``):
  ``num_parallel`` attention branches on the same input, summed, then as many MLP branches;
- :class:`ParallelScalingBlock` (ViT-22B, ``*_xp_*``, ``pwee``): one input norm and one input
  projection give the MLP's hidden layer and q, k, v together; attention and MLP run side by side
  and their projections are summed into one residual;
- :class:`DiffParallelScalingBlock` (``dpwee``): the same with differential attention and one
  output projection over both.

:func:`resolve_block_layout` turns a config's ``block_type`` / ``attn_layer`` into these parts.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from .activations import activation_class
from .attention import get_attention_backend
from .diff_attention import DiffAttention, Differential
from .drop import DropPath


class ResPostBlock(nn.Module):
    """Residual post-norm: the norm sits on the branch output, before the residual add."""

    def __init__(self, dim: int, *, norm_layer, attn_layer, mlp_layer, drop_path: float = 0.0, layer_scale=None,
                 depth: int = 0, init_values: float | None = None):
        super().__init__()
        self.init_values = init_values
        self.attn = attn_layer(dim)
        self.norm1 = norm_layer(dim)
        self.drop_path1 = DropPath(drop_path)
        self.mlp = mlp_layer(dim)
        self.norm2 = norm_layer(dim)
        self.drop_path2 = DropPath(drop_path)
        self.init_block_weights()

    def init_block_weights(self):
        """timm's: both norms' weights start at ``init_values`` (the model re-applies this after its init)."""
        if self.init_values is not None:
            for norm in (self.norm1, self.norm2):
                nn.init.constant_(norm.weight, self.init_values)

    def forward(self, x):
        # the branches add their residual in their last projection: give them none, norm their output
        x = x + self.drop_path1(self.norm1(self.attn(x, torch.zeros_like(x))))
        return x + self.drop_path2(self.norm2(self.mlp(x, torch.zeros_like(x))))


class _Branch(nn.Module):
    """One parallel branch in timm's layout: ``norm``, the layer (``attn`` or ``mlp``), ``ls``."""

    def __init__(self, name: str, layer: nn.Module, norm: nn.Module, ls: nn.Module | None):
        super().__init__()
        self.norm = norm
        self.add_module(name, layer)
        self.ls = ls if ls is not None else nn.Identity()
        self.layer_name = name
        self.has_layer_scale = ls is not None

    def forward(self, x, residual):
        """``residual + branch(x)``: the branch's projection adds it (with the LayerScale)."""
        layer = getattr(self, self.layer_name)
        if self.has_layer_scale:
            return layer(self.norm(x), residual, gamma=self.ls.gamma)
        return layer(self.norm(x), residual)


class ParallelThingsBlock(nn.Module):
    """``x + sum_i attn_i(x)``, then ``x + sum_i mlp_i(x)`` (timm's ``attns`` / ``ffns``)."""

    def __init__(self, dim: int, *, norm_layer, attn_layer, mlp_layer, drop_path: float = 0.0, layer_scale=None,
                 depth: int = 0, num_parallel: int = 2):
        super().__init__()
        ls = (lambda: layer_scale(dim)) if layer_scale is not None else (lambda: None)  # noqa: E731
        self.attns = nn.ModuleList(_Branch("attn", attn_layer(dim, drop_path=drop_path), norm_layer(dim), ls())
                                   for _ in range(num_parallel))
        self.ffns = nn.ModuleList(_Branch("mlp", mlp_layer(dim, drop_path=drop_path), norm_layer(dim), ls())
                                  for _ in range(num_parallel))
        for branch in self.attns:
            if hasattr(branch.attn, "set_depth"):
                branch.attn.set_depth(depth)

    def forward(self, x):
        for branches in (self.attns, self.ffns):
            y = x
            for branch in branches:  # each branch reads the same input and adds onto the running sum
                y = branch(x, y)
            x = y
        return x


class _ParallelScaling(nn.Module):
    """What both parallel-scaling blocks share: the input norm and the packed projection
    (MLP hidden layer, q, k, v: ``in_proj``; the MLP's bias ``mlp_bias`` when q, k, v have none),
    the MLP activation, LayerScale ``ls`` and stochastic depth."""

    def _init_input(self, dim, hidden, qkv_bias, norm_layer, act_layer, proj_drop, drop_path, layer_scale):
        self.in_norm = norm_layer(dim)
        self.in_proj = nn.Linear(dim, hidden + 3 * dim, bias=qkv_bias)
        self.in_split = [hidden, dim, dim, dim]
        self.mlp_bias = None if qkv_bias else nn.Parameter(torch.zeros(hidden))
        self.mlp_drop = nn.Dropout(proj_drop)
        self.mlp_act = act_layer()
        self.ls = layer_scale(dim) if layer_scale is not None else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def _split(self, x):
        x_mlp, q, k, v = torch.split(self.in_proj(self.in_norm(x)), self.in_split, dim=-1)
        if self.mlp_bias is not None:
            x_mlp = x_mlp + self.mlp_bias
        return self.mlp_drop(self.mlp_act(x_mlp)), q, k, v


class ParallelScalingBlock(_ParallelScaling):
    def __init__(self, dim: int, *, norm_layer, attn_layer=None, mlp_layer=None, drop_path: float = 0.0, layer_scale=None,
                 depth: int = 0, num_heads: int, hidden_dim: int, qkv_bias: bool, act_layer=nn.GELU, qk_norm_layer=None,
                 attn_fn=None, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self._init_input(dim, hidden_dim, qkv_bias, norm_layer, act_layer, proj_drop, drop_path, layer_scale)
        self.q_norm = qk_norm_layer(self.head_dim) if qk_norm_layer is not None else nn.Identity()
        self.k_norm = qk_norm_layer(self.head_dim) if qk_norm_layer is not None else nn.Identity()
        self.attn_fn = attn_fn if attn_fn is not None else get_attention_backend("sdpa")
        self.attn_drop = attn_drop
        self.attn_out_proj = nn.Linear(dim, dim)
        self.mlp_out_proj = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        x_mlp, q, k, v = self._split(x)
        q, k, v = (t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        out = self.attn_fn(self.q_norm(q), self.k_norm(k), v, dropout_p=self.attn_drop if self.training else 0.0,
                           scale=self.scale)
        y = self.attn_out_proj(out.transpose(1, 2).reshape(b, n, c)) + self.mlp_out_proj(x_mlp)
        return x + self.drop_path(self.ls(y))


class DiffParallelScalingBlock(_ParallelScaling, Differential):
    def __init__(self, dim: int, *, norm_layer, attn_layer=None, mlp_layer=None, drop_path: float = 0.0, layer_scale=None,
                 depth: int = 0, num_heads: int, hidden_dim: int, qkv_bias: bool, act_layer=nn.GELU, qk_norm_layer=None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        Differential.__init__(self, dim, num_heads, attn_drop, qk_norm_layer, depth)
        self._init_input(dim, hidden_dim, qkv_bias, norm_layer, act_layer, proj_drop, drop_path, layer_scale)
        self.out_proj = nn.Linear(dim + hidden_dim, dim)

    def forward(self, x):
        x_mlp, q, k, v = self._split(x)
        y = self.out_proj(torch.cat((self.differential(q, k, v), x_mlp), dim=-1))
        return x + self.drop_path(self.ls(y))


def resolve_block_layout(cfg, parts):
    """``parts`` (:class:`fastvit.parts.Parts`) with the block and attention that ``cfg.block_type``
    and ``cfg.attn_layer`` ask for; the norms, MLP and residual projections stay ``parts``' own."""
    changes = {}
    qk_norm = parts.norm_layer if cfg.qk_norm else None
    if not cfg.proj_bias or cfg.mlp_layer == "swiglu_unpacked" or cfg.patch_norm:  # AIMv2
        from .bias_free import BiasFreeResidualLinear, NormedPatchEmbed, SwiGLU

        if not cfg.proj_bias:
            changes["attn_layer"] = functools.partial(parts.attn_layer, proj_layer=BiasFreeResidualLinear)
            if cfg.mlp_layer == "mlp":  # PyTorch's ops: the fused MLP takes a bias
                from .mlp import Mlp

                changes["mlp_layer"] = functools.partial(
                    Mlp, hidden_dim=cfg.mlp_hidden_dim, drop=cfg.drop_rate, fc1_layer=functools.partial(nn.Linear, bias=False),
                    act_layer=activation_class(cfg.act_layer), fc2_layer=BiasFreeResidualLinear)
        if cfg.mlp_layer == "swiglu_unpacked":
            changes["mlp_layer"] = functools.partial(SwiGLU, hidden_dim=cfg.mlp_hidden_dim, drop=cfg.drop_rate,
                                                     act_layer=activation_class(cfg.act_layer), bias=cfg.proj_bias,
                                                     gate_impl=cfg.linear_impl)  # fmt: skip
        if cfg.patch_norm:
            changes["embed_layer"] = functools.partial(NormedPatchEmbed, *parts.embed_layer.args, norm_layer=parts.norm_layer,
                                                       **parts.embed_layer.keywords)
    if cfg.scale_norm:  # BEiT-3: the same branches with a norm before their last projection
        from .scale_norm import ScaleNormAttention, ScaleNormMlp

        changes["attn_layer"] = functools.partial(ScaleNormAttention, *parts.attn_layer.args, norm_layer=parts.norm_layer,
                                                  **parts.attn_layer.keywords)
        mlp = parts.mlp_layer.keywords  # the fused MLP op would skip the norm: the Mlp of the same layers
        changes["mlp_layer"] = functools.partial(ScaleNormMlp, norm_layer=parts.norm_layer, **mlp)
    if cfg.attn_layer == "diff":
        proj = parts.attn_layer.keywords["proj_layer"]  # linear_impl's residual projection
        changes["attn_layer"] = functools.partial(DiffAttention, num_heads=cfg.num_heads, qkv_bias=cfg.qkv_bias,
                                                  attn_drop=cfg.attn_drop_rate, proj_drop=cfg.drop_rate,
                                                  proj_layer=proj, qk_norm_layer=qk_norm)
    scaling = dict(num_heads=cfg.num_heads, hidden_dim=cfg.mlp_hidden_dim, qkv_bias=cfg.qkv_bias,
                   act_layer=activation_class(cfg.act_layer), qk_norm_layer=qk_norm, attn_drop=cfg.attn_drop_rate,
                   proj_drop=cfg.drop_rate)
    block = {
        "pre_norm": None,
        "res_post_norm": functools.partial(ResPostBlock, init_values=cfg.init_values),
        "parallel": functools.partial(ParallelThingsBlock, num_parallel=cfg.num_parallel),
        "parallel_scaling": functools.partial(ParallelScalingBlock, attn_fn=get_attention_backend(cfg.attn_impl), **scaling),
        "diff_parallel_scaling": functools.partial(DiffParallelScalingBlock, **scaling),
    }[cfg.block_type]
    if block is not None:
        changes["block_layer"] = block
    if cfg.block_type == "res_post_norm":
        changes["layer_scale"] = None  # its init_values start the norms instead
    return dataclasses.replace(parts, **changes)
