"""timm 1.0.29's hybrid ViTs beyond the paper's: a convolutional stem as the patch embedding.

- ResNetV2 (BiT) stems: ``r26`` / ``r50`` stages, and ``r_s16_p8``: the stem alone (stride 4)
  under an 8x8 patch projection (32 pixels a token);
- ResNet-D stems (``resnet26d`` / ``resnet50d``: deep 3x3 stem, average-pool shortcuts,
  BatchNorm), all four stages or three (``_s16``);
- MobileCLIP's MCI stem (``vit_base_mci_224``): three strided convolutions, GELU, no projection.

``patch_size`` is always the pixels per token. :mod:`fastvit.presets` merges these rows.
"""

from __future__ import annotations

from .presets_modern import _IMAGENET, _INCEPTION, _arch, _cfg

_ZERO_ONE = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
_RESNETD = {"resnet26d": (2, 2, 2, 2), "resnet50d": (3, 4, 6, 3)}


def _resnetv2():
    augreg = "augreg_in21k_ft_in1k"
    for img in (224, 384):
        yield (f"vit_tiny_r_s16_p8_{img}", _arch(32, 192, 12, 3, img=img, hybrid_layers=()),
               _cfg(augreg, 0.9 if img == 224 else 1.0, _INCEPTION))
    yield "vit_small_r26_s32_384", _arch(32, 384, 12, 6, img=384, hybrid_layers=(2, 2, 2, 2)), _cfg(augreg, 1.0, _INCEPTION)
    yield "vit_base_r26_s32_224", _arch(32, 768, 12, 12, hybrid_layers=(2, 2, 2, 2)), _cfg("untrained", 0.9, _INCEPTION)
    yield "vit_large_r50_s32_224", _arch(32, 1024, 24, 16, hybrid_layers=(3, 4, 6, 3)), _cfg(augreg, 0.9, _INCEPTION)


def _resnetd():
    # name: stem, stages kept, embed_dim, depth, heads, mlp_ratio (timm's "custom" hybrids, no weights)
    rows = {"vit_small_resnet26d_224": ("resnet26d", 4, 768, 8, 8, 3.0),
            "vit_small_resnet50d_s16_224": ("resnet50d", 3, 768, 8, 8, 3.0),
            "vit_base_resnet26d_224": ("resnet26d", 4, 768, 12, 12, 4.0),
            "vit_base_resnet50d_224": ("resnet50d", 4, 768, 12, 12, 4.0)}
    for name, (net, stages, dim, depth, heads, mlp_ratio) in rows.items():
        layers = _RESNETD[net][:stages]
        yield (name, _arch(4 * 2 ** (stages - 1), dim, depth, heads, mlp_ratio, hybrid_stem="resnetd", hybrid_layers=layers),
               _cfg("untrained", 0.9, _IMAGENET))


def _mci():
    yield ("vit_base_mci_224", _arch(16, 768, 12, 12, hybrid_stem="mci", hybrid_layers=(), no_embed_class=True, num_classes=512),
           _cfg("apple_mclip_lt", 0.9, _ZERO_ONE, "apple-amlr"))


_ROWS = [*_resnetv2(), *_resnetd(), *_mci()]
PRESETS: dict[str, dict] = {name: arch for name, arch, _ in _ROWS}
PRETRAINED_CFG: dict[str, dict] = {name: cfg for name, _, cfg in _ROWS}
