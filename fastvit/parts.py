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
from .layers.activations import GELU_APPROXIMATE, activation_class
from .layers.attention import Attention, get_attention_backend, get_packed_backend
from .layers.embed import PatchEmbed
from .layers.glu import GluMlp
from .layers.layer_scale import LayerScale
from .layers.impls import LINEAR_IMPLS, NORM_IMPLS, RMS_NORM_IMPLS
from .layers.mlp import Mlp

LayerFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class Parts:
    """The layers a config resolves to. Every factory takes the width first.

    - ``norm_layer(dim)``: the final norm and ``fc_norm``;
    - ``block_norm_layer(dim)``: a block's two norms (their output only feeds a GEMM);
    - ``attn_layer(dim, drop_path=)``: the attention branch, ``forward(x, residual)``;
    - ``mlp_layer(dim, drop_path=)``: the MLP branch, ``forward(x, residual)``;
    - ``embed_layer()``: the patch embedding (a convolution, or a ResNetV2 stem for hybrids);
    - ``layer_scale(dim)``: a block's LayerScale (``ls1``/``ls2``), None without one;
    - ``block_layer(dim, norm_layer=, attn_layer=, mlp_layer=, drop_path=, layer_scale=, depth=)``:
      the block (:mod:`fastvit.layers.block_layouts`), None for the model's pre-norm ``Block``.
    """

    norm_layer: LayerFactory
    block_norm_layer: LayerFactory
    attn_layer: LayerFactory
    mlp_layer: LayerFactory
    embed_layer: LayerFactory
    layer_scale: LayerFactory | None = None
    block_layer: LayerFactory | None = None

    def describe(self) -> dict[str, str]:
        """Part -> the class it builds (for ``fastvit info`` and reprs)."""
        names = ("norm_layer", "block_norm_layer", "attn_layer", "mlp_layer", "embed_layer", "layer_scale", "block_layer")
        return {name: _name(getattr(self, name)) for name in names}


def _name(factory) -> str:
    func = getattr(factory, "func", factory)
    return getattr(func, "__qualname__", repr(func))


def resolve_parts(cfg: ViTConfig) -> Parts:
    """The concrete layers for ``cfg`` (its ``*_impl`` fields are validated by ViTConfig)."""
    norm_cls, pre_norm_cls = NORM_IMPLS[cfg.norm_impl]
    if cfg.norm_layer == "rmsnorm":  # norm_impl's RMSNorm for every norm (timm's RmsNorm: weight only)
        norm_cls, pre_norm_cls = RMS_NORM_IMPLS[cfg.norm_impl]
    norm = functools.partial(norm_cls, eps=cfg.norm_eps)
    fc1_cls, act_cls, residual_cls, mlp_cls = LINEAR_IMPLS[cfg.linear_impl]
    if cfg.qk_norm:  # q_norm / k_norm over each head; the backend then takes q, k, v apart
        attn_fns = dict(qk_norm_layer=norm, unpacked_attn_fn=get_attention_backend(cfg.attn_impl))
    else:
        attn_fns = dict(attn_fn=get_packed_backend(cfg.attn_impl))
    attn = functools.partial(
        Attention, num_heads=cfg.num_heads, qkv_bias=cfg.qkv_bias, attn_drop=cfg.attn_drop_rate,
        proj_drop=cfg.drop_rate, attn_impl=cfg.attn_impl, proj_layer=residual_cls, **attn_fns,
    )
    parts = Parts(
        embed_layer=_embed_layer(cfg),
        norm_layer=norm,
        block_norm_layer=functools.partial(pre_norm_cls, eps=cfg.norm_eps),
        attn_layer=attn,
        mlp_layer=_mlp_layer(cfg, fc1_cls, act_cls, residual_cls, mlp_cls),
        layer_scale=functools.partial(LayerScale, init_values=cfg.init_values) if cfg.init_values is not None else None,
    )
    if (cfg.block_type != "pre_norm" or cfg.attn_layer != "attn" or cfg.scale_norm or not cfg.proj_bias or cfg.patch_norm
            or cfg.mlp_layer == "swiglu_unpacked"):
        from .layers.block_layouts import resolve_block_layout

        parts = resolve_block_layout(cfg, parts)
    return parts


def _mlp_layer(cfg: ViTConfig, fc1_cls, act_cls, residual_cls, mlp_cls) -> LayerFactory:
    """The MLP branch. Where ``linear_impl``'s fc1 fuses its activation (``act_cls`` is Identity:
    triton, auto), GELU in any of its forms (gelu, gelu_tanh, quick_gelu) rides in fc1's epilogue;
    SwiGLU's gate is fc1's for ``linear_impl`` (:class:`~fastvit.layers.glu.FusedGate`); the torch
    implementation runs the activation as its own op. The residual
    projection is always ``linear_impl``'s."""
    kind = dict(hidden_dim=cfg.mlp_hidden_dim, drop=cfg.drop_rate, fc2_layer=residual_cls)
    if cfg.mlp_layer == "swiglu":
        return functools.partial(GluMlp, fc1_layer=nn.Linear, act_layer=activation_class(cfg.act_layer),
                                 gate_impl=cfg.linear_impl, **kind)  # fmt: skip
    if act_cls is nn.Identity and cfg.act_layer in GELU_APPROXIMATE:
        fc1 = functools.partial(fc1_cls, approximate=GELU_APPROXIMATE[cfg.act_layer])
        return functools.partial(mlp_cls, fc1_layer=fc1, act_layer=act_cls, **kind)
    return functools.partial(Mlp, fc1_layer=nn.Linear, act_layer=activation_class(cfg.act_layer), **kind)


def _embed_layer(cfg: ViTConfig) -> LayerFactory:
    if cfg.hybrid_layers is not None:  # a convolutional stem's feature map as the patch embedding
        from .layers.conv_stems import StemEmbed

        return functools.partial(StemEmbed, cfg.hybrid_stem, cfg.hybrid_layers, cfg.in_chans, cfg.embed_dim, cfg.patch_size,
                                 cfg.img_size, cfg.dynamic_img_size, bias=cfg.use_patch_bias)
    return functools.partial(PatchEmbed, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.img_size,
                             cfg.dynamic_img_size, bias=cfg.use_patch_bias, dynamic_img_pad=cfg.dynamic_img_pad)
