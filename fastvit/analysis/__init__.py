"""What a ViT learns, as the ViT paper shows it: exact attention maps and the paper's analyses.

>>> import fastvit, torch
>>> from fastvit.analysis import attention_maps, mean_attention_distance
>>> model = fastvit.create_model("vit_tiny_patch16_224", attn_impl="sdpa")
>>> maps = attention_maps(model, torch.randn(1, 3, 224, 224), blocks=[0, -1])  # 2 x (1, 3, 197, 197)

``attention_maps`` gives the exact softmax probabilities for every
``attn_impl``, Triton included (through the kernel's row log-sum-exp); the
analyses read them one block at a time. ``fastvit analyze`` draws the figures.
"""

from .maps import attention_maps, visit_attention_maps
from .metrics import (
    attention_rollout,
    mean_attention_distance,
    patch_centre_distances,
    patch_embed_components,
    pos_embed_similarity,
    token_grid,
)

__all__ = [
    "attention_maps",
    "attention_rollout",
    "mean_attention_distance",
    "patch_centre_distances",
    "patch_embed_components",
    "pos_embed_similarity",
    "token_grid",
    "visit_attention_maps",
]
