"""fastvit: a Vision Transformer whose hot paths are fused Triton kernels.

>>> import fastvit, torch
>>> model = fastvit.create_model("vit_tiny_patch16_224").eval()
>>> logits = model(torch.randn(2, 3, 224, 224))
>>> tokens = model.forward_features(torch.randn(2, 3, 224, 224))   # (2, 197, 192)
"""

from .checkpoints import from_hf, from_timm, from_torchvision, load_checkpoint, to_hf_state_dict, to_timm_state_dict
from .compiling import compile
from .config import ViTConfig
from .dispatch import prepare
from .factory import create_model
from .layers import resample_pos_embed
from .model import Block, VisionTransformer
from .presets import PRESETS, get_config, list_models

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
    "load_checkpoint",
    "prepare",
    "resample_pos_embed",
    "to_hf_state_dict",
    "to_timm_state_dict",
]
