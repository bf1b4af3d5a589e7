"""Patch embedding and position-embedding resampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C*p*p), patches in row-major order, each flattened as (C, p, p)."""
    b, c, h, w = x.shape
    p = patch_size
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


class PatchEmbed(nn.Module):
    """Conv2d with kernel = stride = patch size, then flatten to tokens (B, N, D).

    ``forward_linear`` computes the same thing as a GEMM over flattened patches
    (the form a fused path may prefer); a test holds the two equal.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)

    def forward_linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(patchify(x, self.patch_size), self.proj.weight.flatten(1), self.proj.bias)


INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")


def check_interpolation(interpolation, antialias) -> None:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if not isinstance(antialias, bool):
        raise TypeError(f"antialias must be True or False, got {antialias!r}")
    if antialias and interpolation not in ("bilinear", "bicubic"):
        raise ValueError(f"antialias=True works with interpolation 'bilinear' or 'bicubic', not {interpolation!r}")


def _grid(name: str, size) -> tuple[int, int]:
    """A patch grid (rows, cols) of positive ints."""
    try:
        size = tuple(size)
    except TypeError:
        raise TypeError(f"{name} must be a (rows, cols) pair of positive ints, got {size!r}") from None
    if len(size) != 2 or not all(isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) for v in size):
        raise TypeError(f"{name} must be a (rows, cols) pair of positive ints, got {size!r}")
    if min(size) <= 0:
        raise ValueError(f"{name} must be a grid of at least 1x1 patches, got {size!r}")
    return size


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_size: tuple[int, int],
    old_size: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = False,
) -> torch.Tensor:
    """Resample a (1, prefix + gh*gw, D) position embedding to a new patch grid.

    The prefix (class / distillation) tokens are kept as they are; the grid part
    is reshaped to 2-D and interpolated in fp32. ``old_size`` defaults to a
    square grid. ``antialias=False`` matches Hugging Face's
    ``interpolate_pos_encoding``; timm's loader uses ``antialias=True``.
    """
    if not isinstance(pos_embed, torch.Tensor) or not pos_embed.is_floating_point():
        raise TypeError(f"pos_embed must be a floating-point tensor, got {getattr(pos_embed, 'dtype', type(pos_embed).__name__)}")
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, tokens, dim), got {tuple(pos_embed.shape)}")
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or not 0 <= num_prefix_tokens < pos_embed.shape[1]:
        raise ValueError(f"num_prefix_tokens must be an int in [0, {pos_embed.shape[1]}) for a pos_embed of "
                         f"{pos_embed.shape[1]} tokens, got {num_prefix_tokens!r}")
    check_interpolation(interpolation, antialias)
    new_size = _grid("new_size", new_size)
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(round(num_grid**0.5))
        if side * side != num_grid:
            raise ValueError(f"cannot infer a square grid from {num_grid} grid tokens; pass old_size")
        old_size = (side, side)
    old_size = _grid("old_size", old_size)
    if old_size[0] * old_size[1] != num_grid:
        raise ValueError(f"old_size {old_size} holds {old_size[0] * old_size[1]} tokens, pos_embed has {num_grid}")
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_size, mode=interpolation, align_corners=False, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
