"""What every layout shares: renaming rules, fitting a converted state dict to a model, errors.

A converter turns a checkpoint's tensors into fastvit (= timm) names and
leaves keys it does not know under their own names. :func:`fit_state_dict`
then matches that dict against one model: it resamples the position
embedding, swaps an unsuitable classifier head for a fresh one, and checks
every key and shape, raising before anything is copied into the model.
"""

from __future__ import annotations

import math
import re
from typing import Callable

import torch
from torch import nn

from ..config import ViTConfig
from ..layers import resample_pos_embed
from ..model import VisionTransformer
from .tensors import check_entries, shorten

# (regex over the source key, fastvit name template, optional tensor transform).
# A template ending in "#q", "#k" or "#v" names one third of a packed qkv tensor.
Rule = tuple[str, str, Callable[[torch.Tensor], torch.Tensor] | None]

HEAD_KEYS = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")
PRE_LOGITS_KEYS = ("pre_logits.fc.weight", "pre_logits.fc.bias")


class CheckpointKeyError(KeyError):
    """Keys missing from or unexpected in a checkpoint. Prints its message as written
    (a plain KeyError would print it quoted, newlines escaped)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def rename(state_dict: dict, rules: list[Rule]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Apply the first matching rule to every key; q/k/v parts are concatenated.

    Returns (renamed, entries no rule matched). Raises ``KeyError`` when a packed qkv
    tensor is missing one of its parts.
    """
    out, parts, unmatched = {}, {}, {}
    for key, value in state_dict.items():
        for pattern, template, transform in rules:
            m = re.fullmatch(pattern, key)
            if m is None:
                continue
            name = m.expand(template)
            if transform is not None:
                try:
                    value = transform(value)
                except (RuntimeError, IndexError, ValueError) as e:
                    raise ValueError(f"{key}: cannot convert a tensor of shape {tuple(value.shape)} to {name.split('#')[0]} "
                                     f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
            if "#" in name:
                name, part = name.split("#")
                parts.setdefault(name, {})[part] = value
            else:
                out[name] = value
            break
        else:
            unmatched[key] = value
    for name, qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            raise CheckpointKeyError(f"{name}: query, key and value must all be present, found only {sorted(qkv)}")
        shapes = {part: tuple(t.shape) for part, t in qkv.items()}
        if len(set(shapes.values())) != 1 or not shapes["q"]:
            raise ValueError(f"{name}: query, key and value must have one shape of at least one dimension, found {shapes}")
        out[name] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out, unmatched


def describe(state_dict: dict) -> str:
    """A one-line size summary of fastvit-named weights, for error messages."""
    facts = []
    w = state_dict.get("patch_embed.proj.weight")
    if isinstance(w, torch.Tensor) and w.ndim == 4:
        facts.append(f"embed_dim={w.shape[0]}, patch_size={w.shape[-1]}")
    depth = len({k.split(".")[1] for k in state_dict if re.match(r"blocks\.\d+\.", k)})
    if depth:
        facts.append(f"depth={depth}")
    fc1 = state_dict.get("blocks.0.mlp.fc1.weight")
    if isinstance(fc1, torch.Tensor) and fc1.ndim == 2:
        facts.append(f"mlp_hidden={fc1.shape[0]}")
    pos = state_dict.get("pos_embed")
    if isinstance(pos, torch.Tensor) and pos.ndim == 3:
        facts.append(f"{pos.shape[1]} position tokens")
    head = state_dict.get("head.weight")
    facts.append(f"num_classes={head.shape[0]}" if isinstance(head, torch.Tensor) else "no head")
    return ", ".join(facts)


def _fit_pos_embed(pos: torch.Tensor, model, interpolation: str, antialias: bool, source: str,
                   align_corners: bool = False) -> torch.Tensor:
    want = model.pos_embed.shape
    if pos.shape == want:
        return pos
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != want[2]:
        return pos  # not a matter of grid size: reported with the other shape mismatches
    found = f"{source}: pos_embed: the model expects {tuple(want)}, the checkpoint has {tuple(pos.shape)}"
    # no_embed_class: the positions cover only the patches; the prefix tokens get none
    prefix = 0 if getattr(model.cfg, "no_embed_class", False) else model.num_prefix_tokens
    n = pos.shape[1]
    side = math.isqrt(max(n - prefix, 0))
    if n == 0:
        raise ValueError(f"{found}; a position embedding needs at least one token")
    if n > prefix and side * side == n - prefix:
        pass
    elif prefix and math.isqrt(n) ** 2 == n:
        # No positions for the class/distillation tokens (big_vision, timm no_embed_class):
        # adding zeros to them is the same computation.
        side = math.isqrt(n)
        pos = torch.cat([pos.new_zeros(1, prefix, pos.shape[2]), pos], dim=1)
    else:
        raise ValueError(f"{found}; {n} tokens are not a square grid plus the model's {prefix} prefix token(s)")
    if (side, side) != model.cfg.grid_size:
        pos = resample_pos_embed(pos, model.cfg.grid_size, (side, side), prefix, interpolation, antialias, align_corners)
    return pos


def _fresh_head(expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """New head tensors, initialised as ``VisionTransformer.reset_classifier`` does."""
    fresh = {}
    for key in HEAD_KEYS:
        if key in expected:
            t = torch.empty_like(expected[key])
            fresh[key] = nn.init.trunc_normal_(t, std=0.02) if key.endswith("weight") else t.zero_()
    return fresh


def _head_summary(shapes: dict) -> str:
    shape = shapes.get("head.weight")
    if shape is None:
        return "no head"
    what = f"{shape[0]} classes on {shape[1]} features" if len(shape) == 2 else f"weight {shape}"
    return what + (" + distillation head" if "head_dist.weight" in shapes else "")


def _fit_head(sd: dict, expected: dict) -> str | None:
    """Swap the checkpoint's classifier for a fresh one when it does not fit; return the notice.

    The head (and a pre-logits layer the model lacks) is the one part a checkpoint
    may legitimately not fit: it belongs to the task, not to the backbone."""
    notes = []
    if PRE_LOGITS_KEYS[0] in sd and PRE_LOGITS_KEYS[0] not in expected:
        for key in PRE_LOGITS_KEYS:
            sd.pop(key, None)
        notes.append("dropped its pre-logits layer (the model has none)")
    model_head = {k: tuple(expected[k].shape) for k in HEAD_KEYS if k in expected}
    ckpt_head = {k: tuple(sd[k].shape) for k in HEAD_KEYS if k in sd}
    if model_head == ckpt_head and not notes:
        return None
    for key in ckpt_head:
        del sd[key]
    if ckpt_head:
        notes.append(f"dropped its classifier head ({_head_summary(ckpt_head)}; the model's: {_head_summary(model_head)})")
    elif model_head:
        notes.append("it has no classifier head")
    if model_head:
        sd.update(_fresh_head(expected))
        notes.append("re-initialised the model's head")
    return "; ".join(notes)


def fit_state_dict(
    model,
    state_dict: dict[str, torch.Tensor],
    strict: bool = True,
    interpolation: str = "bicubic",
    antialias: bool = False,
    source: str = "checkpoint",
    align_corners: bool = False,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Check fastvit-named weights against ``model`` and adapt what may be adapted.

    Returns ``(state_dict ready for model.load_state_dict, notices to warn about)``.
    Raises ``ValueError`` for non-tensors and shape mismatches and
    :class:`CheckpointKeyError` for missing / unexpected keys (with
    ``strict=False`` those become notices). Neither the model nor the input is modified.
    """
    sd = dict(state_dict)
    check_entries(sd, source)
    expected = model.state_dict()
    if "pos_embed" in sd:
        sd["pos_embed"] = _fit_pos_embed(sd["pos_embed"], model, interpolation, antialias, source, align_corners)
    notices = []
    head_note = _fit_head(sd, expected)
    if head_note:
        notices.append(f"{source}: {head_note}")
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [f"{k}: the model expects {tuple(expected[k].shape)}, the checkpoint has {tuple(sd[k].shape)}"
                  for k in expected if k in sd and sd[k].shape != expected[k].shape]
    sizes = f"\n  checkpoint: {describe(state_dict)}\n  model:      {describe(expected)}"
    if mismatched:
        shown = " (first 8)" if len(mismatched) > 8 else ""
        raise ValueError(f"{source}: {len(mismatched)} shape mismatch(es){shown}; a different model size?\n  "
                         + "\n  ".join(mismatched[:8]) + sizes)
    if missing or unexpected:
        msg = "; ".join(
            f"{what} keys (fastvit names): {shorten(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys
        )
        if strict:
            raise CheckpointKeyError(f"{source}: {msg}{sizes}\n  (load_checkpoint(..., strict=False) loads the rest)")
        notices.append(f"{source}: strict=False, {msg}")
    return sd, notices


def load_strict(model: nn.Module, sd: dict, what: str) -> nn.Module:
    """``model.load_state_dict(sd, strict=True)`` after naming what does not fit (KeyError: missing and
    unexpected keys, the first 8 of each; ValueError: differing shapes), so nothing is half-loaded."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise KeyError(f"{what} checkpoint does not fit this {type(model).__name__}: missing {missing[:8]}"
                       f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                       f"{'...' if len(unexpected) > 8 else ''}")
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if sd[k].shape != v.shape]
    if bad:
        raise ValueError(f"{what} checkpoint shapes differ from the model's: {bad[:6]}")
    model.load_state_dict(sd, strict=True)
    return model


def mlp_ratio_for(dim: int, width: int) -> float:
    """An mlp_ratio whose ``int(dim * ratio)`` is exactly ``width`` (``width / dim`` may round below)."""
    ratio = width / dim
    for _ in range(4):
        if int(dim * ratio) == width:
            break
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def config_mismatch(what: str, reason: str) -> ValueError:
    return ValueError(f"cannot convert {what}: {reason}; fastvit's VisionTransformer has no equivalent")


def build_like(cfg: ViTConfig, state_dict: dict[str, torch.Tensor], source: nn.Module, what: str):
    """A fastvit VisionTransformer with ``state_dict`` loaded, on ``source``'s device and
    dtype and in its train/eval mode. The model is built on the meta device, so no
    time is spent on an initialisation the weights overwrite."""
    ref = next((p for p in source.parameters() if p.is_floating_point()), None)
    device, dtype = (ref.device, ref.dtype) if ref is not None else (torch.device("cpu"), torch.float32)
    with torch.device("meta"):
        model = VisionTransformer(cfg)
    model = model.to_empty(device=device).to(dtype)
    from .options import check_options

    sd, notices = check_options(model, state_dict, what)
    sd, more = fit_state_dict(model, sd, strict=True, source=what)
    notices += more
    if notices:  # the config was read from the same model: every weight must fit
        raise RuntimeError(f"internal error converting {what}: {notices}")
    with torch.no_grad():
        model.load_state_dict(sd)
    return model.train(source.training)


def timm_activation(act: nn.Module) -> str | None:
    """fastvit's act_layer name for a timm / torch activation module, None when it has none."""
    name = type(act).__name__
    if name == "GELU":  # torch's nn.GELU or timm's own GELU class
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(getattr(act, "approximate", "none"))
    return {"GELUTanh": "gelu_tanh", "QuickGELU": "quick_gelu", "SiLU": "silu"}.get(name)
