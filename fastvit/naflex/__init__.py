"""timm's NaFlexVit family (native aspect ratio and resolution) and packed batches of images.

>>> from fastvit.naflex import NaFlexVit, pack
>>> model = fastvit.create_model("naflexvit_base_patch16_gap")
>>> batch = pack([img_a, img_b, img_c], patch_size=16)   # (C, H, W) tensors of different sizes
>>> logits = model(batch)                                 # one row per image, in order

See docs/naflex.md.
"""

from .config import NAFLEX_PRESETS, NaFlexConfig, get_naflex_config, list_naflex_models
from .model import NaFlexVit
from .pack import Packed, pack, packed_from_padded, size_for_max_patches


def create_naflex(name: str, **overrides) -> NaFlexVit:
    """A randomly initialised NaFlexVit preset (``fastvit.create_model`` adds tags and weights)."""
    return NaFlexVit(get_naflex_config(name, **overrides))


__all__ = ["NAFLEX_PRESETS", "NaFlexConfig", "NaFlexVit", "Packed", "create_naflex", "get_naflex_config",
           "list_naflex_models", "pack", "packed_from_padded", "size_for_max_patches"]
