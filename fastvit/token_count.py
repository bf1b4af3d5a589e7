"""Tokens a batch of images of different sizes costs packed (:func:`fastvit.naflex.pack`) and padded
(timm's and transformers' NaFlex batches: every image padded to the longest, attention masked).

Packed, image ``i`` is ``n_i`` tokens (its patches, plus the prefix tokens) and attention works
inside each image: ``sum(n_i)`` rows go through every GEMM and LayerNorm, ``sum(n_i ** 2)`` query-key
pairs through attention. Padded to ``L = max(n_i)`` (or a fixed length), every image costs ``L`` rows
and ``L ** 2`` pairs: the masked pairs are computed too. :func:`count_tokens` counts both.

>>> count_tokens([(32, 48), (16, 16), (64, 32)], patch_size=16, num_prefix_tokens=1).padding
9
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class TokenCount:
    """Token and attention-pair counts of one batch, packed against padded."""

    grids: tuple[tuple[int, int], ...]  # each image's (rows, columns) of patches
    per_image: tuple[int, ...]  # tokens per image, prefix included
    padded_length: int  # the length every image is padded to

    @property
    def images(self) -> int:
        return len(self.per_image)

    @property
    def packed(self) -> int:
        """Rows a packed batch computes."""
        return sum(self.per_image)

    @property
    def padded(self) -> int:
        """Rows a padded batch computes."""
        return self.images * self.padded_length

    @property
    def padding(self) -> int:
        """Padding tokens a packed batch does not compute."""
        return self.padded - self.packed

    @property
    def padding_fraction(self) -> float:
        """Share of a padded batch's rows that are padding."""
        return self.padding / self.padded

    @property
    def packed_attention_pairs(self) -> int:
        return sum(n * n for n in self.per_image)

    @property
    def padded_attention_pairs(self) -> int:
        return self.images * self.padded_length ** 2

    def as_dict(self) -> dict:
        return {"images": self.images, "packed_tokens": self.packed, "padded_tokens": self.padded,
                "padding_tokens": self.padding, "padding_fraction": self.padding_fraction,
                "padded_length": self.padded_length, "packed_attention_pairs": self.packed_attention_pairs,
                "padded_attention_pairs": self.padded_attention_pairs}


def patch_grid(height: int, width: int, patch_size: int, max_patches: int | None = None) -> tuple[int, int]:
    """(rows, columns) of patches :func:`fastvit.naflex.pack` gives an image of ``height`` x ``width``
    pixels: as it is when its sides are whole patches (within ``max_patches``), else SigLIP 2's size
    for ``max_patches``."""
    from .naflex.packing import size_for_max_patches

    for name, v in (("height", height), ("width", width), ("patch_size", patch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if height < patch_size or width < patch_size:
        raise ValueError(f"an image of {height}x{width} is smaller than one {patch_size}x{patch_size} patch")
    whole = height % patch_size == 0 and width % patch_size == 0
    if max_patches is not None and (not whole or (height // patch_size) * (width // patch_size) > max_patches):
        height, width = size_for_max_patches(height, width, patch_size, max_patches)
    elif not whole:
        raise ValueError(f"an image of {height}x{width} is not whole {patch_size}-pixel patches; give max_patches "
                         "(pack resizes it then) or resize it")
    return height // patch_size, width // patch_size


def count_tokens(sizes: Sequence[tuple[int, int]], patch_size: int, *, num_prefix_tokens: int = 0,
                 max_patches: int | None = None, pad_to: int | None = None) -> TokenCount:
    """Count a batch of images of pixel ``sizes`` ``[(height, width), ...]``: packed, and padded to the
    longest image (or to ``pad_to`` tokens, as transformers' processor pads to ``max_num_patches``)."""
    if not sizes:
        raise ValueError("sizes is empty: count_tokens needs at least one (height, width)")
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r}")
    grids = tuple(patch_grid(int(h), int(w), patch_size, max_patches) for h, w in sizes)
    per_image = tuple(h * w + num_prefix_tokens for h, w in grids)
    length = max(per_image)
    if pad_to is not None:
        if pad_to < length:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest image ({length} tokens)")
        length = pad_to
    return TokenCount(grids, per_image, length)


def mixed_sizes(n: int = 50, sides: tuple[int, int] = (128, 512), patch_size: int = 16,
                seed: int = 0) -> list[tuple[int, int]]:
    """``n`` (height, width) pairs, each side drawn uniformly among the whole numbers of patches in
    ``sides`` (inclusive), from ``seed``: the mix of sizes the NaFlex benchmark and docs count."""
    rng = random.Random(seed)
    lo, hi = -(-sides[0] // patch_size), sides[1] // patch_size
    if not 1 <= lo <= hi:
        raise ValueError(f"sides {sides} hold no whole {patch_size}-pixel patch count")
    return [(rng.randint(lo, hi) * patch_size, rng.randint(lo, hi) * patch_size) for _ in range(n)]
