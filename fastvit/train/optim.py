"""AdamW parameter groups (weight decay, layer-wise lr decay) and the warmup + cosine schedule."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
# Embedding-level parameters: layer 0 for layer decay, never weight-decayed.
_EMBED = ("patch_embed.", "cls_token", "dist_token", "pos_embed", "mask_token")


def layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for ``blocks.i``, depth + 1 for the final norm and the heads.

    Read from the parameter name, so it works for any wrapper prefix
    (``model.``, DDP's ``module.``)."""
    m = _BLOCK.search(name)
    if m:
        return int(m.group(1)) + 1
    tail = name.split("model.", 1)[-1] if "model." in name else name
    if tail.startswith(_EMBED) or name.endswith(_EMBED):
        return 0
    return depth + 1


def param_groups(objective: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """Groups for AdamW over ``objective`` (holding the backbone as ``.model``).

    No weight decay on the backbone's ``no_weight_decay()`` parameters, the MPP mask
    embedding, biases and norm weights (any parameter with fewer than 2 dims).
    ``layer_decay`` d < 1 scales block i's learning rate by d ** (depth + 1 - layer_id).
    Each group carries ``lr_scale``; the loop sets ``lr = base_lr * lr_scale``.
    """
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"--layer-decay must be in (0, 1], got {layer_decay}")
    model = objective.model
    depth = len(model.blocks)
    skip = {f"model.{n}" for n in model.no_weight_decay()} | {"mask_token"}
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in objective.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or name in skip or name.endswith(_EMBED[1:])
        lid = layer_id(name, depth)
        scale = layer_decay ** (depth + 1 - lid) if layer_decay is not None else 1.0
        key = (lid if layer_decay is not None else 0, no_decay)
        g = groups.setdefault(key, {"params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                                    "lr_scale": scale})
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(objective: nn.Module, lr: float, weight_decay: float, layer_decay: float | None = None,
                    betas=(0.9, 0.999)) -> torch.optim.AdamW:
    if lr <= 0:
        raise ValueError(f"--lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"--weight-decay must be >= 0, got {weight_decay}")
    groups = param_groups(objective, weight_decay, layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
        del g["names"]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def lr_factor(step: int, warmup: int, total: int, min_factor: float = 0.0) -> float:
    """Linear warmup over ``warmup`` steps (reaching 1 at step ``warmup``), then cosine to ``min_factor``.

    ``step`` counts optimizer updates already made, so the first update uses 1 / warmup."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    if warmup < 0:
        raise ValueError(f"--warmup must be >= 0 steps, got {warmup}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total))
