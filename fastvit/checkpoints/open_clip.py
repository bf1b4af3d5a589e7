"""OpenCLIP / OpenAI CLIP image towers (``visual.*`` keys of a whole CLIP checkpoint).

The tower is timm's ``pre_norm`` ViT under other names: ``conv1`` (no bias) is
the patch embedding, ``class_embedding`` / ``positional_embedding`` the class
token and positions (without the batch axis), ``ln_pre`` / ``ln_post`` the
pre-norm and final norm, ``transformer.resblocks.N`` the blocks with packed
``attn.in_proj`` (q, k, v, as fastvit's ``qkv``), ``mlp.c_fc`` / ``mlp.c_proj``,
and LayerScale ``ls_1`` / ``ls_2`` where a model has it. ``proj`` (width x
embedding, applied as ``x @ proj``) becomes the head, transposed, with a zero
bias. The text tower is left out. A tower with a timm trunk (``visual.trunk.*``)
already has timm names.

The activation is not in the weights: OpenAI's models use quick-GELU
(``vit_base_patch16_clip_quickgelu_224``, ``act_layer="quick_gelu"``), LAION's GELU.
"""

from __future__ import annotations

import torch

from .common import Rule, rename

_B = r"transformer\.resblocks\.(\d+)\."
_RULES: list[Rule] = [
    (r"conv1\.(weight|bias)", r"patch_embed.proj.\1", None),
    (r"class_embedding", "cls_token", lambda t: t.reshape(1, 1, -1)),
    (r"positional_embedding", "pos_embed", lambda t: t.unsqueeze(0) if t.ndim == 2 else t),
    (r"ln_pre\.(weight|bias)", r"norm_pre.\1", None),
    (r"ln_post\.(weight|bias)", r"norm.\1", None),
    (_B + r"ln_([12])\.(weight|bias)", r"blocks.\1.norm\2.\3", None),
    (_B + r"attn\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2", None),
    (_B + r"attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2", None),
    (_B + r"mlp\.c_fc\.(weight|bias)", r"blocks.\1.mlp.fc1.\2", None),
    (_B + r"mlp\.c_proj\.(weight|bias)", r"blocks.\1.mlp.fc2.\2", None),
    (_B + r"ls_([12])\.gamma", r"blocks.\1.ls\2.gamma", None),
    (r"proj", "head.weight", lambda t: t.t()),
]
SIGNATURE = r"visual\.(?:conv1\.weight|class_embedding|transformer\.resblocks\.\d+\..*|trunk\..*)"


def convert_open_clip(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``visual.*`` names -> fastvit names; text-tower keys are dropped, other unknown ones returned."""
    visual = {k[len("visual."):]: v for k, v in state_dict.items() if k.startswith("visual.")}
    if any(k.startswith("trunk.") for k in visual):  # a timm trunk: timm names already
        return {k[len("trunk."):]: v for k, v in visual.items() if k.startswith("trunk.")}, \
            {f"visual.{k}": v for k, v in visual.items() if not k.startswith("trunk.")}
    out, unknown = rename(visual, _RULES)
    head = out.get("head.weight")
    if isinstance(head, torch.Tensor) and head.ndim == 2:
        out["head.bias"] = head.new_zeros(head.shape[0])
    return out, {f"visual.{k}": v for k, v in unknown.items()}

