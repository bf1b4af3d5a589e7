"""torchvision's VisionTransformer (``torchvision.models.vit_b_16`` and friends).

Its blocks use ``nn.MultiheadAttention``, whose packed ``in_proj_weight`` has
the same (q, k, v) row order as fastvit's ``qkv``. Older torchvision releases
named the MLP layers ``linear_1``/``linear_2`` instead of ``0``/``3``; both are read.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ViTConfig
from .common import Rule, build_like, config_mismatch, rename, shorten

_LAYER = r"encoder\.layers\.encoder_layer_(\d+)\."
_RULES: list[Rule] = [
    (r"class_token", "cls_token", None),
    (r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1", None),
    (r"encoder\.pos_embedding", "pos_embed", None),
    (_LAYER + r"ln_1\.(weight|bias)", r"blocks.\1.norm1.\2", None),
    (_LAYER + r"self_attention\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2", None),
    (_LAYER + r"self_attention\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2", None),
    (_LAYER + r"ln_2\.(weight|bias)", r"blocks.\1.norm2.\2", None),
    (_LAYER + r"mlp\.(?:0|linear_1)\.(weight|bias)", r"blocks.\1.mlp.fc1.\2", None),
    (_LAYER + r"mlp\.(?:3|linear_2)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2", None),
    (r"encoder\.ln\.(weight|bias)", r"norm.\1", None),
    (r"heads\.head\.(weight|bias)", r"head.\1", None),
    (r"heads\.pre_logits\.(weight|bias)", r"pre_logits.fc.\1", None),
]


def convert_torchvision(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """torchvision names -> fastvit names; returns (converted, entries no rule knows)."""
    return rename(state_dict, _RULES)


def to_torchvision_state_dict(model) -> dict[str, torch.Tensor]:
    """fastvit weights under torchvision's VisionTransformer names (class token pooling,
    final norm before pooling, no distillation token; torchvision always has a head)."""
    cfg = model.cfg
    differs = {"global_pool": cfg.global_pool != "token", "fc_norm": cfg.use_fc_norm, "distilled": cfg.distilled,
               "num_classes=0": not cfg.num_classes, "qkv_bias=False": not cfg.qkv_bias,
               "a non-square image": cfg.img_size[0] != cfg.img_size[1],
               "a hybrid ResNet patch embedding": bool(getattr(cfg, "hybrid_layers", None))}
    if any(differs.values()):
        raise ValueError("torchvision's VisionTransformer (square images, class token after the final norm, Linear "
                         f"head, biased qkv) cannot hold this model: {', '.join(k for k, v in differs.items() if v)}")
    sd = model.state_dict()
    result = {"class_token": sd["cls_token"], "encoder.pos_embedding": sd["pos_embed"]}
    for theirs, ours in (("conv_proj", "patch_embed.proj"), ("encoder.ln", "norm"), ("heads.head", "head")):
        for kind in ("weight", "bias"):
            result[f"{theirs}.{kind}"] = sd[f"{ours}.{kind}"]
    if cfg.representation_size:
        for kind in ("weight", "bias"):
            result[f"heads.pre_logits.{kind}"] = sd[f"pre_logits.fc.{kind}"]
    for i in range(cfg.depth):
        b = f"encoder.layers.encoder_layer_{i}."
        for kind in ("weight", "bias"):
            for theirs, ours in (("ln_1", "norm1"), ("self_attention.out_proj", "attn.proj"), ("ln_2", "norm2"),
                                 ("mlp.0", "mlp.fc1"), ("mlp.3", "mlp.fc2")):
                result[f"{b}{theirs}.{kind}"] = sd[f"blocks.{i}.{ours}.{kind}"]
            result[f"{b}self_attention.in_proj_{kind}"] = sd[f"blocks.{i}.attn.qkv.{kind}"]
    return {k: v.detach().clone() for k, v in result.items()}


def from_torchvision(model: nn.Module, **impl):
    """An equivalent fastvit VisionTransformer of a ``torchvision.models.VisionTransformer``.

    ``impl``: ``attn_impl``, ``norm_impl``, ``linear_impl``. The result has the
    source's device, dtype and train/eval mode.
    """
    what = f"torchvision {type(model).__name__}"
    if not (hasattr(model, "conv_proj") and hasattr(model, "encoder") and hasattr(model, "heads")):
        raise TypeError(f"from_torchvision takes a torchvision.models.VisionTransformer, got {type(model).__name__}")
    if not isinstance(model.conv_proj, nn.Conv2d):
        raise config_mismatch(what, "a convolutional stem (conv_stem_configs)")
    layers = list(model.encoder.layers)
    first = layers[0]
    attn, act = first.self_attention, first.mlp[1]
    if type(act) is not nn.GELU or act.approximate != "none":
        raise config_mismatch(what, f"MLP activation {act!r} (fastvit uses exact GELU)")
    if attn.in_proj_bias is None or attn.out_proj.bias is None:
        raise config_mismatch(what, "attention projections without bias")
    norms = [model.encoder.ln] + [m for layer in layers for m in (layer.ln_1, layer.ln_2)]
    if not all(isinstance(n, nn.LayerNorm) and n.elementwise_affine for n in norms) or len({n.eps for n in norms}) != 1:
        raise config_mismatch(what, "norm layers that are not LayerNorms with one shared eps")
    pre_logits = getattr(model.heads, "pre_logits", None)
    cfg = ViTConfig(
        img_size=model.image_size, patch_size=model.patch_size, in_chans=model.conv_proj.in_channels,
        num_classes=model.heads.head.out_features, embed_dim=model.hidden_dim, depth=len(layers),
        num_heads=attn.num_heads, mlp_ratio=model.mlp_dim / model.hidden_dim, qkv_bias=True,
        representation_size=pre_logits.out_features if pre_logits is not None else None,
        norm_eps=model.encoder.ln.eps, drop_rate=model.dropout, attn_drop_rate=model.attention_dropout,
        pos_embed_resample="torchvision", **impl,
    )
    if cfg.mlp_hidden_dim != model.mlp_dim:
        raise config_mismatch(what, f"mlp_dim={model.mlp_dim} (not reproduced by an mlp_ratio)")
    sd, unknown = convert_torchvision(model.state_dict())
    if unknown:
        raise config_mismatch(what, f"weights fastvit does not have: {shorten(unknown)}")
    return build_like(cfg, sd, model, what)
