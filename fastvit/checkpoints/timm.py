"""timm's VisionTransformer / VisionTransformerDistilled: fastvit's own parameter names.

Checkpoints load as they are, except that LayerScale (``blocks.N.ls1.gamma``,
DeiT III) is folded into the projection in front of it: ``gamma * (W x + b)``
is ``(gamma W) x + gamma b``. A position embedding without entries for the
class token (``no_embed_class``) gets zeros there, which is the same computation.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..config import GLOBAL_POOLS, ViTConfig
from .common import build_like, config_mismatch, shorten

_LAYER_SCALE_TARGET = {"1": "attn.proj", "2": "mlp.fc2"}


def convert_timm(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """timm names -> fastvit names (the same, LayerScale folded); nothing is left unmatched:
    keys fastvit lacks are reported when the result is fitted to a model."""
    out = dict(state_dict)
    for key in [k for k in out if re.fullmatch(r"blocks\.\d+\.ls[12]\.gamma", k)]:
        i, which = re.fullmatch(r"blocks\.(\d+)\.ls([12])\.gamma", key).groups()
        target = f"blocks.{i}.{_LAYER_SCALE_TARGET[which]}"
        if f"{target}.weight" not in out or f"{target}.bias" not in out:
            continue  # left in place: reported as unexpected
        w, b = out[f"{target}.weight"], out[f"{target}.bias"]
        if not (out[key].ndim == 1 and w.ndim == 2 and b.shape == out[key].shape == w.shape[:1]):
            raise ValueError(f"{key}: LayerScale of shape {tuple(out[key].shape)} does not fit {target} "
                             f"(weight {tuple(w.shape)}, bias {tuple(b.shape)})")
        gamma = out.pop(key).float()
        out[f"{target}.weight"] = (w.float() * gamma[:, None]).to(w.dtype)
        out[f"{target}.bias"] = (b.float() * gamma).to(b.dtype)
    return out, {}


def to_timm_state_dict(model) -> dict[str, torch.Tensor]:
    """fastvit weights for timm's ``VisionTransformer`` (``VisionTransformerDistilled`` when
    distilled) of the same config: the names are identical; the tensors are copies."""
    if model.cfg.representation_size:
        raise ValueError("timm's VisionTransformer has no pre-logits (representation) layer; this model has one")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _is_gelu(act: nn.Module) -> bool:
    # torch's nn.GELU or timm's own GELU class, both exact unless approximate="tanh"
    return type(act).__name__ == "GELU" and getattr(act, "approximate", "none") == "none"


def _unsupported(model: nn.Module) -> list[str]:
    """What this timm model does that fastvit's VisionTransformer cannot (empty: convertible)."""
    pe, found = model.patch_embed, []
    if not isinstance(getattr(pe, "proj", None), nn.Conv2d) or hasattr(pe, "backbone"):
        found.append("a patch embedding other than one Conv2d (hybrid backbone)")
    elif pe.proj.bias is None:
        found.append("a patch embedding without bias (pre_norm, CLIP-style)")
    if not isinstance(getattr(pe, "norm", nn.Identity()), nn.Identity):
        found.append("a norm in the patch embedding")
    if getattr(pe, "dynamic_img_pad", False):
        found.append("dynamic_img_pad")
    if model.pos_embed is None:
        found.append("no position embedding")
    if getattr(model, "reg_token", None) is not None:
        found.append("register tokens")
    if getattr(model, "attn_pool", None) is not None or getattr(model, "global_pool", None) not in GLOBAL_POOLS:
        found.append(f"global_pool={getattr(model, 'global_pool', None)!r} (fastvit pools {', '.join(map(repr, GLOBAL_POOLS))})")
    if getattr(model, "pool_include_prefix", False):
        found.append("pool_include_prefix")
    if not isinstance(getattr(model, "norm_pre", nn.Identity()), nn.Identity):
        found.append("a norm before the blocks (pre_norm)")
    if isinstance(model.norm, nn.Identity) == isinstance(model.fc_norm, nn.Identity):
        found.append("not exactly one final norm (before or after pooling)")
    for i, block in enumerate(model.blocks):
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        if type(block).__name__ != "Block" or type(attn).__name__ != "Attention" or type(mlp).__name__ != "Mlp":
            found.append(f"blocks.{i} is {type(block).__name__}({type(attn).__name__}, {type(mlp).__name__}), "
                         "not the plain Block(Attention, Mlp)")
            break
        extras = [n for n in ("q_norm", "k_norm", "norm") if not isinstance(getattr(attn, n, nn.Identity()), nn.Identity)]
        extras += ["gate"] if getattr(attn, "gate", None) is not None else []
        extras += ["mlp.norm"] if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity) else []
        if extras:
            found.append(f"blocks.{i} has {', '.join(extras)}")
        if not _is_gelu(mlp.act):
            found.append(f"blocks.{i}.mlp.act is {mlp.act!r}, not exact GELU")
        if attn.proj.bias is None or mlp.fc1.bias is None or mlp.fc2.bias is None:
            found.append(f"blocks.{i} has projections without bias")
        if abs(attn.scale - attn.head_dim**-0.5) > 1e-12 or attn.head_dim * attn.num_heads != model.embed_dim:
            found.append(f"blocks.{i}.attn has a head dim or scale other than embed_dim / num_heads")
        if found:
            break
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    if not all(n.elementwise_affine for n in norms) or len({n.eps for n in norms}) > 1:
        found.append("LayerNorms without affine parameters or with different eps")
    if any(isinstance(m, nn.GroupNorm) or "RmsNorm" in type(m).__name__ for m in model.modules()):
        found.append("norm layers other than LayerNorm")
    return found


def from_timm(model: nn.Module, **impl):
    """An equivalent fastvit VisionTransformer of a timm ``VisionTransformer`` (or
    ``VisionTransformerDistilled``): plain pre-norm blocks, GELU MLP, LayerNorm,
    class-token or average pooling. LayerScale and ``no_embed_class`` are absorbed
    exactly. ``impl``: ``attn_impl``, ``norm_impl``, ``linear_impl``. The result has
    the source's device, dtype and train/eval mode.

    Dropout rates are carried over approximately: fastvit has one ``drop_rate`` where
    timm has separate position, projection and head rates (the largest is used).
    """
    what = f"timm {type(model).__name__}"
    if not all(hasattr(model, a) for a in ("patch_embed", "blocks", "pos_embed", "norm", "fc_norm", "head")):
        raise TypeError(f"from_timm takes a timm VisionTransformer, got {type(model).__name__}")
    if getattr(model.patch_embed, "backbone", None) is not None:  # the hybrid (ResNetV2 stem) ViTs
        from .timm_hybrid import from_timm_hybrid

        return from_timm_hybrid(model, **impl)
    problems = _unsupported(model)
    if problems:
        raise config_mismatch(what, "; ".join(problems))
    pe, first, last = model.patch_embed, model.blocks[0], model.blocks[-1]
    patch = tuple(pe.patch_size) if not isinstance(pe.patch_size, int) else (pe.patch_size, pe.patch_size)
    if patch[0] != patch[1] or pe.img_size is None:
        raise config_mismatch(what, f"patch size {patch} / image size {pe.img_size} (fastvit: square patches, a fixed native size)")
    head, ln = model.head, next(m for m in model.modules() if isinstance(m, nn.LayerNorm))
    # One fastvit drop_rate for timm's position, projection and head rates; getattr because
    # older timm releases lack some of these modules.
    drop_rate = max(getattr(getattr(o, n, None), "p", 0.0)
                    for o, n in ((model, "head_drop"), (model, "pos_drop"), (first.attn, "proj_drop"), (first.mlp, "drop1")))
    cfg = ViTConfig(
        img_size=tuple(pe.img_size), patch_size=patch[0], in_chans=pe.proj.in_channels,
        num_classes=head.out_features if isinstance(head, nn.Linear) else 0,
        global_pool=model.global_pool,
        embed_dim=model.embed_dim, depth=len(model.blocks), num_heads=first.attn.num_heads,
        mlp_ratio=first.mlp.fc1.out_features / model.embed_dim,
        qkv_bias=first.attn.qkv.bias is not None,
        class_token=model.cls_token is not None,
        distilled=getattr(model, "dist_token", None) is not None,
        fc_norm=not isinstance(model.fc_norm, nn.Identity),
        norm_eps=ln.eps,
        dynamic_img_size=bool(getattr(model, "dynamic_img_size", False)),
        drop_rate=drop_rate,
        attn_drop_rate=getattr(getattr(first.attn, "attn_drop", None), "p", 0.0),
        drop_path_rate=float(getattr(getattr(last, "drop_path1", None), "drop_prob", 0.0)),
        pos_embed_resample="timm",
        **impl,
    )
    if cfg.mlp_hidden_dim != first.mlp.fc1.out_features:
        raise config_mismatch(what, f"MLP width {first.mlp.fc1.out_features} (not reproduced by an mlp_ratio)")
    sd, _ = convert_timm(model.state_dict())
    leftover = [k for k in sd if re.search(r"\.ls[12]\.gamma$", k)]
    if leftover:
        raise config_mismatch(what, f"LayerScale without a projection to fold into: {shorten(leftover)}")
    result = build_like(cfg, sd, model, what)
    # timm's data helpers read pretrained_cfg: the same dict gives the same preprocessing
    # (a timm model built without create_model has none, and timm falls back to its defaults)
    result.pretrained_cfg = result.default_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    result.distilled_training = bool(getattr(model, "distilled_training", False))
    return result
