"""One resolution step from a :class:`~fastvit.ViTConfig` to the concrete layers a model is built from.

The model never reads an implementation name: :func:`resolve_parts` turns
``norm_impl``, ``attn_impl`` and ``linear_impl`` (and the architecture fields
that choose a layer) into layer factories once, at construction, and
:class:`~fastvit.model.Block` and :class:`~fastvit.VisionTransformer` call
them. Each factory is a :func:`functools.partial` of a layer class, so a model
built from them pickles and deep-copies, and switching implementation never
changes a parameter name.

>>> parts = resolve_parts(ViTConfig(embed_dim=192, num_heads=3, norm_impl="torch"))
>>> parts.block_norm_layer(192)
LayerNorm((192,), eps=1e-06, elementwise_affine=True)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .config import ViTConfig
from .layers.attention import Attention, get_packed_backend
from .layers.embed import PatchEmbed
from .layers.linear import LINEAR_IMPLS
from .layers.mlp import MLP_LAYERS
from .layers.norm import NORM_IMPLS

LayerFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class Parts:
    """The layers a config resolves to. Every factory takes the width first.

    - ``norm_layer(dim)``: the final norm and ``fc_norm``;
    - ``block_norm_layer(dim)``: a block's two norms (their output only feeds a GEMM);
    - ``attn_layer(dim, drop_path=)``: the attention branch, ``forward(x, residual)``;
    - ``mlp_layer(dim, drop_path=)``: the MLP branch, ``forward(x, residual)``;
    - ``embed_layer()``: the patch embedding (a convolution, or a ResNetV2 stem for hybrids).
    """

    norm_layer: LayerFactory
    block_norm_layer: LayerFactory
    attn_layer: LayerFactory
    mlp_layer: LayerFactory
    embed_layer: LayerFactory

    def describe(self) -> dict[str, str]:
        """Part -> the class it builds (for ``fastvit info`` and reprs)."""
        return {name: _name(getattr(self, name)) for name in ("norm_layer", "block_norm_layer", "attn_layer", "mlp_layer", "embed_layer")}


def _name(factory) -> str:
    func = getattr(factory, "func", factory)
    return getattr(func, "__qualname__", repr(func))


def resolve_parts(cfg: ViTConfig) -> Parts:
    """The concrete layers for ``cfg`` (its ``*_impl`` fields are validated by ViTConfig)."""
    norm_cls, pre_norm_cls = NORM_IMPLS[cfg.norm_impl]
    fc1_cls, act_cls, residual_cls = LINEAR_IMPLS[cfg.linear_impl]
    mlp_cls = MLP_LAYERS[cfg.linear_impl]
    attn = functools.partial(
        Attention, num_heads=cfg.num_heads, qkv_bias=cfg.qkv_bias, attn_drop=cfg.attn_drop_rate,
        proj_drop=cfg.drop_rate, attn_fn=get_packed_backend(cfg.attn_impl), attn_impl=cfg.attn_impl,
        proj_layer=residual_cls,
    )
    mlp = functools.partial(
        mlp_cls, hidden_dim=cfg.mlp_hidden_dim, drop=cfg.drop_rate,
        fc1_layer=fc1_cls, act_layer=act_cls, fc2_layer=residual_cls,
    )
    if cfg.hybrid_layers is not None:  # ResNetV2 feature map as the patch embedding (token stride = patch_size)
        from .layers.resnetv2 import HybridEmbed

        embed = functools.partial(HybridEmbed, cfg.hybrid_layers, cfg.in_chans, cfg.embed_dim, cfg.img_size,
                                  cfg.dynamic_img_size)
    else:
        embed = functools.partial(PatchEmbed, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.img_size,
                                  cfg.dynamic_img_size)
    return Parts(
        embed_layer=embed,
        norm_layer=functools.partial(norm_cls, eps=cfg.norm_eps),
        block_norm_layer=functools.partial(pre_norm_cls, eps=cfg.norm_eps),
        attn_layer=attn,
        mlp_layer=mlp,
    )
