"""Hugging Face ``CLIPVisionModel`` / ``CLIPVisionModelWithProjection`` (and the vision
tower of a whole ``CLIPModel``): names, config, export.

CLIP's image tower is timm's ``pre_norm`` ViT: a LayerNorm after the position
embedding (``pre_layrnorm`` -> ``norm_pre``), a patch embedding without bias,
eps 1e-5, quick-GELU for OpenAI's weights. HF's ``last_hidden_state`` is the
encoder output *before* ``post_layernorm``; its ``pooler_output`` is
``post_layernorm(class token)``. fastvit (as timm) applies ``post_layernorm`` as
its final norm to every token, so ``forward_features`` gives
``post_layernorm(last_hidden_state)`` and the pooled features are
``pooler_output``. ``visual_projection`` (no bias) becomes the head, with a zero
bias; a text tower in the same file is left out.
"""

from __future__ import annotations

import re

import torch

from .common import Rule, mlp_ratio_for, rename
from .hf_common import HF_ACT_NAMES, hf_activation, square_patch

MODEL_TYPES = ("clip_vision_model", "clip")
_L = r"encoder\.layers\.(\d+)\."
LAYER_RULES: list[Rule] = [  # CLIP and SigLIP encoder layers
    (_L + r"self_attn\.([qkv])_proj\.(weight|bias)", r"blocks.\1.attn.qkv.\3#\2", None),
    (_L + r"self_attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2", None),
    (_L + r"layer_norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3", None),
    (_L + r"mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3", None),
    (r"post_layernorm\.(weight|bias)", r"norm.\1", None),
    (r"embeddings\.patch_embedding\.(weight|bias)", r"patch_embed.proj.\1", None),
    (r"embeddings\.position_embedding\.weight", "pos_embed", lambda t: t.unsqueeze(0)),
]
_RULES: list[Rule] = LAYER_RULES + [
    (r"embeddings\.class_embedding", "cls_token", lambda t: t.reshape(1, 1, -1)),
    (r"pre_layrnorm\.(weight|bias)", r"norm_pre.\1", None),
    (r"visual_projection\.weight", "head.weight", None),
]
_TEXT = re.compile(r"(?:text_model\.|text_projection\.|logit_scale$|logit_bias$)")


def is_clip(keys) -> bool:
    return any(k.endswith("embeddings.class_embedding") for k in keys)


def strip_vision_prefix(state_dict: dict) -> dict:
    """Without ``vision_model.``; a whole CLIP/SigLIP model's text tower dropped."""
    return {(k[len("vision_model."):] if k.startswith("vision_model.") else k): v
            for k, v in state_dict.items() if not _TEXT.match(k) and not k.endswith("embeddings.position_ids")}


def convert(state_dict: dict) -> tuple[dict, dict]:
    out, unknown = rename(strip_vision_prefix(state_dict), _RULES)
    w = out.get("head.weight")
    if isinstance(w, torch.Tensor) and w.ndim == 2:
        out["head.bias"] = w.new_zeros(w.shape[0])
    return out, unknown


def vision_config(c: dict) -> dict:
    """The vision part of a CLIP/SigLIP config dict (a whole model's ``vision_config``)."""
    return c.get("vision_config") or {} if c.get("model_type") in ("clip", "siglip") else c


def common_fields(c: dict, what: str, default_act: str, default_eps: float) -> dict:
    dim = c.get("hidden_size", 768)
    return dict(embed_dim=dim, depth=c.get("num_hidden_layers", 12), num_heads=c.get("num_attention_heads", 12),
                mlp_ratio=mlp_ratio_for(dim, c.get("intermediate_size", 3072)), img_size=c.get("image_size", 224),
                patch_size=square_patch(c.get("patch_size", 16), what), in_chans=c.get("num_channels", 3),
                norm_eps=c.get("layer_norm_eps", default_eps), act_layer=hf_activation(c.get("hidden_act", default_act), what),
                attn_drop_rate=c.get("attention_dropout", 0.0) or 0.0)


def config_fields(c: dict, what: str) -> dict:
    arch = " ".join(c.get("architectures") or [])
    projection = "WithProjection" in arch or c.get("model_type") == "clip"
    vc = vision_config(c)
    fields = common_fields(vc, what, "quick_gelu", 1e-5)
    dim = c.get("projection_dim", vc.get("projection_dim", 512))
    fields.update(pre_norm=True, class_token=True, global_pool="token")
    if arch or c.get("model_type") == "clip":
        fields["num_classes"] = dim if projection else 0
    return fields


# -- export -------------------------------------------------------------------------------


def check_exportable(model) -> list[str]:
    from .options import final_norm_place, has_layer_scale

    cfg, problems = model.cfg, []
    if not cfg.class_token or cfg.global_pool != "token" or cfg.distilled:
        problems.append("CLIP pools its class token (no distillation token)")
    if not cfg.pre_norm or cfg.use_patch_bias or final_norm_place(cfg) != "norm" or not cfg.qkv_bias:
        problems.append("CLIP has a pre-norm, no patch bias, qkv bias and a final norm before pooling")
    if cfg.reg_tokens or has_layer_scale(cfg) or cfg.qk_norm or cfg.mlp_layer != "mlp":
        problems.append("CLIP has no registers, LayerScale, qk-norm or gated MLP")
    if cfg.representation_size or cfg.hybrid_layers is not None:
        problems.append("CLIP has no pre-logits layer or hybrid stem")
    if cfg.num_classes and bool(model.head.bias.detach().abs().max() > 0):
        problems.append("visual_projection has no bias, the model's head has a nonzero one")
    return problems


def encoder_config(cfg) -> dict:
    return dict(hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.mlp_hidden_dim, hidden_act=HF_ACT_NAMES[cfg.act_layer],
                layer_norm_eps=cfg.norm_eps, image_size=cfg.img_size[0], patch_size=cfg.patch_size,
                num_channels=cfg.in_chans, attention_dropout=cfg.attn_drop_rate)


def to_config(model) -> dict:
    cfg = model.cfg
    kw = encoder_config(cfg)
    kw.update(model_type="clip_vision_model",
              architectures=["CLIPVisionModelWithProjection" if cfg.num_classes else "CLIPVisionModel"])
    if cfg.num_classes:
        kw["projection_dim"] = cfg.num_classes
    return kw


def encoder_state_dict(sd: dict, depth: int) -> dict:
    out = {"embeddings.patch_embedding.weight": sd["patch_embed.proj.weight"],
           "embeddings.position_embedding.weight": sd["pos_embed"][0],
           "post_layernorm.weight": sd["norm.weight"], "post_layernorm.bias": sd["norm.bias"]}
    for i in range(depth):
        b, o = f"blocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            for part, t in zip("qkv", sd[f"{b}attn.qkv.{kind}"].chunk(3, dim=0)):
                out[f"{o}self_attn.{part}_proj.{kind}"] = t
            out[f"{o}self_attn.out_proj.{kind}"] = sd[f"{b}attn.proj.{kind}"]
            for n in ("1", "2"):
                out[f"{o}layer_norm{n}.{kind}"] = sd[f"{b}norm{n}.{kind}"]
            for n in ("fc1", "fc2"):
                out[f"{o}mlp.{n}.{kind}"] = sd[f"{b}mlp.{n}.{kind}"]
    return out


def to_state_dict(model) -> dict:
    """fastvit weights under ``CLIPVisionModel`` names (``CLIPVisionModelWithProjection`` with a head)."""

    cfg = model.cfg
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    if cfg.no_embed_class:
        sd["pos_embed"] = torch.cat([sd["pos_embed"].new_zeros(1, 1, cfg.embed_dim), sd["pos_embed"]], dim=1)
    out = encoder_state_dict(sd, cfg.depth)
    out.update({"embeddings.class_embedding": sd["cls_token"].reshape(-1),
                "pre_layrnorm.weight": sd["norm_pre.weight"], "pre_layrnorm.bias": sd["norm_pre.bias"]})
    if cfg.num_classes:  # transformers 5.x: the projection class nests the tower, CLIPVisionModel does not
        out = {f"vision_model.{k}": v for k, v in out.items()}
        out["visual_projection.weight"] = sd["head.weight"]
    return out
