"""timm's intermediate-feature API for fastvit's VisionTransformer: which blocks to take,
``forward_intermediates`` and ``prune_intermediate_layers`` with timm's signature and semantics."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def feature_take_indices(num_blocks: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: (absolute block indices in the order given, the largest).

    ``None``: every block; an int n: the last n; a sequence: those blocks (negative ones
    count from the end). Raises ``ValueError`` for an empty selection or an index out of range.
    """
    if indices is None:
        indices = num_blocks
    if isinstance(indices, bool) or not isinstance(indices, (int, Sequence, torch.Tensor)) or isinstance(indices, str):
        raise TypeError(f"indices must be None, an int or a sequence of ints, got {type(indices).__name__}")
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"indices={indices}: the last-n count must be in 1..{num_blocks} (the model has {num_blocks} blocks)")
        return list(range(num_blocks - indices, num_blocks)), num_blocks - 1
    take = []
    for i in indices:
        if isinstance(i, torch.Tensor) and i.numel() == 1:
            i = int(i)
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"block indices must be ints, got {i!r} in {indices!r}")
        idx = num_blocks + i if i < 0 else i
        if not 0 <= idx < num_blocks:
            raise ValueError(f"block index {i} is out of range for a model with {num_blocks} blocks "
                             f"(valid: {-num_blocks}..{num_blocks - 1})")
        take.append(idx)
    if not take:
        raise ValueError("indices is empty: name at least one block (or pass None for all of them)")
    return take, max(take)


def forward_intermediates(model, x, indices, return_prefix_tokens, norm, stop_early, output_fmt,
                          intermediates_only, output_dict, attn_mask, is_causal):
    if output_fmt not in ("NCHW", "NLC"):
        raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
    if attn_mask is not None or is_causal:
        raise ValueError("attn_mask / is_causal are not supported: fastvit's ViT attends over all tokens")
    take, last = feature_take_indices(len(model.blocks), indices)
    wanted = set(take)
    x, (gh, gw) = model._embed(x)
    blocks = model.blocks[: last + 1] if stop_early or intermediates_only else model.blocks
    found = []
    for i, block in enumerate(blocks):
        x = model._run_block(block, x)
        if i in wanted:  # block order, each block once (as timm)
            found.append(model.norm(x) if norm else x)
    n = model.num_prefix_tokens
    prefixes = [y[:, :n] for y in found] if n else None
    feats = [y[:, n:] for y in found]
    if output_fmt == "NCHW":
        feats = [y.reshape(y.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous() for y in feats]
    if output_dict:
        out = {"image_intermediates": feats}
        if prefixes is not None and return_prefix_tokens:
            out["image_intermediates_prefix"] = prefixes
        if not intermediates_only:
            out["image_features"] = model.norm(x)
        return out
    if return_prefix_tokens and prefixes is not None:
        feats = list(zip(feats, prefixes))
    if intermediates_only:
        return feats
    return model.norm(x), feats


def prune_intermediate_layers(model, indices=1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
    take, last = feature_take_indices(len(model.blocks), indices)
    model.blocks = model.blocks[: last + 1]
    model.cfg = model.cfg.replace(depth=len(model.blocks))
    if prune_norm:
        model.norm = nn.Identity()
    if prune_head:
        model.fc_norm = nn.Identity()
        model.reset_classifier(0, "")
    return take
