"""Hugging Face transformers' DINOv3 (``DINOv3ViTModel``, ``model_type="dinov3_vit"``) in and out of
fastvit's :class:`~fastvit.eva.Eva`.

The model is timm's DINOv3 under other names: ``embeddings.register_tokens`` (``reg_token``),
separate ``q_proj`` / ``k_proj`` / ``v_proj`` (one ``qkv`` without bias plus ``q_bias`` / ``v_bias``),
``o_proj`` (``attn.proj``), ``layer_scale1.lambda1`` (``gamma_1``), ``gate_proj`` / ``up_proj`` /
``down_proj`` (SwiGLU's ``fc1_g`` / ``fc1_x`` / ``fc2``; the plain MLP's ``fc1`` / ``fc2``). The
converted model pools the class token after the final norm, so ``model(x)`` (``num_classes=0``) is
transformers' ``pooler_output`` and ``forward_features(x)`` its ``last_hidden_state``, at any
image size (``dynamic_img_size``: the rotary table follows the input, as transformers').
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..eva import Eva, EvaConfig
from .common import mlp_ratio_for
from .files import read_checkpoint

MODEL_TYPE = "dinov3_vit"
_LAYER = "model.layer."


def dinov3_config_fields(c: dict) -> dict:
    """EvaConfig arguments for a transformers ``DINOv3ViTConfig`` dict (``config.json``)."""
    if c.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        raise ValueError(f"expected a {MODEL_TYPE!r} config, got model_type {c.get('model_type')!r}")
    if c.get("key_bias"):
        raise ValueError("a DINOv3 config with key_bias=True has no timm / fastvit Eva counterpart (k has no bias there)")
    if bool(c.get("query_bias", True)) != bool(c.get("value_bias", True)):
        raise ValueError("query_bias and value_bias must agree (timm's Eva has both q and v biases or neither)")
    if not c.get("proj_bias", True) or not c.get("mlp_bias", True):
        raise ValueError("proj_bias / mlp_bias False have no timm / fastvit Eva counterpart")
    gated = bool(c.get("use_gated_mlp", False))
    act = c.get("hidden_act", "gelu")
    if act != ("silu" if gated else "gelu"):
        raise ValueError(f"hidden_act {act!r} with use_gated_mlp={gated}: fastvit's Eva takes silu (gated) or gelu")
    dim, width = c.get("hidden_size", 384), c.get("intermediate_size", 1536)
    patch, img = c.get("patch_size", 16), c.get("image_size", 224)
    if not isinstance(patch, int):
        if len(set(patch)) != 1:
            raise ValueError(f"fastvit's Eva takes square patches, got patch_size {patch}")
        patch = patch[0]
    mlp = dict(swiglu_mlp=True, swiglu_align_to=width) if gated else {}
    return dict(img_size=img if isinstance(img, int) else tuple(img), patch_size=patch, in_chans=c.get("num_channels", 3),
                num_classes=0, global_pool="token", embed_dim=dim, depth=c.get("num_hidden_layers", 12),
                num_heads=c.get("num_attention_heads", 6), qkv_bias=bool(c.get("query_bias", True)),
                mlp_ratio=mlp_ratio_for(dim, width), norm_eps=c.get("layer_norm_eps", 1e-5),
                init_values=c.get("layerscale_value", 1.0), num_reg_tokens=c.get("num_register_tokens", 0),
                use_abs_pos_emb=False, use_rot_pos_emb=True, rope_type="dinov3", rope_temperature=c.get("rope_theta", 100.0),
                rope_rotate_half=True, use_fc_norm=False, dynamic_img_size=True, **mlp)


def convert_hf_dinov3_state_dict(sd: dict) -> dict[str, torch.Tensor]:
    """transformers DINOv3ViT names -> timm's Eva names (the mask token, pretraining only, dropped)."""
    out, layers = {}, {}
    for k, v in sd.items():
        if k.startswith("dinov3."):  # a task model's backbone prefix
            k = k[len("dinov3."):]
        if k == "embeddings.mask_token" or k.startswith("rope_embeddings.") or (
                k == "embeddings.register_tokens" and v.numel() == 0):  # no registers: an empty (1, 0, D)
            continue
        simple = {"embeddings.cls_token": "cls_token", "embeddings.register_tokens": "reg_token",
                  "embeddings.patch_embeddings.weight": "patch_embed.proj.weight",
                  "embeddings.patch_embeddings.bias": "patch_embed.proj.bias", "norm.weight": "norm.weight",
                  "norm.bias": "norm.bias"}
        if k in simple:
            out[simple[k]] = v
            continue
        if k.startswith("layer."):  # the file layout save_pretrained writes
            k = "model." + k
        if not k.startswith(_LAYER):
            raise KeyError(f"unexpected DINOv3 key {k!r}")
        i, rest = k[len(_LAYER):].split(".", 1)
        layers.setdefault(int(i), {})[rest] = v
    for i, p in sorted(layers.items()):
        b = f"blocks.{i}."
        gated = "mlp.gate_proj.weight" in p
        out[b + "attn.qkv.weight"] = torch.cat([p.pop(f"attention.{n}_proj.weight") for n in "qkv"])
        if "attention.k_proj.bias" in p:
            kb = p.pop("attention.k_proj.bias")
            if kb.abs().max() > 0:
                raise ValueError(f"layer {i}: a non-zero key bias has no timm / fastvit Eva counterpart")
        if "attention.q_proj.bias" in p:
            out[b + "attn.q_bias"], out[b + "attn.v_bias"] = p.pop("attention.q_proj.bias"), p.pop("attention.v_proj.bias")
        names = {"norm1": "norm1", "norm2": "norm2", "attention.o_proj": "attn.proj", "mlp.down_proj": "mlp.fc2",
                 "mlp.gate_proj": "mlp.fc1_g", "mlp.up_proj": "mlp.fc1_x" if gated else "mlp.fc1"}
        for key, v in p.items():
            if key == "layer_scale1.lambda1":
                out[b + "gamma_1"] = v
                continue
            if key == "layer_scale2.lambda1":
                out[b + "gamma_2"] = v
                continue
            mod, kind = key.rsplit(".", 1)
            if mod not in names:
                raise KeyError(f"unexpected DINOv3 key {_LAYER}{i}.{key!r}")
            out[f"{b}{names[mod]}.{kind}"] = v
    return out


def _read_dir(path) -> tuple[dict, dict]:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json (a save_pretrained directory has one)")
    return json.loads(cfg_file.read_text()), read_checkpoint(path)


def from_hf_dinov3(source, **impls) -> Eva:
    """A fastvit :class:`Eva` from transformers' ``DINOv3ViTModel`` (in memory) or the directory its
    ``save_pretrained`` wrote; ``impls``: ``attn_impl`` / ``norm_impl`` / ``linear_impl``."""
    if isinstance(source, (str, os.PathLike)):
        config, sd = _read_dir(source)
    elif isinstance(source, nn.Module) and hasattr(source, "config"):
        config, sd = source.config.to_dict(), source.state_dict()
    else:
        raise TypeError(f"expected a transformers DINOv3ViTModel or a save_pretrained directory, got {type(source).__name__}")
    model = Eva(EvaConfig(**dinov3_config_fields(config), **impls))
    model.load_state_dict(convert_hf_dinov3_state_dict(sd), strict=True)
    return model.eval()


def _check_exportable(model: Eva) -> None:
    c = model.cfg
    wrong = [(name, want) for name, want in (("rope_type", "dinov3"), ("use_rot_pos_emb", True), ("use_abs_pos_emb", False),
                                             ("class_token", True), ("attn_type", "eva"), ("qkv_fused", True),
                                             ("scale_attn_inner", False), ("scale_mlp", False), ("use_post_norm", False),
                                             ("use_pre_transformer_norm", False), ("rope_rotate_half", True))
             if getattr(c, name) != want]
    if wrong or not c.final_norm or c.fc_norm or c.rope_grid_indexing != "ij":
        raise ValueError(f"only DINOv3-shaped Eva models export to transformers' DINOv3ViTModel; this one has "
                         f"{', '.join(f'{n}={getattr(c, n)!r} (needs {w!r})' for n, w in wrong) or 'other norms / indexing'}")


def to_hf_dinov3_config(model: Eva) -> dict:
    """transformers ``DINOv3ViTConfig`` fields for a DINOv3-shaped fastvit Eva."""
    _check_exportable(model)
    c, mlp = model.cfg, model.blocks[0].mlp
    gated = hasattr(mlp, "fc1_g") or c.swiglu_mlp
    if c.swiglu_mlp and not hasattr(mlp, "fc1_g"):
        raise ValueError("a packed SwiGLU (fc1 holding gate and value) exports only after splitting; build with swiglu_align_to")
    width = mlp.fc1_g.out_features if gated else mlp.fc1.out_features
    return dict(model_type=MODEL_TYPE, patch_size=c.patch_size, hidden_size=c.embed_dim, intermediate_size=width,
                num_hidden_layers=len(model.blocks), num_attention_heads=c.num_heads,
                hidden_act="silu" if gated else "gelu", layer_norm_eps=float(c.norm_eps), rope_theta=float(c.rope_temperature),
                image_size=c.img_size[0] if c.img_size[0] == c.img_size[1] else list(c.img_size),
                num_channels=c.in_chans, query_bias=c.qkv_bias, key_bias=False, value_bias=c.qkv_bias, proj_bias=True,
                mlp_bias=True, layerscale_value=float(c.init_values) if c.init_values is not None else 1.0,
                use_gated_mlp=gated, num_register_tokens=c.num_reg_tokens)


def to_hf_dinov3_state_dict(model: Eva, file_layout: bool = False) -> dict[str, torch.Tensor]:
    """fastvit Eva weights under transformers' DINOv3ViTModel names (copies; a zero mask token,
    LayerScale of ones where the model has none): its module names (``model.layer.N``, what
    ``load_state_dict`` and ``from_pretrained`` take), or with ``file_layout`` the names
    ``save_pretrained`` writes (``layer.N``)."""
    cfg = to_hf_dinov3_config(model)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d = model.cfg.embed_dim
    out = {"embeddings.cls_token": sd.pop("cls_token"), "embeddings.mask_token": torch.zeros(1, 1, d),
           "embeddings.patch_embeddings.weight": sd.pop("patch_embed.proj.weight"),
           "embeddings.patch_embeddings.bias": sd.pop("patch_embed.proj.bias"),
           "norm.weight": sd.pop("norm.weight"), "norm.bias": sd.pop("norm.bias")}
    out["embeddings.register_tokens"] = sd.pop("reg_token") if "reg_token" in sd else torch.zeros(1, 0, d)
    names = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.o_proj", "mlp.fc2": "mlp.down_proj",
             "mlp.fc1_g": "mlp.gate_proj", "mlp.fc1_x": "mlp.up_proj", "mlp.fc1": "mlp.up_proj"}
    for i in range(cfg["num_hidden_layers"]):
        b, h = f"blocks.{i}.", f"{_LAYER}{i}."
        for n, w in zip("qkv", sd.pop(b + "attn.qkv.weight").chunk(3)):
            out[f"{h}attention.{n}_proj.weight"] = w
        if b + "attn.q_bias" in sd:
            out[h + "attention.q_proj.bias"], out[h + "attention.v_proj.bias"] = sd.pop(b + "attn.q_bias"), sd.pop(b + "attn.v_bias")
        for g, hf in (("gamma_1", "layer_scale1.lambda1"), ("gamma_2", "layer_scale2.lambda1")):
            out[h + hf] = sd.pop(b + g) if b + g in sd else torch.ones(d)
        for key in [k for k in sd if k.startswith(b)]:
            mod, kind = key[len(b):].rsplit(".", 1)
            out[f"{h}{names[mod]}.{kind}"] = sd.pop(key)
    if sd:
        raise ValueError(f"weights with no DINOv3ViTModel counterpart: {sorted(sd)[:6]}")
    if file_layout:
        out = {k[len("model."):] if k.startswith(_LAYER) else k: v for k, v in out.items()}
    return out
