"""timm's NaFlexVit family (native aspect ratio and resolution) and packed batches of images.

>>> from fastvit.naflex import NaFlexVit, pack
>>> model = fastvit.create_model("naflexvit_base_patch16_gap")
>>> batch = pack([img_a, img_b, img_c], patch_size=16)   # (C, H, W) tensors of different sizes
>>> logits = model(batch)                                 # one row per image, in order

See docs/naflex.md. Only the presets load with ``import fastvit``; the model and ``pack`` load
on first use.
"""

import importlib

from .config import NAFLEX_PRESETS, NaFlexConfig, get_naflex_config, list_naflex_models

_LAZY = {"NaFlexVit": ".model", "Packed": ".packing", "pack": ".packing", "packed_from_padded": ".packing",
         "size_for_max_patches": ".packing"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_naflex(name: str, **overrides):
    """A randomly initialised NaFlexVit preset (``fastvit.create_model`` adds tags and weights)."""
    from .model import NaFlexVit

    return NaFlexVit(get_naflex_config(name, **overrides))


__all__ = ["NAFLEX_PRESETS", "NaFlexConfig", "NaFlexVit", "Packed", "create_naflex", "get_naflex_config",
           "list_naflex_models", "pack", "packed_from_padded", "size_for_max_patches"]
