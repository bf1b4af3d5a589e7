"""What a checkpoint's keys reveal about the architecture, checked against a model before loading.

Some options leave traces in the state dict even where no shape differs:
register tokens (``reg_token``), LayerScale (``blocks.N.ls1.gamma``), qk-norm
(``blocks.N.attn.q_norm``), the CLIP pre-norm (``norm_pre``, a patch
embedding without bias), the attention-pool head (``attn_pool.*``), where the
final norm sits (``norm`` / ``fc_norm`` / none), a SwiGLU MLP (``fc1`` twice as
wide as ``fc2``'s input) and a position embedding that covers only the patches
(``no_embed_class``). :func:`check_options` compares them with a model's config
and names every option that differs, so a checkpoint never loads into a model
that would compute something else.

The one difference that is adapted instead of refused: LayerScale into a model
without it is folded into the projection in front of it (``gamma * (W x + b)``
is ``(gamma W) x + gamma b``, the same forward), see :func:`fold_layer_scale`.
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch

from ..config import ViTConfig

# ViTConfig's field defaults: an option at its default adds nothing to timm's constructor call
OPTION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ViTConfig)}

_LS_KEY = re.compile(r"blocks\.(\d+)\.ls([12])\.gamma")
_LS_TARGET = {"1": "attn.proj", "2": "mlp.fc2"}


def final_norm_place(cfg) -> str | None:
    """Where the model's final LayerNorm sits: ``"norm"`` (before pooling), ``"fc_norm"`` (after) or None."""
    if not cfg.final_norm:
        return None
    return "fc_norm" if cfg.use_fc_norm else "norm"


def has_layer_scale(cfg) -> bool:
    """Whether the model has the pre-norm block's ls1 / ls2 (the other block layouts name theirs otherwise)."""
    return cfg.init_values is not None and cfg.block_type == "pre_norm"

# what revealed() reads from the pre-norm block's keys (blocks.N.ls1, .attn.q_norm, .mlp.fc1): the other
# block layouts keep these elsewhere, and their keys must all match the model's when fitted anyway
_PRE_NORM_BLOCK_OPTIONS = ("layer_scale", "qk_norm", "mlp_layer")


def fold_layer_scale(state_dict: dict) -> tuple[dict, bool]:
    """LayerScale folded into the projections it scales; returns (new dict, whether any was folded).

    A gamma whose projection is absent is left in place (reported as unexpected
    when fitted); one whose shape does not fit raises ``ValueError``."""
    out, folded = dict(state_dict), False
    for key in [k for k in out if _LS_KEY.fullmatch(k)]:
        i, which = _LS_KEY.fullmatch(key).groups()
        target = f"blocks.{i}.{_LS_TARGET[which]}"
        if f"{target}.weight" not in out or f"{target}.bias" not in out:
            continue
        w, b, gamma = out[f"{target}.weight"], out[f"{target}.bias"], out[key]
        if not (gamma.ndim == 1 and w.ndim == 2 and b.shape == gamma.shape == w.shape[:1]):
            raise ValueError(f"{key}: LayerScale of shape {tuple(gamma.shape)} does not fit {target} "
                             f"(weight {tuple(w.shape)}, bias {tuple(b.shape)})")
        g = out.pop(key).float()
        out[f"{target}.weight"] = (w.float() * g[:, None]).to(w.dtype)
        out[f"{target}.bias"] = (b.float() * g).to(b.dtype)
        folded = True
    return out, folded


def revealed(state_dict: dict) -> dict:
    """The options fastvit-named weights show, as {option: (value, evidence)}; only those
    the keys decide (a partial dict without blocks shows nothing about the blocks)."""
    sd, found = state_dict, {}
    keys = list(sd)
    has_blocks = any(k.startswith("blocks.") for k in keys)
    reg = sd.get("reg_token")
    found["reg_tokens"] = ((reg.shape[1], f"has reg_token {tuple(reg.shape)}") if isinstance(reg, torch.Tensor) and reg.ndim == 3
                           else (0, "has no reg_token"))
    if has_blocks:
        ls = any(_LS_KEY.fullmatch(k) for k in keys)
        found["layer_scale"] = (ls, "has LayerScale (blocks.N.ls1.gamma)" if ls else "has no LayerScale (ls1/ls2.gamma)")
        qk = any(re.fullmatch(r"blocks\.\d+\.attn\.[qk]_norm\.weight", k) for k in keys)
        found["qk_norm"] = (qk, "has blocks.N.attn.q_norm/k_norm" if qk else "has no attn.q_norm/k_norm")
        fc1, fc2 = sd.get("blocks.0.mlp.fc1.weight"), sd.get("blocks.0.mlp.fc2.weight")
        if isinstance(fc1, torch.Tensor) and isinstance(fc2, torch.Tensor) and fc1.ndim == fc2.ndim == 2:
            swiglu = fc1.shape[0] == 2 * fc2.shape[1]
            found["mlp_layer"] = ("swiglu" if swiglu else "mlp",
                                  f"has mlp.fc1 {tuple(fc1.shape)} and mlp.fc2 {tuple(fc2.shape)}"
                                  + (" (a packed gated MLP)" if swiglu else ""))
        pre = "norm_pre.weight" in sd
        found["pre_norm"] = (pre, "has norm_pre" if pre else "has no norm_pre")
        place = "norm" if "norm.weight" in sd else "fc_norm" if "fc_norm.weight" in sd else None
        found["final_norm_place"] = (place, f"has {place}.weight" if place else "has neither norm.weight nor fc_norm.weight")
        pool = any(k.startswith("attn_pool.") for k in keys)
        found["map"] = (pool, "has attn_pool.*" if pool else "has no attn_pool.*")
    if "patch_embed.proj.weight" in sd:
        bias = "patch_embed.proj.bias" in sd
        found["patch_bias"] = (bias, "has patch_embed.proj.bias" if bias else "has no patch_embed.proj.bias")
    return found


def _model_side(cfg) -> dict:
    return {
        "reg_tokens": (cfg.reg_tokens, f"reg_tokens={cfg.reg_tokens}"),
        "layer_scale": (has_layer_scale(cfg), f"init_values={cfg.init_values!r}"),
        "qk_norm": (cfg.qk_norm, f"qk_norm={cfg.qk_norm}"),
        "mlp_layer": (cfg.mlp_layer, f"mlp_layer={cfg.mlp_layer!r}"),
        "pre_norm": (cfg.pre_norm, f"pre_norm={cfg.pre_norm}"),
        "final_norm_place": (final_norm_place(cfg), f"final_norm={cfg.final_norm}, fc_norm={cfg.fc_norm!r} "
                                                    f"(global_pool={cfg.global_pool!r})"),
        "map": (cfg.global_pool == "map", f"global_pool={cfg.global_pool!r}"),
        "patch_bias": (cfg.use_patch_bias, f"patch_bias={cfg.patch_bias!r} (pre_norm={cfg.pre_norm})"),
    }


def _pos_embed_problem(cfg, pos, prefix: int) -> str | None:
    """no_embed_class: a position embedding with entries for the prefix tokens cannot go into a
    model whose positions cover only the patches (the reverse is padded with zeros, exactly)."""
    if not cfg.no_embed_class or not prefix or not isinstance(pos, torch.Tensor) or pos.ndim != 3:
        return None
    n = pos.shape[1]
    if n > prefix and math.isqrt(n - prefix) ** 2 == n - prefix and math.isqrt(n) ** 2 != n:
        return (f"no_embed_class: the checkpoint's pos_embed has {n} = {prefix} prefix + {n - prefix} patch positions, "
                f"the model has no_embed_class=True (patch positions only); build it with no_embed_class=False")
    return None


def option_problems(cfg, state_dict: dict, num_prefix_tokens: int) -> list[str]:
    """One line per option on which ``state_dict`` (fastvit names) and ``cfg`` disagree."""
    ours, problems = _model_side(cfg), []
    for name, (value, evidence) in revealed(state_dict).items():
        if cfg.block_type != "pre_norm" and name in _PRE_NORM_BLOCK_OPTIONS:
            continue
        have, setting = ours[name]
        if value != have:
            problems.append(f"{name}: the checkpoint {evidence}, the model has {setting}")
    pos = _pos_embed_problem(cfg, state_dict.get("pos_embed"), num_prefix_tokens)
    if pos:
        problems.append(pos)
    return problems


def check_options(model, state_dict: dict, source: str, strict: bool = True) -> tuple[dict, list[str]]:
    """Adapt LayerScale (fold it when the model has none) and compare every revealed option.

    Returns (state dict to fit, notices). Raises ``ValueError`` naming each option
    that differs; with ``strict=False`` they become notices instead."""
    notices = []
    if not has_layer_scale(model.cfg):
        try:
            state_dict, folded = fold_layer_scale(state_dict)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e
        if folded:
            notices.append(f"{source}: folded its LayerScale (ls1/ls2.gamma) into attn.proj and mlp.fc2, the same "
                           "forward; build the model with init_values to keep gamma as a parameter")
    problems = option_problems(model.cfg, state_dict, model.num_prefix_tokens)
    if problems and strict:
        raise ValueError(f"{source}: its keys show a model built with other options:\n  " + "\n  ".join(problems))
    notices += [f"{source}: strict=False, {p}" for p in problems]
    return state_dict, notices
