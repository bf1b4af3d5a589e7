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


class FeatureInfo:
    """timm's ``FeatureInfo``: per block ``num_chs``, ``reduction``, ``module`` (and ``index``),
    with accessors that answer for the ``out_indices`` taken (or for ``idx``)."""

    def __init__(self, feature_info: list[dict], out_indices):
        out_indices = tuple(range(-out_indices, 0)) if isinstance(out_indices, int) else tuple(out_indices)
        self.info = [dict(fi, index=fi.get("index", i)) for i, fi in enumerate(feature_info)]
        self.out_indices = out_indices

    def from_other(self, out_indices):
        return FeatureInfo([dict(fi) for fi in self.info], out_indices)

    def get(self, key: str, idx=None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys=None, idx=None):
        picked = self.out_indices if idx is None else idx
        if isinstance(picked, (tuple, list)):
            return [self.info[i] if keys is None else {k: self.info[i][k] for k in keys} for i in picked]
        return self.info[picked] if keys is None else {k: self.info[picked][k] for k in keys}

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self):
        return len(self.info)


FEATURE_CLASSES = ("getter",)


class FeatureGetterNet(nn.ModuleDict):
    """What ``create_model(..., features_only=True)`` returns, as timm's ``FeatureGetterNet`` for
    a ViT: the model pruned after the last block taken (final norm dropped unless ``norm``, head
    dropped); ``forward(x)`` is a list of (B, D, gh, gw) maps, one per block in ``out_indices``
    (an int n: the last n blocks). ``feature_info`` describes them (channels, reductions, modules)."""

    def __init__(self, model: nn.Module, out_indices=3, out_map=None, return_dict: bool = False,
                 output_fmt: str = "NCHW", norm: bool = False, prune: bool = True):
        super().__init__()
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        if prune:
            out_indices = model.prune_intermediate_layers(out_indices, prune_norm=not norm)
        else:
            out_indices, _ = feature_take_indices(len(model.blocks), out_indices)
        self.feature_info = FeatureInfo(model.feature_info, out_indices)
        self.model = model
        self.out_indices = out_indices
        self.out_map, self.return_dict = out_map, return_dict
        self.output_fmt, self.norm = output_fmt, norm

    def forward(self, x):
        return self.model.forward_intermediates(x, indices=self.out_indices, norm=self.norm,
                                                output_fmt=self.output_fmt, intermediates_only=True)


def features_only(model: nn.Module, out_indices=3, feature_cls=None, **feature_kwargs) -> FeatureGetterNet:
    """``model`` wrapped as ``create_model(..., features_only=True)`` wraps a ViT in timm."""
    kind = "getter" if feature_cls is None else feature_cls
    if isinstance(kind, str):
        kind = kind.lower()
    if kind not in FEATURE_CLASSES and kind is not FeatureGetterNet:
        raise ValueError(f"feature_cls={feature_cls!r}: a fastvit ViT gives features through forward_intermediates "
                         f"('getter', timm's default for its ViTs); valid: {FEATURE_CLASSES}")
    return FeatureGetterNet(model, out_indices=out_indices, **feature_kwargs)
