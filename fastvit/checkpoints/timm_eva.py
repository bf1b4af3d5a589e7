"""timm's ``Eva`` (EVA, EVA-02, DINOv3, PE, RoPE-ViT...) in and out of fastvit's :class:`~fastvit.eva.Eva`.

The parameter names are the same, so a state dict moves as it is. :func:`from_timm_eva` reads
the architecture off a timm model's modules (not its name: a model built with other keywords
converts too); :func:`load_timm_eva` loads a timm state dict or file (``.safetensors``, ``.pth``...)
into a fastvit Eva, resampling a position embedding saved at another grid as timm's loader does.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..eva import Eva, EvaConfig
from ..layers.embed import resample_pos_embed
from .common import load_strict, mlp_ratio_for
from .files import read_checkpoint

_ROPE_TYPES = {"RotaryEmbeddingCat": "cat", "RotaryEmbeddingMixed": "mixed", "RotaryEmbeddingDinoV3": "dinov3"}


def _has(module) -> bool:
    return module is not None and not isinstance(module, nn.Identity)


def _mlp_options(mlp: nn.Module, dim: int) -> dict:
    kind = type(mlp).__name__
    if kind == "SwiGLU":
        hidden = mlp.fc1_g.out_features
        return dict(swiglu_mlp=True, scale_mlp=_has(mlp.norm), mlp_ratio=mlp_ratio_for(dim, hidden),
                    swiglu_align_to=0 if _has(mlp.norm) else hidden)  # align_to: any divisor keeps the width
    if kind == "GluMlp":
        return dict(swiglu_mlp=True, mlp_ratio=mlp_ratio_for(dim, mlp.fc1.out_features // 2))
    if kind == "Mlp":
        return dict(scale_mlp=_has(mlp.norm), mlp_ratio=mlp_ratio_for(dim, mlp.fc1.out_features))
    raise ValueError(f"timm Eva block MLP {kind} is not one fastvit's Eva builds (Mlp, GluMlp, SwiGLU)")


def _rope_options(rope, attn) -> dict:
    if rope is None:
        return dict(use_rot_pos_emb=False)
    kind = _ROPE_TYPES.get(type(rope).__name__)
    if kind is None:
        raise ValueError(f"timm rotary embedding {type(rope).__name__} is not one fastvit's Eva builds "
                         f"({', '.join(_ROPE_TYPES)})")
    out = dict(use_rot_pos_emb=True, rope_type=kind, rope_temperature=float(rope.temperature),
               rope_grid_indexing=rope.grid_indexing, rope_rotate_half=bool(getattr(attn, "rotate_half", False)))
    if kind == "cat":
        if rope.in_pixels:
            raise ValueError("timm RotaryEmbeddingCat with in_pixels=True is not one timm's Eva builds")
        out.update(rope_grid_offset=float(rope.grid_offset),
                   ref_feat_shape=None if rope.ref_feat_shape is None else tuple(rope.ref_feat_shape))
    return out


def eva_config_of(model: nn.Module, **impls) -> EvaConfig:
    """The :class:`EvaConfig` of a timm ``Eva`` instance, read from its modules."""
    pe, blk = model.patch_embed, model.blocks[0]
    attn, dim = blk.attn, model.embed_dim
    if len(set(pe.patch_size)) != 1:
        raise ValueError(f"fastvit's Eva takes square patches, the timm model has {pe.patch_size}")
    attn_type = "rope" if type(attn).__name__ == "AttentionRope" else "eva"
    fused = attn.qkv is not None
    if attn_type == "eva":
        qkv_bias = attn.q_bias is not None if fused else attn.q_proj.bias is not None
    else:
        qkv_bias = attn.qkv.bias is not None if fused else attn.q_proj.bias is not None
    if attn.head_dim * attn.num_heads != dim:
        raise ValueError(f"attn_head_dim {attn.head_dim} x {attn.num_heads} heads != embed_dim {dim}: not supported")
    gamma = getattr(blk, "gamma_1", None)
    pool = model.attn_pool
    cfg = dict(
        img_size=tuple(pe.img_size), patch_size=pe.patch_size[0], in_chans=pe.proj.in_channels,
        num_classes=model.head.out_features if isinstance(model.head, nn.Linear) else 0,
        global_pool=model.global_pool, embed_dim=dim, depth=len(model.blocks), num_heads=attn.num_heads,
        qkv_bias=qkv_bias, qkv_fused=fused, attn_type=attn_type, scale_attn_inner=_has(attn.norm),
        norm_eps=float(blk.norm1.eps), init_values=None if gamma is None else float(gamma.detach().float().mean()),
        class_token=model.cls_token is not None, num_reg_tokens=model.reg_token.shape[1] if model.reg_token is not None else 0,
        no_embed_class=bool(model.no_embed_class), use_abs_pos_emb=model.pos_embed is not None,
        use_post_norm=type(blk).__name__ == "EvaBlockPostNorm", use_pre_transformer_norm=_has(model.norm_pre),
        use_post_transformer_norm=_has(model.norm), use_fc_norm=_has(model.fc_norm),
        attn_pool_num_heads=pool.num_heads if pool is not None else None,
        attn_pool_mlp_ratio=mlp_ratio_for(dim, pool.mlp.fc1.out_features) if pool is not None else None,
        dynamic_img_size=bool(model.dynamic_img_size), dynamic_img_pad=bool(getattr(pe, "dynamic_img_pad", False)),
        **_mlp_options(blk.mlp, dim), **_rope_options(model.rope, attn), **impls,
    )
    if pool is not None and cfg["global_pool"] != "map":
        cfg["global_pool"] = "map"  # timm's Eva pools with its attention pool whatever global_pool says
    return EvaConfig(**cfg)


def from_timm_eva(model: nn.Module, **impls) -> Eva:
    """A fastvit :class:`Eva` with ``model``'s architecture and weights (``model``: timm's ``Eva``);
    ``impls``: ``attn_impl`` / ``norm_impl`` / ``linear_impl``. Its ``pretrained_cfg`` is timm's."""
    if type(model).__name__ != "Eva":
        raise TypeError(f"from_timm_eva takes a timm.models.eva.Eva, got {type(model).__name__}")
    out = Eva(eva_config_of(model, **impls))
    device, dtype = model.patch_embed.proj.weight.device, model.patch_embed.proj.weight.dtype
    out = out.to(device=device, dtype=dtype)
    out.load_state_dict(model.state_dict(), strict=True)
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg:
        out.pretrained_cfg = out.default_cfg = dict(cfg)
    return out.train(model.training)


# EvaConfig fields timm's ``Eva`` takes under the same keyword (the rest choose fastvit's implementations, or,
# norm_eps, the norm layer timm takes as a class)
TIMM_EVA_ARGS = tuple(f for f in EvaConfig.__dataclass_fields__ if f not in ("norm_eps", "attn_impl", "norm_impl", "linear_impl"))


def to_timm_eva_state_dict(model: Eva) -> dict[str, torch.Tensor]:
    """fastvit Eva weights for timm's ``Eva`` of the same config: the same names; copies."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


_PE_SWAPS = (("conv1", "patch_embed.proj"), ("positional_embedding", "pos_embed"), ("transformer.resblocks.", "blocks."),
              ("ln_pre", "norm_pre"), ("ln_post", "norm"), ("ln_", "norm"), ("ls_1.gamma", "gamma_1"),
              ("ls_2.gamma", "gamma_2"), ("in_proj_", "qkv."), ("out_proj", "proj"), ("mlp.c_fc", "mlp.fc1"),
              ("mlp.c_proj", "mlp.fc2"))
_EVA_SWAPS = (("mlp.ffn_ln", "mlp.norm"), ("attn.inner_attn_ln", "attn.norm"), ("mlp.w12", "mlp.fc1"),
              ("mlp.w1", "mlp.fc1_g"), ("mlp.w2", "mlp.fc1_x"), ("mlp.w3", "mlp.fc2"))


def _from_pe(sd: dict, prefix: str) -> dict:
    """Meta's Perception Encoder release (``visual.conv1`` ...) in timm's names, as timm's loader maps it."""
    out = {}
    for k, v in sd.items():
        if not k.startswith(prefix):
            continue
        k = k[len(prefix):]
        for a, b in _PE_SWAPS:
            k = k.replace(a, b)
        if k.startswith("attn_pool"):
            k = k.replace("attn_pool.attn", "attn_pool").replace("attn_pool.layernorm", "attn_pool.norm")
            k = k.replace("attn_pool.probe", "attn_pool.latent")
            if k.startswith("attn_pool.qkv"):
                dim, kind = v.shape[0] // 3, k.rsplit(".", 1)[1]
                out[f"attn_pool.q.{kind}"], out[f"attn_pool.kv.{kind}"] = v[:dim], v[dim:]
                continue
        elif k == "proj":
            k, v = "head.weight", v.transpose(0, 1)
            out["head.bias"] = torch.zeros(v.shape[0], dtype=v.dtype)
        elif k == "class_embedding":
            k, v = "cls_token", v[None, None]
        elif k == "pos_embed":
            v = v[None]
        out[k] = v
    return out


def timm_eva_keys(sd: dict, model: Eva) -> dict:
    """The release layouts timm's Eva loader reads, in timm's names: Meta's PE and DINOv3 files
    (``storage_tokens``, ``ls1.gamma``, a qkv bias whose k part is dropped), EVA's own
    (``mlp.w1``/``w2``/``w3``, ``ffn_ln``, ``inner_attn_ln``) and OpenCLIP's ``visual.trunk.``
    prefix; timm-layout dicts pass through. Buffers timm recomputes (``rope.*`` but ``rope.freqs``) go."""
    if "visual.conv1.weight" in sd or "conv1.weight" in sd:
        return _from_pe(sd, "visual." if "visual.conv1.weight" in sd else "")
    prefix = "visual.trunk." if "visual.trunk.pos_embed" in sd else "visual." if "visual.pos_embed" in sd else ""
    dinov3 = "storage_tokens" in sd
    mim = not dinov3 and prefix + "mask_token" in sd
    split_qkv = prefix + "blocks.0.attn.q_proj.weight" in sd
    has_q_bias = any(k.endswith("attn.q_bias") for k in model.state_dict())
    out = {}
    for k, v in sd.items():
        if not k.startswith(prefix):
            continue
        k = k[len(prefix):]
        if k.startswith("rope.") and k != "rope.freqs":
            continue
        if dinov3:
            if k.endswith((".periods", ".bias_mask", "mask_token")) or k.startswith(("projectors.", "local_cls_norm")):
                continue
            if k.endswith("qkv.bias"):
                if has_q_bias:  # the k third is fixed at zero in timm's model
                    q, _, vb = v.chunk(3, dim=-1)
                    out[k.replace("qkv.bias", "q_bias")], out[k.replace("qkv.bias", "v_bias")] = q, vb
                continue
            k = k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2").replace("storage_tokens", "reg_token")
        elif mim and k in ("mask_token", "lm_head.weight", "lm_head.bias"):
            continue
        elif mim and k in ("norm.weight", "norm.bias"):
            k = "fc_" + k
        for a, b in _EVA_SWAPS:
            k = k.replace(a, b)
        if split_qkv:
            k = k.replace("q_bias", "q_proj.bias").replace("v_bias", "v_proj.bias")
        out[k] = v
    return out


def load_timm_eva(model: Eva, source) -> Eva:
    """Load a timm Eva state dict (or a checkpoint file of one) into ``model``, strictly.

    Training wrappers (``model``, ``state_dict``, ``module.``) are opened, the release layouts
    timm's loader reads are renamed (:func:`timm_eva_keys`), a ``pos_embed`` of another grid is
    resampled to the model's (bicubic, antialiased: timm's loader).
    Missing or unexpected keys raise ``KeyError`` naming them.
    """
    if isinstance(source, (str, os.PathLike)):
        sd = read_checkpoint(source)
    elif isinstance(source, dict):
        sd = dict(source)
    else:
        raise TypeError(f"source must be a state dict or a checkpoint path, got {type(source).__name__}")
    if "model_ema" in sd and isinstance(sd["model_ema"], dict):
        sd = dict(sd["model_ema"])
    sd = timm_eva_keys(sd, model)
    pos = sd.get("pos_embed")
    if model.pos_embed is not None and isinstance(pos, torch.Tensor) and pos.shape != model.pos_embed.shape:
        prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        grid = pos.shape[1] - prefix
        side = int(round(grid**0.5))
        if pos.ndim != 3 or side * side != grid:
            raise ValueError(f"pos_embed {tuple(pos.shape)} is not a square grid plus {prefix} prefix tokens; "
                             f"the model's is {tuple(model.pos_embed.shape)}")
        sd["pos_embed"] = resample_pos_embed(pos, model.cfg.grid_size, (side, side), prefix)
    return load_strict(model, sd, "timm Eva")
