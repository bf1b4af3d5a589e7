"""The ``config.json`` beside a Hugging Face checkpoint: what it says that the weights cannot.

A ViT/DeiT ``config.json`` carries values no tensor shape reveals -- ``layer_norm_eps``
(1e-12 in HF's ViT configs, 1e-6 in fastvit's presets), ``hidden_act``, the head
count, the pooler's activation. :func:`hf_config_fields` reads them as ViTConfig
fields, refusing what fastvit cannot compute; :func:`check_against` compares them
with a model before anything is loaded, naming the first field that differs.
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import config_mismatch
from .hf_common import HF_ACT_NAMES, HF_ACTIVATIONS, hf_activation  # noqa: F401  (re-exported)

MODERN_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "clip_vision_model", "clip", "siglip_vision_model", "siglip")
HF_MODEL_TYPES = ("vit", "deit", *MODERN_MODEL_TYPES)
# fields a load may change on an existing model: they alter no parameter shape
HONOURED = ("norm_eps",)
def find_hf_config(path) -> Path | None:
    """``config.json`` in a save_pretrained directory, or beside a checkpoint file."""
    path = Path(path)
    candidate = path / "config.json" if path.is_dir() else path.with_name("config.json")
    return candidate if candidate.is_file() else None


def read_hf_config(path) -> dict | None:
    found = find_hf_config(path)
    if found is None:
        return None
    try:
        data = json.loads(found.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{found}: not a readable JSON config ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{found}: expected a JSON object, got {type(data).__name__}")
    return data


def hf_config_fields(c: dict, what: str = "Hugging Face config") -> dict:
    """ViTConfig fields a transformers ViT/DeiT config (as a dict) fixes; ``ValueError``
    naming the first value fastvit has no equivalent for. DINOv2, CLIP and SigLIP configs
    (``model_type`` in :data:`MODERN_MODEL_TYPES`) give their options too (registers,
    LayerScale, SwiGLU, pre-norm, attention pool, activation)."""
    if c.get("model_type") in MODERN_MODEL_TYPES:
        from .hf_families import modern_config_fields  # the family modules load when a config needs them

        return modern_config_fields(c, what)
    act = c.get("hidden_act", "gelu")
    if act != "gelu":
        raise config_mismatch(what, f"hidden_act={act!r} (fastvit's MLP uses exact GELU, 'gelu')")
    if c.get("pooler_act", "tanh") != "tanh":
        raise config_mismatch(what, f"pooler_act={c['pooler_act']!r} (fastvit's pre-logits layer uses tanh)")
    fields = {}
    for theirs, ours in (("hidden_size", "embed_dim"), ("num_hidden_layers", "depth"), ("num_attention_heads", "num_heads"),
                         ("num_channels", "in_chans"), ("qkv_bias", "qkv_bias"), ("layer_norm_eps", "norm_eps")):
        if theirs in c:
            fields[ours] = c[theirs]
    patch = c.get("patch_size")
    if patch is not None:
        patch = patch if isinstance(patch, int) else tuple(patch)
        if not isinstance(patch, int):
            if len(patch) != 2 or patch[0] != patch[1]:
                raise config_mismatch(what, f"non-square patch_size={list(patch)}")
            patch = patch[0]
        fields["patch_size"] = patch
    if "intermediate_size" in c and "hidden_size" in c:
        fields["mlp_ratio"] = c["intermediate_size"] / c["hidden_size"]
    if c.get("model_type") == "deit":
        fields["distilled"] = any("WithTeacher" in a or a == "DeiTModel" for a in c.get("architectures") or [])
    classes = hf_num_labels(c)
    if classes is not None:
        fields["num_classes"] = classes
    return fields


def hf_num_labels(c: dict) -> int | None:
    """The class count of a transformers classifier's config (``id2label``, else ``num_labels``);
    None for a headless model (``ViTModel``, ``DeiTModel``) or a config without architectures."""
    if not any("ForImageClassification" in a for a in c.get("architectures") or []):
        return None
    if isinstance(c.get("id2label"), dict) and c["id2label"]:
        return len(c["id2label"])
    return c.get("num_labels")


def hf_label_names(c: dict) -> list[str] | None:
    """A classifier config's class names in class order (``id2label``), or None."""
    labels = c.get("id2label")
    if hf_num_labels(c) is None or not isinstance(labels, dict):
        return None
    try:
        return [str(labels[k]) for k in sorted(labels, key=int)]
    except (TypeError, ValueError):
        return None


# what a config file says that a load does not need to match: the head is fitted (or
# re-initialised) separately, dropout is training-only, the position embedding is resampled
# to the model's image size, and the load sets the resampling convention
_NOT_COMPARED = ("num_classes", "img_size", "pos_embed_resample", "drop_rate", "attn_drop_rate", "drop_path_rate")


def check_against(cfg, fields: dict, source: str) -> dict:
    """Compare a config file's fields with model config ``cfg``: ``ValueError`` naming a
    structural difference; returns the honoured fields (eps) that differ, to apply."""
    from ..config import to_2tuple

    changes = {}
    for name, value in fields.items():
        if name in _NOT_COMPARED:
            continue
        have = getattr(cfg, name)
        if name == "img_size":
            same = to_2tuple(value) == have
        elif name == "init_values":  # only LayerScale's presence matters: the loaded gammas compute
            same = (value is None) == (have is None)
        elif name == "mlp_ratio":
            same = round(cfg.embed_dim * value) == cfg.mlp_hidden_dim
        elif isinstance(value, float):
            same = abs(have - value) <= 1e-12 * max(1.0, abs(value))
        else:
            same = have == value
        if same:
            continue
        if name in HONOURED:
            changes[name] = value
        else:
            raise ValueError(f"{source}: its config.json has {name}={value!r} but the model has {have!r}; "
                             f"build the model with {name}={value!r} (create_model(..., pretrained=path) does)")
    return changes


def apply_honoured(model, changes: dict) -> None:
    """Set config-file values that change no parameter on a loaded model (LayerNorm eps)."""
    if "norm_eps" in changes:
        from torch import nn

        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = changes["norm_eps"]
    model.cfg = model.cfg.replace(**changes)
