"""Hugging Face ``SiglipVisionModel`` (and the vision tower of a ``SiglipModel``): names, config, export.

SigLIP's image tower has no class token and pools with a multi-head attention
probe (MAP). HF's ``last_hidden_state`` is after ``post_layernorm`` (fastvit's
final ``norm``), and ``pooler_output`` comes from the head: ``head.probe`` is
timm's ``attn_pool.latent``; the ``nn.MultiheadAttention``'s packed
``in_proj`` splits into ``attn_pool.q`` (first third) and ``attn_pool.kv``
(key, then value); ``out_proj`` -> ``attn_pool.proj``; ``head.layernorm`` and
``head.mlp`` -> ``attn_pool.norm`` / ``attn_pool.mlp``. The activation is
``gelu_pytorch_tanh`` (fastvit's ``gelu_tanh``), in the blocks and the head alike.
"""

from __future__ import annotations

import torch

from .common import Rule, rename
from .hf_clip import LAYER_RULES, common_fields, encoder_config, encoder_state_dict, strip_vision_prefix, vision_config

MODEL_TYPES = ("siglip_vision_model", "siglip")
_RULES: list[Rule] = LAYER_RULES + [
    (r"head\.probe", "attn_pool.latent", None),
    (r"head\.attention\.out_proj\.(weight|bias)", r"attn_pool.proj.\1", None),
    (r"head\.layernorm\.(weight|bias)", r"attn_pool.norm.\1", None),
    (r"head\.mlp\.(fc[12])\.(weight|bias)", r"attn_pool.mlp.\1.\2", None),
]


def is_siglip(keys) -> bool:
    return any(k.endswith(("head.probe", "embeddings.patch_embedding.weight")) for k in keys) and \
        not any(k.endswith("embeddings.class_embedding") for k in keys)


def convert(state_dict: dict) -> tuple[dict, dict]:
    sd = strip_vision_prefix(state_dict)
    out = {}
    for kind in ("weight", "bias"):
        packed = sd.pop(f"head.attention.in_proj_{kind}", None)
        if packed is None:
            continue
        if packed.ndim < 1 or packed.shape[0] % 3:
            raise ValueError(f"head.attention.in_proj_{kind}: shape {tuple(packed.shape)} is not three equal parts")
        d = packed.shape[0] // 3
        out[f"attn_pool.q.{kind}"], out[f"attn_pool.kv.{kind}"] = packed[:d], packed[d:]
    renamed, unknown = rename(sd, _RULES)
    return {**renamed, **out}, unknown


def config_fields(c: dict, what: str) -> dict:
    vc = vision_config(c)
    fields = common_fields(vc, what, "gelu_pytorch_tanh", 1e-6)
    fields.update(class_token=False, global_pool="map" if vc.get("vision_use_head", True) else "", num_classes=0)
    return fields


# -- export -------------------------------------------------------------------------------


def check_exportable(model) -> list[str]:
    from .options import final_norm_place, has_layer_scale

    cfg, problems = model.cfg, []
    if cfg.class_token or cfg.global_pool not in ("map", ""):
        problems.append("SigLIP has no class token and pools with its attention probe (global_pool='map') or not at all")
    if cfg.pre_norm or not cfg.use_patch_bias or final_norm_place(cfg) != "norm" or not cfg.qkv_bias:
        problems.append("SigLIP has a patch bias, qkv bias, no pre-norm and a final norm before pooling")
    if cfg.reg_tokens or has_layer_scale(cfg) or cfg.qk_norm or cfg.mlp_layer != "mlp":
        problems.append("SigLIP has no registers, LayerScale, qk-norm or gated MLP")
    if cfg.num_classes or cfg.representation_size or cfg.hybrid_layers is not None:
        problems.append("SiglipVisionModel has no classifier head, pre-logits layer or hybrid stem")
    return problems


def to_config(model) -> dict:
    kw = encoder_config(model.cfg)
    kw.update(model_type="siglip_vision_model", vision_use_head=model.cfg.global_pool == "map",
              architectures=["SiglipVisionModel"])
    return kw


def to_state_dict(model) -> dict:
    """fastvit weights under ``SiglipVisionModel`` names."""
    cfg = model.cfg
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = encoder_state_dict(sd, cfg.depth)
    out["embeddings.patch_embedding.bias"] = sd["patch_embed.proj.bias"]
    if cfg.global_pool == "map":
        out["head.probe"] = sd["attn_pool.latent"]
        for kind in ("weight", "bias"):
            out[f"head.attention.in_proj_{kind}"] = torch.cat([sd[f"attn_pool.q.{kind}"], sd[f"attn_pool.kv.{kind}"]], dim=0)
            out[f"head.attention.out_proj.{kind}"] = sd[f"attn_pool.proj.{kind}"]
            out[f"head.layernorm.{kind}"] = sd[f"attn_pool.norm.{kind}"]
            for n in ("fc1", "fc2"):
                out[f"head.mlp.{n}.{kind}"] = sd[f"attn_pool.mlp.{n}.{kind}"]
    return out
