"""Checkpoint layouts of other ViT implementations, converted to fastvit's (timm's) names."""

from __future__ import annotations

import re

import torch

# Hugging Face transformers ViT, both the 4.x names (encoder.layer.N.attention.attention.query)
# and the 5.x names (layers.N.attention.q_proj). Values: fastvit name, or a (name, part) pair
# for the q/k/v pieces that fastvit keeps packed in one qkv projection.
_HF_RULES = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.distillation_token", "dist_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)", (r"blocks.\1.attn.qkv.\3", r"\2")),
    (r"layers\.(\d+)\.attention\.(q|k|v)_proj\.(weight|bias)", (r"blocks.\1.attn.qkv.\3", r"\2")),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"layers\.(\d+)\.attention\.o_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]
_QKV_ORDER = {"query": 0, "key": 1, "value": 2, "q": 0, "k": 1, "v": 2}


def convert_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``ViTModel`` / ``ViTForImageClassification`` weights -> fastvit names.

    The separate query/key/value projections are concatenated into ``qkv``.
    Raises ``KeyError`` naming any key no rule matches (the pooler of a bare
    ``ViTModel`` is not part of a fastvit model and is skipped).
    """
    out, qkv_parts, unknown = {}, {}, []
    for key, value in state_dict.items():
        key = re.sub(r"^(vit|deit)\.", "", key)
        if key.startswith("pooler."):
            continue
        for pattern, target in _HF_RULES:
            m = re.fullmatch(pattern, key)
            if m is None:
                continue
            if isinstance(target, tuple):
                name, part = m.expand(target[0]), m.expand(target[1])
                qkv_parts.setdefault(name, [None] * 3)[_QKV_ORDER[part]] = value
            else:
                out[m.expand(target)] = value
            break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"not a Hugging Face ViT layout: no rule for keys {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    for name, parts in qkv_parts.items():
        if any(p is None for p in parts):
            raise KeyError(f"{name}: query, key and value must all be present")
        out[name] = torch.cat(parts, dim=0)
    return out
