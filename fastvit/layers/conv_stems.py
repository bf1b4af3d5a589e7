"""Convolutional stems as a ViT's patch embedding (timm's ``HybridEmbed``), timm's parameter names.

- ``resnetv2``: the BiT ResNetV2 of :mod:`fastvit.layers.resnetv2` (``hybrid_layers`` its stages;
  ``()`` the stem alone, stride 4);
- ``resnetd``: ResNet-D (Bag of Tricks): a deep stem of three 3x3 convolutions (32, 32, 64
  channels, the first strided), BatchNorm + ReLU, a 3x3/2 max pool, then bottleneck stages whose
  strided shortcuts average-pool before their 1x1 convolution (timm's ``resnet26d`` / ``resnet50d``
  truncated to ``hybrid_layers``' stages, as its ``features_only`` wrapper keeps them);
- ``mci``: MobileCLIP's stem: 4x4/4 and 2x2/2 convolutions with BatchNorm + GELU, then a 2x2/2
  convolution (with bias) straight to the embedding width, no projection after it.

:class:`StemEmbed` runs the stem, then (except ``mci``) a convolution with kernel = stride =
``patch_size / stem stride`` to the embedding width, and flattens the map to tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embed import TokenGrid
from .resnetv2 import ResNetV2, Stem, backbone_stride, backbone_width, check_layers, resnetv2_num_params

RESNETD_WIDTHS = (256, 512, 1024, 2048)  # bottleneck outputs per stage (4x the inner width)
RESNETD_STEM = (32, 32, 64)
MCI_CHANNELS, MCI_KERNELS = (192, 192), (4, 2, 2)  # MobileCLIP at embed_dim 768: 768 // 4 inner channels


class ResNetDBottleneck(nn.Module):
    """relu(shortcut + BN(conv3(relu(BN(conv2(relu(BN(conv1(x))))))))), conv2 carrying the stride."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1):
        super().__init__()
        mid = out_chans // 4
        self.conv1 = nn.Conv2d(in_chans, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_chans, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chans)
        self.downsample = None
        if stride != 1 or in_chans != out_chans:  # ResNet-D: average-pool, then a 1x1 convolution
            pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride != 1 else nn.Identity()
            self.downsample = nn.Sequential(pool, nn.Conv2d(in_chans, out_chans, 1, bias=False), nn.BatchNorm2d(out_chans))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.relu(self.bn3(self.conv3(x)) + shortcut)


class ResNetD(nn.Module):
    """Deep stem + ``len(layers)`` bottleneck stages (``layer1``...); returns the last stage's map."""

    def __init__(self, layers, in_chans: int = 3):
        super().__init__()
        a, b, c = RESNETD_STEM
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, a, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(a), nn.ReLU(),
            nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(),
            nn.Conv2d(b, c, 3, padding=1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(c)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        prev = c
        for i, depth in enumerate(layers):
            out = RESNETD_WIDTHS[i]
            stage = nn.Sequential(*(ResNetDBottleneck(prev if j == 0 else out, out, 2 if i and j == 0 else 1) for j in range(depth)))
            self.add_module(f"layer{i + 1}", stage)
            prev = out
        self.num_stages = len(layers)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x


class _ConvNormAct(nn.Module):
    """timm's ConvNormAct naming (``conv``, ``bn``): conv -> BatchNorm -> GELU, or a bare conv with bias."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int, last: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel, stride=kernel, bias=last)
        self.bn = nn.Identity() if last else nn.BatchNorm2d(out_chans)
        self.act = nn.Identity() if last else nn.GELU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class MciStem(nn.Sequential):
    """MobileCLIP's convolutional stem (stride 16) ending at the embedding width."""

    def __init__(self, in_chans: int, embed_dim: int):
        chans = (in_chans, *MCI_CHANNELS, embed_dim)
        super().__init__(*(_ConvNormAct(chans[i], chans[i + 1], k, i == len(MCI_KERNELS) - 1) for i, k in enumerate(MCI_KERNELS)))


def _stem_stride(stem: str, layers) -> int:
    if stem == "mci":
        return 16
    return backbone_stride(layers)  # ResNetV2 and ResNet-D: 4 after the stem, x2 per later stage


def _stem_width(stem: str, layers, embed_dim: int) -> int:
    if stem == "resnetd":
        return RESNETD_WIDTHS[len(layers) - 1]
    return embed_dim if stem == "mci" else backbone_width(layers)


def check_stem(stem: str, layers, patch_size: int, embed_dim: int) -> tuple[int, ...]:
    """``layers`` as a tuple after checking it fits ``stem`` and ``patch_size`` (ValueError naming the field)."""
    layers = check_layers(layers)
    if stem == "resnetd" and not layers:
        raise ValueError("hybrid_stem='resnetd' needs 1 to 4 stages in hybrid_layers, got ()")
    if stem == "mci" and (layers or embed_dim % 4):
        raise ValueError(f"hybrid_stem='mci' has no ResNet stages (hybrid_layers=()) and a width divisible by 4; "
                         f"got hybrid_layers={layers!r}, embed_dim={embed_dim}")
    stride = _stem_stride(stem, layers)
    if patch_size % stride or (stem == "mci" and patch_size != stride):
        raise ValueError(f"patch_size ({patch_size}) must be a multiple of the {stem} stem's stride {stride}"
                         + (" (equal to it: mci has no projection)" if stem == "mci" else ""))
    return layers


def _resnetd_num_params(layers, in_chans: int) -> int:
    a, b, c = RESNETD_STEM
    n = in_chans * a * 9 + 2 * a + a * b * 9 + 2 * b + b * c * 9 + 2 * c
    prev = c
    for depth, out in zip(layers, RESNETD_WIDTHS):
        mid = out // 4
        for j in range(depth):
            cin = prev if j == 0 else out
            n += cin * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * out + 2 * out
            n += cin * out + 2 * out if j == 0 else 0
        prev = out
    return n


def stem_num_params(stem: str, layers, in_chans: int, patch_size: int, embed_dim: int, bias: int) -> int:
    """Parameters of :class:`StemEmbed` (``bias``: the projection's bias count, 0 or ``embed_dim``)."""
    if stem == "mci":
        chans = (in_chans, *MCI_CHANNELS, embed_dim)
        return sum(chans[i] * chans[i + 1] * k * k + (chans[i + 1] if i == 2 else 2 * chans[i + 1])
                   for i, k in enumerate(MCI_KERNELS))
    n = resnetv2_num_params(layers, in_chans) if stem == "resnetv2" else _resnetd_num_params(layers, in_chans)
    k = patch_size // _stem_stride(stem, layers)
    return n + _stem_width(stem, layers, embed_dim) * k * k * embed_dim + bias


def build_stem(stem: str, layers, in_chans: int, embed_dim: int) -> nn.Module:
    if stem == "mci":
        return MciStem(in_chans, embed_dim)
    if stem == "resnetd":
        return ResNetD(layers, in_chans)
    return ResNetV2(layers, in_chans) if layers else Stem(in_chans)  # timm's stem-only backbone: conv, norm


class StemEmbed(TokenGrid, nn.Module):
    """A stem's feature map -> projection (kernel = stride = patch_size / the stem's stride) -> tokens (B, N, D)."""

    def __init__(self, stem: str, layers, in_chans: int, embed_dim: int, patch_size: int, img_size=None,
                 dynamic_img_size: bool = False, bias: bool = True):
        super().__init__()
        layers = check_stem(stem, layers, patch_size, embed_dim)
        self.backbone = build_stem(stem, layers, in_chans, embed_dim)
        self.stride = patch_size
        self.patch_size = (patch_size, patch_size)  # pixels per token, as PatchEmbed.patch_size
        self.dynamic_img_size = dynamic_img_size
        self.set_input_size(img_size)
        k = patch_size // _stem_stride(stem, layers)
        if stem == "mci":
            self.proj = nn.Identity()
        else:
            self.proj = nn.Conv2d(_stem_width(stem, layers, embed_dim), embed_dim, kernel_size=k, stride=k, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(x)).flatten(2).transpose(1, 2)
