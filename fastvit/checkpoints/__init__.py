"""Checkpoints of other ViT implementations, in and out of fastvit (whose names are timm's).

Layouts, one module each: :mod:`.timm`, :mod:`.torchvision`, :mod:`.huggingface`
(transformers 4.x and 5.x ViT / DeiT; it dispatches DINOv2, CLIP and SigLIP to
:mod:`.hf_dinov2`, :mod:`.hf_clip`, :mod:`.hf_siglip`), :mod:`.open_clip`,
:mod:`.big_vision` (Google's .npz). :mod:`.files` reads files, :mod:`.options`
checks what a checkpoint's keys reveal (registers, LayerScale, qk-norm, ...)
against the model, :mod:`.common` fits converted weights to a model, :mod:`.load`
ties them together in :func:`load_checkpoint`.

>>> model = fastvit.create_model("vit_base_patch16_384", pretrained="vit_b16_224.safetensors")
>>> model = fastvit.from_hf(transformers.ViTForImageClassification.from_pretrained(path))
>>> safetensors.torch.save_file(fastvit.to_hf_state_dict(model), "model.safetensors")
"""

from .common import CheckpointKeyError, fit_state_dict
from .files import read_checkpoint
from .huggingface import convert_hf_state_dict, from_hf, to_hf_config, to_hf_state_dict
from .load import LAYOUTS, convert_state_dict, detect_layout, load_checkpoint
from .timm import from_timm, to_timm_state_dict
from .torchvision import from_torchvision, to_torchvision_state_dict

__all__ = [
    "LAYOUTS",
    "CheckpointKeyError",
    "convert_hf_state_dict",
    "convert_state_dict",
    "detect_layout",
    "fit_state_dict",
    "from_hf",
    "from_timm",
    "from_torchvision",
    "load_checkpoint",
    "read_checkpoint",
    "to_hf_config",
    "to_hf_state_dict",
    "to_timm_state_dict",
    "to_torchvision_state_dict",
]
