"""timm's ``NaFlexVit`` in and out of fastvit's :class:`~fastvit.naflex.NaFlexVit`.

The parameter names are the same, so a state dict moves as it is. :func:`naflex_config_of` reads
the architecture off a timm model's modules and config; :func:`load_timm_naflex` loads a timm
state dict or checkpoint file strictly.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..naflex.config import NaFlexConfig
from ..naflex.model import NaFlexVit
from .common import load_strict, mlp_ratio_for
from .files import read_checkpoint

_ACTS = {"GELU": "gelu", "GELUTanh": "gelu_tanh", "QuickGELU": "quick_gelu", "SiLU": "silu"}


def _has(module) -> bool:
    return module is not None and not isinstance(module, nn.Identity)


def _act_name(act: nn.Module) -> str:
    kind = type(act).__name__
    if kind == "GELU" and getattr(act, "approximate", "none") == "tanh":
        kind = "GELUTanh"
    if kind not in _ACTS:
        raise ValueError(f"timm NaFlexVit activation {kind} is not one fastvit builds ({', '.join(_ACTS)})")
    return _ACTS[kind]


def naflex_config_of(model: nn.Module, **impls) -> NaFlexConfig:
    """The :class:`NaFlexConfig` of a timm ``NaFlexVit`` instance, read from its modules. Options
    fastvit does not build (rotary embeddings, EVA / SwiGLU blocks, qk-norm, a conv patch
    embedding, embedding norms, patch dropout...) raise ``ValueError`` naming them."""
    emb, blk = model.embeds, model.blocks[0]
    problems = []
    if not emb.is_linear:
        problems.append("a convolutional patch embedding (embed_proj_type='conv')")
    if emb.norm_input is not None or _has(emb.norm) or _has(model.norm_pre):
        problems.append("an input / embedding / pre-transformer norm")
    if getattr(model, "rope", None) is not None:
        problems.append("rotary position embeddings")
    if type(blk).__name__ != "Block" or type(blk.mlp).__name__ != "Mlp" or type(blk.attn).__name__ != "Attention":
        problems.append(f"{type(blk).__name__} blocks with {type(blk.attn).__name__} / {type(blk.mlp).__name__}")
    elif _has(blk.attn.q_norm) or _has(getattr(blk.attn, "norm", None)) or _has(getattr(blk.mlp, "norm", None)):
        problems.append("qk-norm or scale norms")
    if emb.pos_embed_type not in ("learned", "factorized") or getattr(emb, "pos_embed_use_grid_sample", False):
        problems.append(f"position embedding {emb.pos_embed_type!r} (grid_sample: {emb.pos_embed_use_grid_sample})")
    if getattr(model, "patch_drop", None) is not None or getattr(model, "pool_include_prefix", False):
        problems.append("patch dropout or pooling over prefix tokens")
    if getattr(emb, "patch_interpolator", None) is not None or not getattr(emb, "channels_last", True):
        problems.append("patch-size interpolation or a channels-first patch layout")
    if problems:
        raise ValueError(f"timm NaFlexVit with {'; '.join(problems)} is not one fastvit's NaFlexVit builds")
    dim, attn, pool = model.embed_dim, blk.attn, model.attn_pool
    grid = tuple(emb.pos_embed.shape[1:3]) if emb.pos_embed is not None else (emb.pos_embed_y.shape[1],
                                                                              emb.pos_embed_x.shape[1])
    ls = getattr(blk, "ls1", None)
    cfg = dict(
        patch_size=emb.patch_size[0], embed_dim=dim, depth=len(model.blocks), num_heads=attn.num_heads,
        mlp_ratio=mlp_ratio_for(dim, blk.mlp.fc1.out_features), qkv_bias=attn.qkv.bias is not None,
        init_values=float(ls.gamma.detach().float().mean()) if _has(ls) else None,
        class_token=emb.cls_token is not None, reg_tokens=emb.num_reg_tokens, pos_embed=emb.pos_embed_type,
        pos_embed_grid_size=grid, pos_embed_interp_mode=emb.pos_embed_interp_mode,
        pos_embed_ar_preserving=bool(emb.pos_embed_ar_preserving), final_norm=_has(model.norm) or _has(model.fc_norm),
        fc_norm=_has(model.fc_norm), global_pool="map" if pool is not None else model.global_pool,
        attn_pool_num_heads=pool.num_heads if pool is not None else None,
        attn_pool_mlp_ratio=mlp_ratio_for(dim, pool.mlp.fc1.out_features) if pool is not None else None,
        act_layer=_act_name(blk.mlp.act), norm_eps=float(blk.norm1.eps), in_chans=emb.in_chans,
        num_classes=model.head.out_features if isinstance(model.head, nn.Linear) else 0, **impls,
    )
    if emb.patch_size[0] != emb.patch_size[1]:
        raise ValueError(f"fastvit's NaFlexVit takes square patches, the timm model has {emb.patch_size}")
    return NaFlexConfig(**cfg)


def from_timm_naflex(model: nn.Module, **impls) -> NaFlexVit:
    """A fastvit :class:`NaFlexVit` with ``model``'s architecture and weights (``model``: timm's
    ``NaFlexVit``); ``impls``: ``norm_impl`` / ``linear_impl`` / ``varlen_impl``. Its
    ``pretrained_cfg`` is timm's; device, dtype and train/eval mode follow the source."""
    if type(model).__name__ != "NaFlexVit":
        raise TypeError(f"from_timm_naflex takes a timm.models.naflexvit.NaFlexVit, got {type(model).__name__}")
    out = NaFlexVit(naflex_config_of(model, **impls))
    w = model.embeds.proj.weight
    out = out.to(device=w.device, dtype=w.dtype)
    out.load_state_dict(model.state_dict(), strict=True)
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg:
        out.pretrained_cfg = out.default_cfg = dict(cfg)
    return out.train(model.training)


def to_timm_naflex_state_dict(model: NaFlexVit) -> dict[str, torch.Tensor]:
    """fastvit NaFlexVit weights for timm's ``NaFlexVit`` of the same config: the same names; copies."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_timm_naflex(model: NaFlexVit, source) -> NaFlexVit:
    """Load a timm NaFlexVit state dict (or a checkpoint file of one) into ``model``, strictly;
    missing or unexpected keys raise ``KeyError`` naming them, other shapes ``ValueError``."""
    if isinstance(source, (str, os.PathLike)):
        sd = read_checkpoint(source)
    elif isinstance(source, dict):
        sd = dict(source)
    else:
        raise TypeError(f"source must be a state dict or a checkpoint path, got {type(source).__name__}")
    for key in ("state_dict", "model", "model_ema"):
        if key in sd and isinstance(sd[key], dict):
            sd = dict(sd[key])
            break
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    return load_strict(model, sd, "timm NaFlexVit")
