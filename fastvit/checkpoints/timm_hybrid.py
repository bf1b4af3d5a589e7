"""timm's hybrid ViT (``vit_*_r26/r50_s16/s32_*``): a ResNetV2 patch embedding, timm's names.

The names are fastvit's (``patch_embed.backbone.*``, ``patch_embed.proj.*``), so
a state-dict file loads through the plain timm layout; this module converts an
in-memory timm model (``fastvit.from_timm`` hands hybrids here, with what its ViT checks
found and the state dict under fastvit's names, so this module imports nothing back from it).
"""

from __future__ import annotations

from torch import nn

from ..config import ViTConfig
from .common import build_like, config_mismatch

# _unsupported's findings that only say "this is a hybrid" (its backbone has GroupNorms)
_HYBRID_FINDINGS = ("hybrid backbone", "norm layers other than LayerNorm")


def _backbone_problems(backbone: nn.Module) -> list[str]:
    found = []
    stem = getattr(backbone, "stem", None)
    if stem is None or not hasattr(stem, "conv") or not hasattr(stem, "norm") or not hasattr(backbone, "stages"):
        return ["a backbone other than timm's non-pre-activation ResNetV2 (stem.conv, stem.norm, stages)"]
    for name, m in backbone.named_modules():
        kind = type(m).__name__
        if isinstance(m, nn.Conv2d):
            if kind != "StdConv2dSame" or abs(getattr(m, "eps", 0) - 1e-8) > 1e-12 or m.bias is not None or m.groups != 1:
                found.append(f"{name} is {kind} (eps {getattr(m, 'eps', None)}), not a bias-free StdConv2dSame with eps 1e-8")
        elif isinstance(m, nn.GroupNorm) and (m.num_groups != 32 or abs(m.eps - 1e-5) > 1e-12 or not m.affine):
            found.append(f"{name} is GroupNorm({m.num_groups} groups, eps {m.eps}), not 32 groups with eps 1e-5")
        elif kind in ("PreActBottleneck", "PreActBasic", "DownsampleAvg"):
            found.append(f"{name} is {kind} (fastvit builds the non-pre-activation Bottleneck)")
        elif kind == "Bottleneck" and m.conv2.dilation != (1, 1):
            found.append(f"{name} is dilated")
        if found:
            break
    if any(p.numel() for p in getattr(backbone, "head", nn.Identity()).parameters()):
        found.append("a backbone with a classifier head")
    if not isinstance(getattr(backbone, "norm", nn.Identity()), nn.Identity):
        found.append("a final backbone norm (pre-activation ResNetV2)")
    return found


def from_timm_hybrid(model: nn.Module, vit_problems: list[str], state_dict: dict, **impl):
    """fastvit's hybrid VisionTransformer equal to a timm hybrid ViT (see ``from_timm``):
    ``vit_problems``, what the plain ViT checks found in ``model``; ``state_dict``, its weights
    under fastvit's names."""
    what = f"timm hybrid {type(model).__name__}"
    pe = model.patch_embed
    backbone = pe.backbone
    problems = [p for p in vit_problems if not any(s in p for s in _HYBRID_FINDINGS)]
    problems += _backbone_problems(backbone)
    outside = [n for n, m in model.named_modules() if isinstance(m, nn.GroupNorm) and not n.startswith("patch_embed.backbone")]
    if outside:
        problems.append(f"GroupNorm outside the backbone ({outside[0]})")
    proj = getattr(pe, "proj", None)
    if not isinstance(proj, nn.Conv2d) or proj.kernel_size != (1, 1) or proj.bias is None:
        problems.append("a hybrid projection other than a 1x1 Conv2d with bias")
    if problems:
        raise config_mismatch(what, "; ".join(problems))
    layers = tuple(len(stage.blocks) for stage in backbone.stages)
    first, last, head = model.blocks[0], model.blocks[-1], model.head
    ln = next(m for m in model.modules() if isinstance(m, nn.LayerNorm))
    drop_rate = max(getattr(getattr(o, n, None), "p", 0.0)
                    for o, n in ((model, "head_drop"), (model, "pos_drop"), (first.attn, "proj_drop"), (first.mlp, "drop1")))
    from ..layers.resnetv2 import backbone_stride

    try:
        cfg = ViTConfig(
            img_size=tuple(pe.img_size), patch_size=backbone_stride(layers), in_chans=backbone.stem.conv.in_channels,
            num_classes=head.out_features if isinstance(head, nn.Linear) else 0, global_pool=model.global_pool,
            embed_dim=model.embed_dim, depth=len(model.blocks), num_heads=first.attn.num_heads,
            mlp_ratio=first.mlp.fc1.out_features / model.embed_dim, qkv_bias=first.attn.qkv.bias is not None,
            class_token=model.cls_token is not None, distilled=getattr(model, "dist_token", None) is not None,
            fc_norm=not isinstance(model.fc_norm, nn.Identity), norm_eps=ln.eps,
            dynamic_img_size=bool(getattr(model, "dynamic_img_size", False)), drop_rate=drop_rate,
            attn_drop_rate=getattr(getattr(first.attn, "attn_drop", None), "p", 0.0),
            drop_path_rate=float(getattr(getattr(last, "drop_path1", None), "drop_prob", 0.0)),
            hybrid_layers=layers, **impl,
        )  # fmt: skip
    except ValueError as e:
        raise config_mismatch(what, str(e)) from e
    if cfg.mlp_hidden_dim != first.mlp.fc1.out_features:
        raise config_mismatch(what, f"MLP width {first.mlp.fc1.out_features} (not reproduced by an mlp_ratio)")
    return build_like(cfg, state_dict, model, what)
