"""timm's hybrid ViT (``vit_*_r26/r50_s16/s32_*``): a ResNetV2 patch embedding, timm's names.

The names are fastvit's (``patch_embed.backbone.*``, ``patch_embed.proj.*``), so
a state-dict file loads through the plain timm layout; this module converts an
in-memory timm model (``fastvit.from_timm`` hands hybrids here).
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


def _stem_kind(backbone: nn.Module) -> tuple[str, tuple[int, ...], list[str]]:
    """(hybrid_stem, hybrid_layers, problems) of a timm hybrid's backbone."""
    kind = type(backbone).__name__
    if kind == "ConvStem":  # MobileCLIP's MCI stem
        from ..layers.conv_stems import MCI_CHANNELS, MCI_KERNELS

        convs = [getattr(m, "conv", None) for m in backbone]
        shape = [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) if isinstance(c, nn.Conv2d) else None for c in convs]
        want = [(ch, k, k, 0) for ch, k in zip((*MCI_CHANNELS, shape[-1][0] if shape and shape[-1] else 0), MCI_KERNELS)]
        acts = {type(getattr(getattr(m, "bn", None), "act", None)).__name__ for m in list(backbone)[:-1]}
        ok = shape == want and acts == {"GELU"} and getattr(backbone[-1].bn, "weight", None) is None
        return "mci", (), [] if ok else ["a ConvStem other than MobileCLIP's (4x4/4, 2x2/2 with BatchNorm + GELU, 2x2/2 conv)"]
    if hasattr(backbone, "conv1") and hasattr(backbone, "layer1"):  # a ResNet (timm's features_only wrapper)
        return "resnetd", *_resnetd_layers(backbone)
    if not hasattr(backbone, "stages") and hasattr(backbone, "conv") and hasattr(backbone, "norm"):  # ResNetV2 stem alone
        found = [] if type(backbone.conv).__name__ == "StdConv2dSame" and type(getattr(backbone, "pool", None)).__name__ == "MaxPool2dSame" \
            else ["a stem-only backbone other than ResNetV2's SAME-padded stem"]
        return "resnetv2", (), found
    return "resnetv2", tuple(len(stage.blocks) for stage in getattr(backbone, "stages", ())), _backbone_problems(backbone)


def _resnetd_layers(backbone: nn.Module) -> tuple[tuple[int, ...], list[str]]:
    from ..layers.conv_stems import RESNETD_STEM

    layers = tuple(len(getattr(backbone, f"layer{i}")) for i in range(1, 5) if hasattr(backbone, f"layer{i}"))
    stem = getattr(backbone, "conv1", None)
    convs = [m for m in stem if isinstance(m, nn.Conv2d)] if isinstance(stem, nn.Sequential) else []
    found = []
    if tuple(c.out_channels for c in convs) != RESNETD_STEM or len(stem) != 7:
        found.append("a ResNet stem other than ResNet-D's three 3x3 convolutions (32, 32, 64)")
    for i in range(1, len(layers) + 1):
        for j, block in enumerate(getattr(backbone, f"layer{i}")):
            extras = [n for n in ("se", "aa", "drop_block", "drop_path") if not _is_plain(getattr(block, n, None))]
            if type(block).__name__ != "Bottleneck" or extras or getattr(block.conv2, "groups", 1) != 1:
                found.append(f"layer{i}.{j} is {type(block).__name__} with {extras or 'groups'} (fastvit: ResNet-D's bottleneck)")
            ds = getattr(block, "downsample", None)
            if j == 0 and (ds is None or (i > 1 and type(ds[0]).__name__ != "AvgPool2d")):
                found.append(f"layer{i}.{j}'s shortcut is not ResNet-D's average-pool + 1x1 convolution")
            if found:
                return layers, found
    return layers, found


def _is_plain(m) -> bool:
    return m is None or isinstance(m, nn.Identity)


def from_timm_hybrid(model: nn.Module, vit_problems: list[str], state_dict: dict, **impl):
    """fastvit's hybrid VisionTransformer equal to a timm hybrid ViT (see ``from_timm``):
    ``vit_problems``, what the plain ViT checks found in ``model``; ``state_dict``, its weights
    under fastvit's names (the hybrid module needs no import back)."""
    what = f"timm hybrid {type(model).__name__}"
    pe = model.patch_embed
    backbone = pe.backbone
    problems = [p for p in vit_problems if not any(s in p for s in _HYBRID_FINDINGS)]
    stem, layers, found = _stem_kind(backbone)
    problems += found
    outside = [n for n, m in model.named_modules() if isinstance(m, nn.GroupNorm) and not n.startswith("patch_embed.backbone")]
    if outside:
        problems.append(f"GroupNorm outside the backbone ({outside[0]})")
    proj = getattr(pe, "proj", None)
    if stem == "mci":
        if not isinstance(proj, nn.Identity):
            problems.append("an MCI stem with a projection after it")
    elif not isinstance(proj, nn.Conv2d) or proj.kernel_size != proj.stride or proj.bias is None:
        problems.append("a hybrid projection other than a Conv2d with kernel = stride and a bias")
    if problems:
        raise config_mismatch(what, "; ".join(problems))
    first, last, head = model.blocks[0], model.blocks[-1], model.head
    ln = next(m for m in model.modules() if isinstance(m, nn.LayerNorm))
    drop_rate = max(getattr(getattr(o, n, None), "p", 0.0)
                    for o, n in ((model, "head_drop"), (model, "pos_drop"), (first.attn, "proj_drop"), (first.mlp, "drop1")))
    try:
        cfg = ViTConfig(
            img_size=tuple(pe.img_size), patch_size=pe.feat_ratio(), in_chans=pe.in_chans,
            num_classes=head.out_features if isinstance(head, nn.Linear) else 0, global_pool=model.global_pool,
            embed_dim=model.embed_dim, depth=len(model.blocks), num_heads=first.attn.num_heads,
            mlp_ratio=first.mlp.fc1.out_features / model.embed_dim, qkv_bias=first.attn.qkv.bias is not None,
            class_token=model.cls_token is not None, distilled=getattr(model, "dist_token", None) is not None,
            fc_norm=not isinstance(model.fc_norm, nn.Identity), norm_eps=ln.eps,
            dynamic_img_size=bool(getattr(model, "dynamic_img_size", False)), drop_rate=drop_rate,
            attn_drop_rate=getattr(getattr(first.attn, "attn_drop", None), "p", 0.0),
            drop_path_rate=float(getattr(getattr(last, "drop_path1", None), "drop_prob", 0.0)),
            hybrid_layers=layers, hybrid_stem=stem, no_embed_class=bool(getattr(model, "no_embed_class", False)), **impl,
        )  # fmt: skip
    except ValueError as e:
        raise config_mismatch(what, str(e)) from e
    if cfg.mlp_hidden_dim != first.mlp.fc1.out_features:
        raise config_mismatch(what, f"MLP width {first.mlp.fc1.out_features} (not reproduced by an mlp_ratio)")
    return build_like(cfg, state_dict, model, what)
