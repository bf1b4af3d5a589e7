"""What every Hugging Face family module shares: transformers' activation names and the square
patch rule. A leaf: the family modules (:mod:`.hf_dinov2`, :mod:`.hf_clip`, :mod:`.hf_siglip`) and
:mod:`.hf_config` import it, it imports none of them."""

from __future__ import annotations

from .common import config_mismatch

# transformers' hidden_act names -> fastvit's act_layer ("gelu_new" is the same tanh formula)
HF_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
                  "silu": "silu", "swish": "silu"}
HF_ACT_NAMES = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu"}


def hf_activation(name, what: str) -> str:
    """fastvit's act_layer for a transformers ``hidden_act``; ``ValueError`` for one fastvit lacks."""
    if name not in HF_ACTIVATIONS:
        raise config_mismatch(what, f"hidden_act={name!r} (fastvit's MLP takes {sorted(HF_ACTIVATIONS)})")
    return HF_ACTIVATIONS[name]


def square_patch(patch, what: str) -> int:
    """A config's patch_size (an int or a square pair) as one int; ``ValueError`` for a non-square one."""
    if isinstance(patch, int):
        return patch
    patch = tuple(patch)
    if len(patch) != 2 or patch[0] != patch[1]:
        raise config_mismatch(what, f"non-square patch_size={list(patch)}")
    return patch[0]
