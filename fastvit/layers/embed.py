"""Patch embedding and position-embedding resampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .resample import MATRIX_MODES, resize_2d


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C*p*p), patches in row-major order, each flattened as (C, p, p)."""
    b, c, h, w = x.shape
    p = patch_size
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


class TokenGrid:
    """timm's patch-embedding attributes for an embedding whose tokens are ``patch_size``
    pixels apart: ``img_size``, ``grid_size``, ``num_patches`` and the feature-size helpers.
    Shared by :class:`PatchEmbed` and the hybrid (ResNet stem) embedding."""

    patch_size: tuple[int, int]

    def set_input_size(self, img_size=None):
        """Record a new native image size (the weights do not depend on it)."""
        if img_size is None:
            self.img_size = self.grid_size = self.num_patches = None
            return
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.img_size = (h, w)
        self.grid_size = (h // self.patch_size[0], w // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def feat_ratio(self, as_scalar: bool = True):
        return self.patch_size[0] if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        """The token grid of an (H, W) image."""
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]


class PatchEmbed(TokenGrid, nn.Module):
    """Conv2d with kernel = stride = patch size, then flatten to tokens (B, N, D).

    Carries timm's ``PatchEmbed`` attributes: ``patch_size`` and ``img_size`` as
    (h, w) tuples, ``grid_size``, ``num_patches``, ``dynamic_img_size`` (``img_size``
    is the native size; ``dynamic_img_size`` lets other sizes through).
    ``bias=False`` drops the projection's bias (CLIP, with its pre-norm);
    ``dynamic_img_pad`` zero-pads the image at the right and bottom to a multiple of
    the patch size, as timm, so an H x W image gives ceil(H/p) x ceil(W/p) tokens.
    ``forward_linear`` computes the same thing as a GEMM over flattened patches
    (the form a fused path may prefer); a test holds the two equal.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, img_size=None, dynamic_img_size: bool = False,
                 bias: bool = True, dynamic_img_pad: bool = False):
        super().__init__()
        p = int(patch_size)
        self.patch_size = (p, p)
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.dynamic_img_size = dynamic_img_size
        self.strict_img_size = not dynamic_img_size and img_size is not None
        self.flatten, self.output_fmt, self.dynamic_img_pad = True, "NCHW", bool(dynamic_img_pad)
        self.set_input_size(img_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=p, stride=p, bias=bias)
        self.norm = nn.Identity()

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        """The token grid of an (H, W) image (rounded up with ``dynamic_img_pad``)."""
        if self.dynamic_img_pad:
            return math.ceil(img_size[0] / self.patch_size[0]), math.ceil(img_size[1] / self.patch_size[1])
        return super().dynamic_feat_size(img_size)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """With ``dynamic_img_pad``: zeros at the right and bottom up to a multiple of the patch size."""
        if not self.dynamic_img_pad:
            return x
        ph, pw = self.patch_size
        pad_h, pad_w = -x.shape[-2] % ph, -x.shape[-1] % pw
        return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pad(x)).flatten(2).transpose(1, 2)

    def forward_linear(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad(x)
        p = self.patch_size[0]
        x = x[..., : x.shape[-2] // p * p, : x.shape[-1] // p * p]  # the pixels the convolution leaves out
        return F.linear(patchify(x, p), self.proj.weight.flatten(1), self.proj.bias)


# How each source resamples a position embedding to another grid: F.interpolate's
# mode, antialias and align_corners. "timm": resample_abs_pos_embed (its checkpoint
# loads, dynamic_img_size, set_input_size); "hf": transformers' interpolate_pos_encoding;
# "big_vision": timm's .npz loader (load_pretrained); "torchvision": its interpolate_embeddings.
RESAMPLE_CONVENTIONS: dict[str, dict] = {
    "timm": dict(interpolation="bicubic", antialias=True, align_corners=False),
    "hf": dict(interpolation="bicubic", antialias=False, align_corners=False),
    "big_vision": dict(interpolation="bilinear", antialias=False, align_corners=False),
    "torchvision": dict(interpolation="bicubic", antialias=False, align_corners=True),
}


def resample_options(convention: str) -> dict:
    """``interpolation``/``antialias``/``align_corners`` of a named convention (``RESAMPLE_CONVENTIONS``)."""
    if convention not in RESAMPLE_CONVENTIONS:
        raise ValueError(f"unknown position-embedding resampling convention {convention!r}; "
                         f"valid: {sorted(RESAMPLE_CONVENTIONS)}")
    return dict(RESAMPLE_CONVENTIONS[convention])


INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")


def check_interpolation(interpolation, antialias) -> None:
    """Checks resampling options; None (in ``load_checkpoint``) means the checkpoint source's convention."""
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS} (or None), got {interpolation!r}")
    if antialias is not None and not isinstance(antialias, bool):
        raise TypeError(f"antialias must be True or False (or None), got {antialias!r}")
    if antialias and interpolation is not None and interpolation not in ("bilinear", "bicubic"):
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
    antialias: bool = True,
    align_corners: bool = False,
) -> torch.Tensor:
    """Resample a (1, prefix + gh*gw, D) position embedding to a new patch grid.

    The prefix (class / distillation) tokens are kept as they are; the grid part
    is reshaped to 2-D and interpolated in fp32. ``old_size`` defaults to a
    square grid. The defaults are timm's (``resample_abs_pos_embed``: bicubic,
    ``antialias=True``); Hugging Face's ``interpolate_pos_encoding`` is
    ``antialias=False``; ``resample_options(convention)`` gives each source's.
    """
    if not isinstance(pos_embed, torch.Tensor) or not pos_embed.is_floating_point():
        raise TypeError(f"pos_embed must be a floating-point tensor, got {getattr(pos_embed, 'dtype', type(pos_embed).__name__)}")
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, tokens, dim), got {tuple(pos_embed.shape)}")
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or not 0 <= num_prefix_tokens < pos_embed.shape[1]:
        raise ValueError(f"num_prefix_tokens must be an int in [0, {pos_embed.shape[1]}) for a pos_embed of "
                         f"{pos_embed.shape[1]} tokens, got {num_prefix_tokens!r}")
    if interpolation is None or antialias is None:
        raise TypeError("resample_pos_embed needs an interpolation mode and antialias True/False, not None")
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
    if old_size == new_size:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2).float()
    if interpolation in MATRIX_MODES:  # as matmuls: compiles and trains with symbolic sizes (see .resample)
        grid = resize_2d(grid, new_size, interpolation, antialias, align_corners)
    else:
        grid = F.interpolate(grid, size=new_size, mode=interpolation, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
