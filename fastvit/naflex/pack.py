"""Packed batches of images of different sizes: :func:`pack` -> :class:`Packed`.

The patches of all images lie back to back, image ``s`` being rows ``cu_seqlens[s]:cu_seqlens[s + 1]``,
each patch flattened as timm's NaFlex pipeline does, (patch row, patch column, channel) with the
channel varying fastest, in row-major order over the image's patch grid. There is no padding.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Packed:
    """A packed batch. ``patches`` (T, P*P*C); ``coords`` (T, 2) int64, each patch's (row, column) in its
    image's grid; ``cu_seqlens`` (S + 1,) int32 offsets of the S images; ``grid_sizes`` each image's
    (rows, columns); ``max_seqlen`` the longest image's patch count; ``patch_size`` P (None if unknown)."""

    patches: torch.Tensor
    coords: torch.Tensor
    cu_seqlens: torch.Tensor
    grid_sizes: tuple[tuple[int, int], ...]
    max_seqlen: int
    patch_size: int | None = None
    lengths: tuple[int, ...] | None = None  # each image's patch count (None: read off cu_seqlens)

    @property
    def num_images(self) -> int:
        return len(self.grid_sizes)

    @property
    def seqlens(self) -> list[int]:
        """Each image's patch count."""
        return list(self.lengths) if self.lengths is not None else torch.diff(self.cu_seqlens).tolist()

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Packed":
        """Moved to ``device`` (offsets and coordinates too); ``dtype`` casts the patches only."""
        return replace(self, patches=self.patches.to(device=device, dtype=dtype), coords=self.coords.to(device),
                       cu_seqlens=self.cu_seqlens.to(device))

    def __len__(self) -> int:
        return self.num_images


def size_for_max_patches(height: int, width: int, patch_size: int, max_patches: int, eps: float = 1e-5) -> tuple[int, int]:
    """SigLIP 2's target size: the largest scale of (height, width), each side rounded up to whole
    patches (at least one), whose patch count fits ``max_patches`` (a bisection over the scale);
    the aspect ratio is kept up to that rounding."""

    def scaled(scale: float, size: int) -> int:
        return max(patch_size, math.ceil(size * scale / patch_size) * patch_size)

    lo, hi = eps / 10, 100.0
    while hi - lo >= eps:
        mid = (lo + hi) / 2
        if (scaled(mid, height) // patch_size) * (scaled(mid, width) // patch_size) <= max_patches:
            lo = mid
        else:
            hi = mid
    return scaled(lo, height), scaled(lo, width)


def patchify(image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(C, H, W) with H, W multiples of ``patch_size`` -> (H/P * W/P, P*P*C) in timm's NaFlex layout."""
    c, h, w = image.shape
    nh, nw = h // patch_size, w // patch_size
    x = image.reshape(c, nh, patch_size, nw, patch_size).permute(1, 3, 2, 4, 0)
    return x.reshape(nh * nw, patch_size * patch_size * c)


def grid_coords(rows: int, cols: int, device=None) -> torch.Tensor:
    """(rows * cols, 2) int64 (row, column) pairs in row-major order."""
    r = torch.arange(rows, device=device).repeat_interleave(cols)
    c = torch.arange(cols, device=device).repeat(rows)
    return torch.stack([r, c], dim=1)


def _check_images(images, patch_size, max_patches) -> None:
    if isinstance(images, torch.Tensor) or not isinstance(images, (list, tuple)):
        raise TypeError(f"images must be a list of (C, H, W) tensors, got {type(images).__name__}")
    if not images:
        raise ValueError("images is an empty list: pack needs at least one (C, H, W) image")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size <= 0:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if max_patches is not None and (isinstance(max_patches, bool) or not isinstance(max_patches, int) or max_patches <= 0):
        raise ValueError(f"max_patches must be a positive int or None, got {max_patches!r}")
    first = images[0]
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"images[{i}] is a {type(img).__name__}, expected a (C, H, W) torch.Tensor")
        if img.ndim != 3:
            raise ValueError(f"images[{i}] has shape {tuple(img.shape)}, expected (C, H, W)")
        if not img.is_floating_point():
            raise TypeError(f"images[{i}] has dtype {img.dtype}, expected a floating-point image")
        if img.dtype != first.dtype:
            raise TypeError(f"mixed dtypes: images[0] is {first.dtype}, images[{i}] is {img.dtype}; cast them to one")
        if img.shape[0] != first.shape[0]:
            raise ValueError(f"mixed channel counts: images[0] has {first.shape[0]} channels, images[{i}] has {img.shape[0]}")
        if img.device != first.device:
            raise ValueError(f"mixed devices: images[0] is on {first.device}, images[{i}] on {img.device}")
        h, w = img.shape[1:]
        if h < patch_size or w < patch_size:
            raise ValueError(f"images[{i}] is {h}x{w}, smaller than one {patch_size}x{patch_size} patch")


def pack(images: Sequence[torch.Tensor], patch_size: int = 16, max_patches: int | None = None) -> Packed:
    """Pack a list of (C, H, W) images of any sizes into one :class:`Packed` batch (in order).

    Without ``max_patches`` each side must be a multiple of ``patch_size``. With it, an image whose
    patch count exceeds the budget, or whose sides are not whole patches, is resized (bilinear,
    antialiased) to SigLIP 2's size for the budget (:func:`size_for_max_patches`, aspect ratio kept),
    with a warning listing the resized images; the others are packed as they are.
    """
    _check_images(images, patch_size, max_patches)
    p = patch_size
    rows, coords, grids, resized = [], [], [], []
    for i, img in enumerate(images):
        h, w = img.shape[1:]
        whole = h % p == 0 and w % p == 0
        if max_patches is not None and (not whole or (h // p) * (w // p) > max_patches):
            th, tw = size_for_max_patches(h, w, p, max_patches)
            img = F.interpolate(img[None].float(), size=(th, tw), mode="bilinear", align_corners=False,
                                antialias=True)[0].to(img.dtype)
            resized.append(f"images[{i}] {h}x{w} -> {th}x{tw}")
            h, w = th, tw
        elif not whole:
            raise ValueError(f"images[{i}] is {h}x{w}, not a multiple of the patch size {p} on each side; "
                             "resize it, or give max_patches= to have pack resize it")
        gh, gw = h // p, w // p
        rows.append(patchify(img, p))
        coords.append(grid_coords(gh, gw, img.device))
        grids.append((gh, gw))
    if resized:
        warnings.warn(f"pack resized {len(resized)} image(s) to fit max_patches={max_patches} "
                      f"(SigLIP 2's rule, aspect ratio kept): {'; '.join(resized)}", stacklevel=2)
    lens = [h * w for h, w in grids]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=images[0].device)
    return Packed(torch.cat(rows), torch.cat(coords), cu, tuple(grids), max(lens), p, tuple(lens))


def packed_from_padded(patches: torch.Tensor, patch_coord: torch.Tensor, patch_valid: torch.Tensor) -> Packed:
    """timm's padded NaFlex batch (its collate's ``patches`` (B, L, P*P*C), ``patch_coord`` (B, L, 2),
    ``patch_valid`` (B, L)) as a :class:`Packed` one: the valid patches of each row, in order; each
    image's grid is its largest valid (row, column) plus one, as timm's."""
    for name, t, nd in (("patches", patches, 3), ("patch_coord", patch_coord, 3), ("patch_valid", patch_valid, 2)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != nd:
            raise ValueError(f"{name} must be {nd}-D, got shape {tuple(t.shape)}")
    b, n = patches.shape[:2]
    if tuple(patch_coord.shape) != (b, n, 2) or tuple(patch_valid.shape) != (b, n):
        raise ValueError(f"patch_coord must be (B, L, 2) and patch_valid (B, L) for patches {tuple(patches.shape)}, got "
                         f"{tuple(patch_coord.shape)} and {tuple(patch_valid.shape)}")
    valid = patch_valid.bool()
    lens = valid.sum(1)
    if b == 0 or bool((lens == 0).any()):
        raise ValueError("every row of a padded NaFlex batch needs at least one valid patch")
    coords = patch_coord[valid].long()
    ends = torch.cat([lens.new_zeros(1), lens.cumsum(0)])
    seg = torch.repeat_interleave(torch.arange(b, device=coords.device), lens)
    grid = torch.zeros(b, 2, dtype=torch.long, device=coords.device)
    grid = grid.scatter_reduce(0, seg[:, None].expand(-1, 2), coords, "amax", include_self=True) + 1
    grids = tuple((int(h), int(w)) for h, w in grid.tolist())
    lengths = tuple(lens.tolist())
    return Packed(patches[valid], coords, ends.to(torch.int32), grids, max(lengths), None, lengths)
