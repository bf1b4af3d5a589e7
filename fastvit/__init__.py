"""fastvit: a Vision Transformer whose hot paths are fused Triton kernels.

>>> import fastvit, torch
>>> model = fastvit.create_model("vit_tiny_patch16_224").eval()
>>> logits = model(torch.randn(2, 3, 224, 224))
>>> tokens = model.forward_features(torch.randn(2, 3, 224, 224))   # (2, 197, 192)

timm's names, tags and Hub loading: ``fastvit.create_model("vit_base_patch16_224.augreg2_in21k_ft_in1k",
pretrained=True)``; ``fastvit.list_pretrained("vit_base*")``; ``fastvit.save_pretrained(model, folder)``.
"""

from .checkpoints import from_hf, from_timm, from_torchvision, load_checkpoint, to_hf_state_dict, to_timm_state_dict
from .checkpoints import to_hf_config
from .checkpoints.pretrained_cfgs import list_pretrained
from .compiling import compile
from .config import ViTConfig
from .dispatch import prepare
from .factory import create_model, get_config, list_models, push_to_hub, save_pretrained
from .layers import resample_pos_embed
from .model import Block, VisionTransformer
from .presets import PRESETS

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Block",
    "ViTConfig",
    "VisionTransformer",
    "compile",
    "create_model",
    "from_hf",
    "from_timm",
    "from_torchvision",
    "get_config",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "prepare",
    "push_to_hub",
    "resample_pos_embed",
    "save_pretrained",
    "to_hf_config",
    "to_hf_state_dict",
    "to_timm_state_dict",
]
