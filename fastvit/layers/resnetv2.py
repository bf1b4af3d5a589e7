"""The ViT paper's hybrid stem (§3.1): a ResNet-V2 feature map as the patch embedding.

The backbone is the BiT-style ResNet the paper uses, in timm's layout and
parameter names (``patch_embed.backbone.stem.conv``, ``...stages.S.blocks.B.conv1``,
``patch_embed.proj``), so timm's hybrid checkpoints load as they are:

- every convolution is weight-standardised (each output filter shifted to mean 0
  and scaled to variance 1, eps 1e-8, before the convolution) and pads the way
  TensorFlow's "SAME" does (pad total ``max((ceil(n/s)-1)*s + k - n, 0)``, the
  extra pixel at the bottom/right), as the original JAX models were trained;
- GroupNorm (32 groups, eps 1e-5) after each convolution, ReLU where the block has one;
- stem: 7x7/2 convolution, GroupNorm + ReLU, 3x3/2 max pool (SAME, padded with -inf);
- stages of non-pre-activation bottlenecks (1x1, 3x3 with the stage's stride,
  1x1 to 4x the width; first block of a stage projects the shortcut with a 1x1
  convolution + GroupNorm), widths 256, 512, 1024, 2048; the first stage keeps the
  stem's stride 4, each later one halves the resolution.

``HybridEmbed`` runs the backbone, then a 1x1 convolution to the embedding width,
and flattens the map to tokens. Its total stride (16 for three stages, 32 for
four) is the model's ``patch_size``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .embed import TokenGrid

STAGE_WIDTHS = (256, 512, 1024, 2048)
STEM_WIDTH = 64
GROUPS = 32


@torch.fx.wrap
def same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad (B, C, H, W) as TensorFlow's SAME padding does for this kernel and stride."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad order: W then H
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation and SAME padding, no bias."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, eps: float = 1e-8):
        super().__init__(in_chans, out_chans, kernel_size, stride=stride, padding=0, bias=False)
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        flat = w.reshape(w.shape[0], -1)
        var, mean = torch.var_mean(flat, dim=1, unbiased=False, keepdim=True)
        return ((flat - mean) * torch.rsqrt(var + self.eps)).reshape_as(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = same_pad(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.standardized_weight(), None, self.stride)


class GroupNormAct(nn.GroupNorm):
    """GroupNorm(32 groups), optionally followed by ReLU."""

    def __init__(self, channels: int, act: bool = True, eps: float = 1e-5):
        super().__init__(GROUPS, channels, eps=eps)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.relu(x) if self.act else x


class Downsample(nn.Module):
    """Shortcut projection: 1x1 StdConv with the block's stride, GroupNorm without activation."""

    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        self.conv = StdConv2d(in_chans, out_chans, 1, stride=stride)
        self.norm = GroupNormAct(out_chans, act=False)

    def forward(self, x):
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """relu(shortcut + GN(conv3(relu(GN(conv2(relu(GN(conv1(x))))))))), conv2 carrying the stride."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1):
        super().__init__()
        mid = out_chans // 4
        needs_proj = stride != 1 or in_chans != out_chans
        self.downsample = Downsample(in_chans, out_chans, stride) if needs_proj else None
        self.conv1 = StdConv2d(in_chans, mid, 1)
        self.norm1 = GroupNormAct(mid)
        self.conv2 = StdConv2d(mid, mid, 3, stride=stride)
        self.norm2 = GroupNormAct(mid)
        self.conv3 = StdConv2d(mid, out_chans, 1)
        self.norm3 = GroupNormAct(out_chans, act=False)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm1(self.conv1(x))
        x = self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        return F.relu(x + shortcut)


class Stage(nn.Module):
    def __init__(self, in_chans: int, out_chans: int, depth: int, stride: int):
        super().__init__()
        self.blocks = nn.Sequential(*(Bottleneck(in_chans if i == 0 else out_chans, out_chans, stride if i == 0 else 1) for i in range(depth)))

    def forward(self, x):
        return self.blocks(x)


class Stem(nn.Module):
    def __init__(self, in_chans: int):
        super().__init__()
        self.conv = StdConv2d(in_chans, STEM_WIDTH, 7, stride=2)
        self.norm = GroupNormAct(STEM_WIDTH)

    def forward(self, x):
        x = self.norm(self.conv(x))
        return F.max_pool2d(same_pad(x, 3, 2, value=float("-inf")), 3, 2)


def check_layers(layers) -> tuple[int, ...]:
    """``layers`` (blocks per ResNet stage) as a tuple; TypeError / ValueError naming what was expected."""
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"hybrid_layers must be None or a tuple of positive ints (blocks per stage), got {layers!r}")
    layers = tuple(layers)
    if len(layers) > len(STAGE_WIDTHS) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in layers):
        raise ValueError(f"hybrid_layers must be up to {len(STAGE_WIDTHS)} positive ints (blocks per ResNet stage; "
                         f"() the stem alone), got {layers!r}")
    return layers


def backbone_stride(layers) -> int:
    """Total stride of the backbone: 4 after the stem, x2 per stage after the first."""
    return 4 * 2 ** max(len(check_layers(layers)) - 1, 0)


def backbone_width(layers) -> int:
    layers = check_layers(layers)
    return STAGE_WIDTHS[len(layers) - 1] if layers else STEM_WIDTH


class ResNetV2(nn.Module):
    """Stem + stages; returns the last stage's (B, width, H/stride, W/stride) map."""

    def __init__(self, layers, in_chans: int = 3):
        super().__init__()
        layers = check_layers(layers)
        self.layers = layers
        self.stem = Stem(in_chans)
        chans = [STEM_WIDTH, *STAGE_WIDTHS[: len(layers)]]
        self.stages = nn.Sequential(*(Stage(chans[i], chans[i + 1], d, 1 if i == 0 else 2) for i, d in enumerate(layers)))
        self.grad_checkpointing = False

    def forward(self, x):
        return self.stages(self.stem(x))


def resnetv2_num_params(layers, in_chans: int = 3) -> int:
    """Closed-form parameter count of :class:`ResNetV2` (GroupNorm weight + bias per norm)."""
    layers = check_layers(layers)
    n = in_chans * STEM_WIDTH * 49 + 2 * STEM_WIDTH
    prev = STEM_WIDTH
    for depth, out in zip(layers, STAGE_WIDTHS):
        mid = out // 4
        for i in range(depth):
            cin = prev if i == 0 else out
            n += cin * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * out + 2 * out
            if i == 0:
                n += cin * out + 2 * out
        prev = out
    return n


def resnetv2_macs(layers, in_chans: int, img_size: tuple[int, int]) -> int:
    """Multiply-accumulates of :class:`ResNetV2`'s convolutions for one ``img_size`` image
    (SAME padding: a stride-s layer gives ceil(n / s) outputs); norms, ReLU and pooling left out."""
    layers = check_layers(layers)
    h, w = (math.ceil(n / 2) for n in img_size)  # stem 7x7/2
    macs = h * w * STEM_WIDTH * in_chans * 49
    h, w = math.ceil(h / 2), math.ceil(w / 2)  # 3x3/2 max pool
    prev = STEM_WIDTH
    for s, (depth, out) in enumerate(zip(layers, STAGE_WIDTHS)):
        mid = out // 4
        for i in range(depth):
            stride = 2 if s and i == 0 else 1
            cin = prev if i == 0 else out
            ho, wo = math.ceil(h / stride), math.ceil(w / stride)
            macs += h * w * mid * cin  # conv1, 1x1 at the input resolution
            macs += ho * wo * mid * mid * 9  # conv2, 3x3 carrying the stride
            macs += ho * wo * out * mid  # conv3
            if i == 0:  # shortcut projection
                macs += ho * wo * out * cin
            h, w = ho, wo
        prev = out
    return macs


class HybridEmbed(TokenGrid, nn.Module):
    """ResNetV2 feature map -> 1x1 convolution -> tokens (B, N, embed_dim); N = (H/stride) * (W/stride)."""

    def __init__(self, layers, in_chans: int, embed_dim: int, img_size=None, dynamic_img_size: bool = False,
                 bias: bool = True):
        super().__init__()
        self.backbone = ResNetV2(layers, in_chans)
        self.stride = backbone_stride(layers)
        self.patch_size = (self.stride, self.stride)  # pixels per token, as PatchEmbed.patch_size
        self.dynamic_img_size = dynamic_img_size
        self.set_input_size(img_size)
        self.proj = nn.Conv2d(backbone_width(layers), embed_dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(x)).flatten(2).transpose(1, 2)
