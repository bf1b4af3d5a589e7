"""Writing test checkpoints in other libraries' layouts (shared by the main and interop tests)."""

from __future__ import annotations

import torch


def open_clip_state_dict(sd: dict, depth: int, text_tower: bool = False) -> dict:
    """An OpenAI / OpenCLIP ``visual.*`` state dict from a CLIP tower's timm/fastvit names
    (``text_tower`` adds a few text-model entries, which a loader must leave out)."""
    out = {"visual.conv1.weight": sd["patch_embed.proj.weight"], "visual.class_embedding": sd["cls_token"].reshape(-1),
           "visual.positional_embedding": sd["pos_embed"][0], "visual.proj": sd["head.weight"].t().contiguous(),
           "logit_scale": torch.ones(())}
    if text_tower:
        out.update({"token_embedding.weight": torch.zeros(10, 8), "transformer.resblocks.0.ln_1.weight": torch.ones(8),
                    "ln_final.weight": torch.ones(8)})
    for kind in ("weight", "bias"):
        out[f"visual.ln_pre.{kind}"], out[f"visual.ln_post.{kind}"] = sd[f"norm_pre.{kind}"], sd[f"norm.{kind}"]
        for i in range(depth):
            b, o = f"blocks.{i}.", f"visual.transformer.resblocks.{i}."
            out[f"{o}ln_1.{kind}"], out[f"{o}ln_2.{kind}"] = sd[f"{b}norm1.{kind}"], sd[f"{b}norm2.{kind}"]
            out[f"{o}attn.in_proj_{kind}"], out[f"{o}attn.out_proj.{kind}"] = sd[f"{b}attn.qkv.{kind}"], sd[f"{b}attn.proj.{kind}"]
            out[f"{o}mlp.c_fc.{kind}"], out[f"{o}mlp.c_proj.{kind}"] = sd[f"{b}mlp.fc1.{kind}"], sd[f"{b}mlp.fc2.{kind}"]
    return out
