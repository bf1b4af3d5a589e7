"""Building models by name: :func:`create_model`. It sits above both the model and the
checkpoint loaders, so neither imports the other."""

from __future__ import annotations

from .checkpoints import load_checkpoint
from .checkpoints.hf_config import HF_MODEL_TYPES, hf_config_fields, read_hf_config
from .model import VisionTransformer
from .presets import get_config, pretrained_cfg_for


def create_model(name: str, pretrained: str | None = None, **overrides) -> VisionTransformer:
    """Build a preset by name (``fastvit.list_models()``), with config fields overridden by keyword.

    ``pretrained`` is a path to a local checkpoint (timm, torchvision, Hugging
    Face or big_vision layout); see :func:`fastvit.load_checkpoint`.
    """
    if pretrained is not None and not isinstance(pretrained, dict):
        # a Hugging Face config.json beside the weights fixes what they cannot show (eps, heads);
        # keywords given here still win
        hf = read_hf_config(pretrained)
        if hf is not None and hf.get("model_type") in HF_MODEL_TYPES:
            overrides = {**hf_config_fields(hf, f"{pretrained} (config.json)"), **overrides}
    model = VisionTransformer(get_config(name, **overrides))
    model.pretrained_cfg = model.default_cfg = pretrained_cfg_for(name, model.cfg)
    if pretrained is not None:
        load_checkpoint(model, pretrained)
    return model
