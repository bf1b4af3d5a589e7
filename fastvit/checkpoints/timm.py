"""timm's VisionTransformer / VisionTransformerDistilled: fastvit's own parameter names.

Checkpoints load as they are. What the keys show about the architecture
(register tokens, LayerScale, qk-norm, pre-norm, attention pool, final norm,
SwiGLU, ``no_embed_class``) is checked against the model first
(:mod:`.options`); LayerScale into a model without it is folded into the
projection in front of it, and a position embedding without entries for the
prefix tokens gets zeros there, both the same computation.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..config import ViTConfig
from .common import build_like, config_mismatch, mlp_ratio_for, timm_activation
from .options import OPTION_DEFAULTS
from .timm_blocks import is_other_layout, layout_fields, layout_problems, norm_layer_of
from .timm_hybrid import from_timm_hybrid

_POOLS = ("token", "avg", "max", "avgmax", "map", "")


def convert_timm(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """timm names are fastvit names: nothing to rename, nothing left unmatched (keys the
    model lacks are reported when the result is fitted to it).

    The original DINOv2 release (facebookresearch/dinov2) uses them too, but for its mask
    token (dropped), ``register_tokens`` (``reg_token``; the class token's position, which
    its registers lack, is folded into the class token, as timm's reg4 models have it) and
    the SwiGLU ``mlp.w12`` / ``mlp.w3`` (``fc1`` / ``fc2``).
    """
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"(blocks\.\d+\.mlp)\.(w12|w3)\.(weight|bias)", key)
        out[f"{m[1]}.{'fc1' if m[2] == 'w12' else 'fc2'}.{m[3]}" if m else key] = value
    if "register_tokens" in out and "reg_token" not in out:
        out.pop("mask_token", None)
        out["reg_token"] = out.pop("register_tokens")
        pos, cls = out.get("pos_embed"), out.get("cls_token")
        if isinstance(pos, torch.Tensor) and isinstance(cls, torch.Tensor) and pos.ndim == cls.ndim == 3 and pos.shape[1] > 1:
            out["cls_token"], out["pos_embed"] = cls + pos[:, :1], pos[:, 1:]
    elif "mask_token" in out and any(k.endswith(".ls1.gamma") for k in out):
        out.pop("mask_token")
    return out, {}


def to_timm_state_dict(model) -> dict[str, torch.Tensor]:
    """fastvit weights for timm's ``VisionTransformer`` (``VisionTransformerDistilled`` when
    distilled) of the same config: the names are identical; the tensors are copies."""
    if model.cfg.representation_size:
        raise ValueError("timm's VisionTransformer has no pre-logits (representation) layer; this model has one")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def timm_kwargs(cfg: ViTConfig) -> dict:
    """Keyword arguments for timm's ``VisionTransformer`` (``VisionTransformerDistilled`` when
    ``cfg.distilled``) with the architecture of ``cfg``, whose state dict
    :func:`to_timm_state_dict` gives. Needs timm only for the MLP / norm classes."""
    from functools import partial


    if cfg.representation_size or cfg.hybrid_layers is not None:
        raise ValueError("timm_kwargs covers the plain VisionTransformer: no pre-logits layer, no hybrid stem")
    if cfg.use_patch_bias != (not cfg.pre_norm):
        raise ValueError(f"timm ties the patch bias to pre_norm (bias = not pre_norm); this config has "
                         f"patch_bias={cfg.patch_bias} with pre_norm={cfg.pre_norm}")
    kw = dict(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
              global_pool=cfg.global_pool, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
              mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, class_token=cfg.class_token, fc_norm=cfg.fc_norm,
              dynamic_img_size=cfg.dynamic_img_size, norm_layer=partial(nn.LayerNorm, eps=cfg.norm_eps),
              drop_rate=cfg.drop_rate, pos_drop_rate=cfg.drop_rate, proj_drop_rate=cfg.drop_rate,
              attn_drop_rate=cfg.attn_drop_rate, drop_path_rate=cfg.drop_path_rate)
    for name in ("reg_tokens", "no_embed_class", "init_values", "qk_norm", "pre_norm", "final_norm", "dynamic_img_pad"):
        value = getattr(cfg, name)
        if value != OPTION_DEFAULTS.get(name, False):
            kw[name] = value
    act = cfg.act_layer
    if act != "gelu":
        kw["act_layer"] = act
    if cfg.mlp_layer == "swiglu":
        from timm.layers import SwiGLUPacked

        kw["mlp_layer"] = SwiGLUPacked
    return kw


def _is_identity(m) -> bool:
    return m is None or isinstance(m, nn.Identity)


def _mlp_kind(mlp: nn.Module) -> str | None:
    """"mlp" (fc1, act, fc2), "swiglu" (timm's packed GluMlp, act on the first half), "swiglu_unpacked"
    (timm's SwiGLU: fc1_g, fc1_x, fc2) or None."""
    name = type(mlp).__name__
    if name == "Mlp":
        return "mlp"
    if name == "SwiGLU" and _is_identity(getattr(mlp, "norm", None)):
        return "swiglu_unpacked"
    if name in ("GluMlp", "SwiGLUPacked") and not getattr(mlp, "gate_last", True) and getattr(mlp, "chunk_dim", -1) == -1:
        return "swiglu"
    return None


def _block_problems(i: int, block: nn.Module, model: nn.Module) -> list[str]:
    attn, mlp, found = getattr(block, "attn", None), getattr(block, "mlp", None), []
    kind = _mlp_kind(mlp) if mlp is not None else None
    if type(block).__name__ != "Block" or type(attn).__name__ != "Attention" or kind is None:
        return [f"blocks.{i} is {type(block).__name__}({type(attn).__name__}, {type(mlp).__name__}), "
                "not the pre-norm Block(Attention, Mlp or SwiGLU)"]
    qk = [not _is_identity(getattr(attn, n, None)) for n in ("q_norm", "k_norm")]
    if qk[0] != qk[1] or (qk[0] and not all(isinstance(getattr(attn, n), nn.LayerNorm) for n in ("q_norm", "k_norm"))):
        found.append(f"blocks.{i} has q_norm/k_norm other than a LayerNorm on both")
    scale = [not _is_identity(getattr(m, "norm", None)) for m in (attn, mlp)]  # BEiT-3's scale norms: both or none
    extras = [] if scale[0] == scale[1] else ["attn.norm" if scale[0] else "mlp.norm", "(one scale norm without the other)"]
    extras += ["gate"] if getattr(attn, "gate", None) is not None else []
    for which in ("ls1", "ls2"):
        ls = getattr(block, which, None)
        if not _is_identity(ls) and type(ls).__name__ != "LayerScale":
            extras.append(f"{which} ({type(ls).__name__})")
    if extras:
        found.append(f"blocks.{i} has {', '.join(extras)}")
    act = timm_activation(mlp.act)
    if act is None or (kind == "swiglu") != (act == "silu") and kind != "swiglu_unpacked":
        found.append(f"blocks.{i}.mlp.act is {mlp.act!r}; fastvit takes GELU (exact or tanh), quick_gelu or SiLU, "
                     "SiLU exactly with the SwiGLU MLP")
    fcs = ("fc1_g", "fc1_x", "fc2") if kind == "swiglu_unpacked" else ("fc1", "fc2")
    biases = {attn.proj.bias is not None, *(getattr(mlp, n).bias is not None for n in fcs)}
    if biases != {True} and (len(biases) > 1 or kind == "swiglu" or scale[0]):  # bias-free: all of them (AIMv2)
        found.append(f"blocks.{i} has projections without bias (fastvit: all or none, with the Mlp or unpacked SwiGLU)")
    if abs(attn.scale - attn.head_dim**-0.5) > 1e-12 or attn.head_dim * attn.num_heads != model.embed_dim:
        found.append(f"blocks.{i}.attn has a head dim or scale other than embed_dim / num_heads")
    return found


def _pool_problems(model: nn.Module) -> list[str]:
    pool, found = getattr(model, "global_pool", None), []
    if pool not in _POOLS:
        found.append(f"global_pool={pool!r} (fastvit pools {', '.join(map(repr, _POOLS))})")
    ap = getattr(model, "attn_pool", None)
    if pool == "map" and ap is not None:
        if type(ap).__name__ != "AttentionPoolLatent" or getattr(ap, "latent_len", 1) != 1 or getattr(ap, "pos_embed", None) is not None:
            found.append("an attention pool other than AttentionPoolLatent with one latent and no position embedding")
        elif ap.num_heads != model.blocks[0].attn.num_heads or getattr(ap, "pool", "token") != "token" \
                or ap.mlp.fc1.out_features != model.blocks[0].mlp.fc1.out_features or ap.kv.in_features != model.embed_dim:
            found.append("an attention pool whose heads, MLP width or pooling differ from the blocks'")
        elif not (_is_identity(ap.q_norm) and _is_identity(ap.k_norm)):
            found.append("an attention pool with q/k norms")
    return found


def _unsupported(model: nn.Module) -> list[str]:
    """What this timm model does that fastvit's VisionTransformer cannot (empty: convertible)."""
    pe, found = model.patch_embed, []
    if not isinstance(getattr(pe, "proj", None), nn.Conv2d) or hasattr(pe, "backbone"):
        found.append("a patch embedding other than one Conv2d (hybrid backbone)")
    if type(getattr(pe, "norm", None)).__name__ not in ("Identity", "NoneType", "LayerNorm", "RmsNorm"):
        found.append("a norm other than LayerNorm or RmsNorm in the patch embedding")
    if model.pos_embed is None:
        found.append("no position embedding")
    found += _pool_problems(model)
    norm_pre = getattr(model, "norm_pre", None)
    if not _is_identity(norm_pre) and type(norm_pre).__name__ not in ("LayerNorm", "RmsNorm"):
        found.append(f"norm_pre is {type(norm_pre).__name__}, not a LayerNorm or RmsNorm")
    if not (_is_identity(model.norm) or _is_identity(model.fc_norm)):
        found.append("two final norms (before and after pooling)")
    for i, block in enumerate(model.blocks):
        found += layout_problems(i, block) if is_other_layout(block) else _block_problems(i, block, model)
        if found:
            break
    if len({type(b).__name__ for b in model.blocks}) > 1:
        found.append("blocks of different kinds")
    found += norm_layer_of(model)[1]  # one kind of norm (LayerNorm or RmsNorm), one eps
    if any(isinstance(m, nn.GroupNorm) for m in model.modules()):
        found.append("norm layers other than LayerNorm or RmsNorm (GroupNorm)")
    return found


def _init_values(model: nn.Module) -> float | None:
    """LayerScale's init value: timm keeps none, so gamma's value when all are one constant
    (a freshly built model), else 1.0 -- the loaded gammas, not this, compute the forward."""
    gammas = [getattr(b, n).gamma for b in model.blocks for n in ("ls1", "ls2") if hasattr(getattr(b, n, None), "gamma")]
    if not gammas:
        return None
    first = gammas[0].detach().flatten()[0]
    same = all(bool((g.detach() == first).all()) for g in gammas)
    return float(first) if same and float(first) != 0.0 else 1.0


def options_of(model: nn.Module) -> dict:
    """The issue-14 options of a timm VisionTransformer as ViTConfig fields (only those
    that differ from the default, so a plain model needs none of them)."""
    first, pe = model.blocks[0], model.patch_embed
    final = not (_is_identity(model.norm) and _is_identity(model.fc_norm))
    opts = dict(
        reg_tokens=int(getattr(model, "num_reg_tokens", 0) or 0),
        no_embed_class=bool(getattr(model, "no_embed_class", False)),
        pre_norm=not _is_identity(getattr(model, "norm_pre", None)),
        final_norm=final,
        dynamic_img_pad=bool(getattr(pe, "dynamic_img_pad", False)),
        norm_layer=norm_layer_of(model)[0] or "layernorm",
    )
    if not is_other_layout(first):  # the pre-norm Block's options (the others: timm_blocks.layout_fields)
        opts.update(init_values=_init_values(model), qk_norm=not _is_identity(getattr(first.attn, "q_norm", None)),
                    act_layer=timm_activation(first.mlp.act), mlp_layer=_mlp_kind(first.mlp),
                    scale_norm=not _is_identity(getattr(first.attn, "norm", None)))
        opts["proj_bias"] = first.attn.proj.bias is not None
    opts["pool_include_prefix"] = bool(getattr(model, "pool_include_prefix", False))
    opts["patch_norm"] = not _is_identity(getattr(pe, "norm", None))
    bias = pe.proj.bias is not None
    if bias != (not opts["pre_norm"]):
        opts["patch_bias"] = bias
    return {k: v for k, v in opts.items() if v != OPTION_DEFAULTS.get(k, False)}


def from_timm(model: nn.Module, **impl):
    """An equivalent fastvit VisionTransformer of a timm ``VisionTransformer`` (or
    ``VisionTransformerDistilled``): pre-norm blocks with an MLP (GELU, tanh GELU,
    quick-GELU) or packed SwiGLU, optional LayerScale, qk-norm, register tokens,
    pre-norm, ``no_embed_class``, class-token / average / max / attention-pool
    pooling. ``impl``: ``attn_impl``, ``norm_impl``, ``linear_impl``. The result
    has the source's device, dtype and train/eval mode.

    Dropout rates are carried over approximately: fastvit has one ``drop_rate`` where
    timm has separate position, projection and head rates (the largest is used).
    """
    what = f"timm {type(model).__name__}"
    if type(model).__name__ == "Eva":  # timm's eva module: EVA-02, DINOv3, PE, RoPE-ViT
        from .timm_eva import from_timm_eva

        return from_timm_eva(model, **impl)
    if type(model).__name__ == "NaFlexVit":  # timm's naflexvit module
        from .timm_naflex import from_timm_naflex

        return from_timm_naflex(model, **impl)
    if not all(hasattr(model, a) for a in ("patch_embed", "blocks", "pos_embed", "norm", "fc_norm", "head")):
        raise TypeError(f"from_timm takes a timm VisionTransformer, got {type(model).__name__}")
    if getattr(model.patch_embed, "backbone", None) is not None:  # the hybrid (ResNetV2 stem) ViTs
        # what the ViT checks find, and timm's names (fastvit's): the hybrid module needs no import back
        return from_timm_hybrid(model, _unsupported(model), convert_timm(model.state_dict())[0], **impl)
    problems = _unsupported(model)
    if problems:
        raise config_mismatch(what, "; ".join(problems))
    pe, first, last = model.patch_embed, model.blocks[0], model.blocks[-1]
    patch = tuple(pe.patch_size) if not isinstance(pe.patch_size, int) else (pe.patch_size, pe.patch_size)
    if patch[0] != patch[1] or pe.img_size is None:
        raise config_mismatch(what, f"patch size {patch} / image size {pe.img_size} (fastvit: square patches, a fixed native size)")
    head, ln = model.head, next(m for m in model.modules() if type(m).__name__ in ("LayerNorm", "RmsNorm", "RMSNorm"))
    # One fastvit drop_rate for timm's position, projection and head rates; getattr because
    # older timm releases lack some of these modules.
    drop_rate = max(getattr(getattr(o, n, None), "p", 0.0)
                    for o, n in ((model, "head_drop"), (model, "pos_drop"), (getattr(first, "attn", None), "proj_drop"),
                                 (getattr(first, "mlp", None), "drop1"), (first, "mlp_drop")))
    if is_other_layout(first):
        fields = {**options_of(model), **layout_fields(model), **impl}
        hidden = int(model.embed_dim * fields["mlp_ratio"])
        block_fields = {}
    else:
        hidden = (first.mlp.fc1 if hasattr(first.mlp, "fc1") else first.mlp.fc1_g).out_features
        fields = {**options_of(model), **impl}
        block_fields = dict(num_heads=first.attn.num_heads, mlp_ratio=mlp_ratio_for(model.embed_dim, hidden),
                            qkv_bias=first.attn.qkv.bias is not None,
                            attn_drop_rate=getattr(getattr(first.attn, "attn_drop", None), "p", 0.0),
                            drop_path_rate=float(getattr(getattr(last, "drop_path1", None), "drop_prob", 0.0)))
    cfg = ViTConfig(
        img_size=tuple(pe.img_size), patch_size=patch[0], in_chans=pe.proj.in_channels,
        num_classes=head.out_features if isinstance(head, nn.Linear) else 0,
        global_pool=model.global_pool,
        embed_dim=model.embed_dim, depth=len(model.blocks),
        class_token=model.cls_token is not None,
        distilled=getattr(model, "dist_token", None) is not None,
        fc_norm=not _is_identity(model.fc_norm),
        norm_eps=ln.eps,
        dynamic_img_size=bool(getattr(model, "dynamic_img_size", False)),
        drop_rate=drop_rate,
        pos_embed_resample="timm",
        **block_fields,
        **fields,
    )
    if cfg.mlp_hidden_dim != hidden:
        raise config_mismatch(what, f"MLP width {hidden} (not reproduced by an mlp_ratio)")
    result = build_like(cfg, model.state_dict(), model, what)
    # timm's data helpers read pretrained_cfg: the same dict gives the same preprocessing
    # (a timm model built without create_model has none, and timm falls back to its defaults)
    result.pretrained_cfg = result.default_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    result.distilled_training = bool(getattr(model, "distilled_training", False))
    return result
