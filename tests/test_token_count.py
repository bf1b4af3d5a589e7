"""fastvit.token_count against a count by hand and against what fastvit.naflex.pack really builds."""

import warnings

import pytest
import torch

from fastvit.naflex import pack
from fastvit.token_count import count_tokens, mixed_sizes, patch_grid


def test_hand_count():
    # 16 px patches, one class token: grids 2x3, 1x1, 4x2 -> 7, 2 and 9 tokens
    c = count_tokens([(32, 48), (16, 16), (64, 32)], patch_size=16, num_prefix_tokens=1)
    assert c.grids == ((2, 3), (1, 1), (4, 2))
    assert c.per_image == (7, 2, 9)
    assert (c.packed, c.padded, c.padding) == (18, 27, 9)  # 3 images x 9
    assert c.padding_fraction == pytest.approx(9 / 27)
    assert (c.packed_attention_pairs, c.padded_attention_pairs) == (49 + 4 + 81, 3 * 81)
    fixed = count_tokens([(32, 48), (16, 16)], patch_size=16, pad_to=10)  # a processor's fixed length
    assert (fixed.packed, fixed.padded, fixed.padding) == (7, 20, 13)


def test_agrees_with_pack_including_its_resizes():
    sizes = [(48, 80), (16, 16), (70, 33), (160, 96)]
    images = [torch.zeros(3, h, w) for h, w in sizes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packed = pack(images, patch_size=16, max_patches=24)
    c = count_tokens(sizes, patch_size=16, max_patches=24)
    assert c.grids == tuple(packed.grid_sizes)
    assert list(c.per_image) == packed.seqlens
    assert c.packed == packed.patches.shape[0]


def test_refusals():
    with pytest.raises(ValueError, match="empty"):
        count_tokens([], patch_size=16)
    with pytest.raises(ValueError, match="smaller than one"):
        patch_grid(8, 32, 16)
    with pytest.raises(ValueError, match="whole"):
        patch_grid(20, 32, 16)
    with pytest.raises(ValueError, match="pad_to"):
        count_tokens([(32, 32)], patch_size=16, pad_to=3)


def test_the_documented_benchmark_batch():
    """docs/naflex-bench.md's numbers: 50 images of 128..512 px a side (seed 0), patch 16."""
    sizes = mixed_sizes(50, (128, 512), 16, seed=0)
    assert len(sizes) == 50 and all(128 <= s <= 512 and s % 16 == 0 for hw in sizes for s in hw)
    assert sizes == mixed_sizes(50, (128, 512), 16, seed=0) != mixed_sizes(50, (128, 512), 16, seed=1)
    c = count_tokens(sizes, 16)
    assert (c.packed, c.padded, c.padding, c.padded_length) == (19124, 40600, 21476, 812)
    assert (c.packed_attention_pairs, c.padded_attention_pairs) == (8585024, 32967200)
    assert count_tokens(sizes, 16, pad_to=1024).padding == 32076
