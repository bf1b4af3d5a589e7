"""Building blocks of the Vision Transformer, each with interchangeable implementations."""

from .attention import BACKENDS, Attention, backend_status, get_attention_backend
from .drop import DropPath, drop_path
from .embed import RESAMPLE_CONVENTIONS, PatchEmbed, patchify, resample_options, resample_pos_embed
from .glu import GluMlp
from .impls import LINEAR_IMPLS, NORM_IMPLS, mlp_layer, norm_layer
from .layer_scale import LayerScale
from .linear import ResidualLinear
from .mlp import Mlp, TritonMlp
from .pool import AttentionPoolLatent

__all__ = [
    "Attention", "AttentionPoolLatent", "BACKENDS", "GluMlp", "LayerScale", "DropPath", "LINEAR_IMPLS", "Mlp", "NORM_IMPLS", "PatchEmbed", "ResidualLinear", "TritonMlp",
    "backend_status", "drop_path", "get_attention_backend", "mlp_layer", "norm_layer",
    "patchify", "RESAMPLE_CONVENTIONS", "resample_options", "resample_pos_embed",
]
