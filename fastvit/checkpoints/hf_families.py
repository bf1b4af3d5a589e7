"""The one table of Hugging Face families beyond ViT / DeiT: DINOv2, CLIP and SigLIP, one module
each (:mod:`.hf_dinov2`, :mod:`.hf_clip`, :mod:`.hf_siglip`). Which family a config's
``model_type`` or a state dict's keys belong to, their config.json fields and in-memory
conversion, for :mod:`.huggingface` (the entry, with ViT / DeiT) and :mod:`.hf_config`.

Imports go one way: this table -> the family modules -> :mod:`.hf_common` / :mod:`.common`."""

from __future__ import annotations

from torch import nn

from ..config import ViTConfig
from . import hf_clip, hf_dinov2, hf_siglip
from .common import build_like, config_mismatch, shorten

# family name -> its module, in the order the keys are recognised (CLIP and SigLIP before DINOv2)
FAMILIES = {"clip": hf_clip, "siglip": hf_siglip, "dinov2": hf_dinov2}
_DETECT = {"clip": hf_clip.is_clip, "siglip": hf_siglip.is_siglip, "dinov2": hf_dinov2.is_dinov2}
MODULES = {t: m for m in FAMILIES.values() for t in m.MODEL_TYPES}  # config.json model_type -> module
MODEL_TYPES = tuple(MODULES)


def family_of(keys) -> str:
    """Which transformers family a state dict's keys come from: clip, siglip, dinov2, else vit."""
    keys = list(keys)
    return next((name for name, found in _DETECT.items() if found(keys)), "vit")


def family_module(family: str):
    """The module of a family named by :func:`family_of`."""
    return FAMILIES[family]


def modern_config_fields(c: dict, what: str) -> dict:
    """ViTConfig fields of a DINOv2 / CLIP / SigLIP config dict (``config.json``)."""
    module = MODULES[c.get("model_type")]
    fields = module.config_fields(c, what)
    if module is hf_dinov2:
        fields["pos_embed_resample"] = "timm" if fields.get("reg_tokens") else "hf"
    else:
        fields["pos_embed_resample"] = "hf"
    return fields


def from_hf_modern(model: nn.Module, module, **impl):
    what = f"transformers {type(model).__name__}"
    c = model.config.to_dict()
    if module is hf_dinov2 and type(model).__name__ == "Dinov2WithRegistersModel":
        c.setdefault("model_type", "dinov2_with_registers")
    fields = modern_config_fields(c, what)
    if module is hf_clip:
        proj = getattr(model, "visual_projection", None)
        fields["num_classes"] = proj.out_features if isinstance(proj, nn.Linear) else 0
    if module is hf_dinov2:
        fields.update(drop_rate=c.get("hidden_dropout_prob", 0.0) or 0.0,
                      attn_drop_rate=c.get("attention_probs_dropout_prob", 0.0) or 0.0)
    cfg = ViTConfig(**fields, **impl)
    sd, unknown = module.convert(model.state_dict())
    if unknown:
        raise config_mismatch(what, f"weights fastvit does not have: {shorten(unknown)}")
    return build_like(cfg, sd, model, what)
