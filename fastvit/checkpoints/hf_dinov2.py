"""Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel``: names, config, export.

DINOv2 blocks are timm's with LayerScale (``layer_scale1.lambda1`` is
``ls1.gamma``); giant's SwiGLU MLP has separate ``gate_proj`` / ``up_proj``
(transformers 5.x) or a packed ``weights_in`` (4.x), which become fastvit's
packed ``fc1`` (gate first: ``silu(first half) * second half``). The mask token
(masked-image training only) is dropped. With registers, HF adds no position to
the registers and keeps one for the class token: fastvit (as timm's reg4 presets)
puts positions on the patches only (``no_embed_class``) and folds the class
token's position into the class token, the same sum.

Resampling: ``Dinov2Model`` interpolates bicubic without antialias ("hf"),
``Dinov2WithRegistersModel`` with antialias ("timm").
"""

from __future__ import annotations

import re

import torch

from .common import Rule, mlp_ratio_for, rename
from .hf_common import hf_activation, square_patch

MODEL_TYPES = ("dinov2", "dinov2_with_registers")
_L = r"encoder\.layer\.(\d+)\."
_RULES: list[Rule] = [
    (r"embeddings\.cls_token", "cls_token", None),
    (r"embeddings\.register_tokens", "reg_token", None),
    (r"embeddings\.position_embeddings", "pos_embed", None),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1", None),
    (_L + r"norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3", None),
    (_L + r"attention\.([qkv])_proj\.(weight|bias)", r"blocks.\1.attn.qkv.\3#\2", None),
    *[(_L + rf"attention\.attention\.{n}\.(weight|bias)", rf"blocks.\1.attn.qkv.\2#{n[0]}", None) for n in ("query", "key", "value")],
    (_L + r"attention\.(?:o_proj|output\.dense)\.(weight|bias)", r"blocks.\1.attn.proj.\2", None),
    (_L + r"layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma", None),
    (_L + r"mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3", None),
    (_L + r"mlp\.weights_in\.(weight|bias)", r"blocks.\1.mlp.fc1.\2", None),
    (_L + r"mlp\.(?:weights_out|down_proj)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2", None),
    (r"layernorm\.(weight|bias)", r"norm.\1", None),
]
_PREFIXES = ("dinov2_with_registers.", "dinov2.")


def is_dinov2(keys) -> bool:
    return any(re.fullmatch(r"(?:dinov2\w*\.)?(?:embeddings\.mask_token|encoder\.layer\.\d+\.(?:layer_scale1|norm1)\..*)", k)
               for k in keys)


def resample_convention(keys) -> str:
    return "timm" if any(k.endswith("embeddings.register_tokens") for k in keys) else "hf"


def convert(state_dict: dict) -> tuple[dict, dict]:
    """DINOv2 names -> fastvit names; returns (converted, entries no rule knows)."""
    sd = {}
    for k, v in state_dict.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        sd[k] = v
    sd.pop("embeddings.mask_token", None)
    for key in [k for k in sd if re.fullmatch(_L + r"mlp\.gate_proj\.(weight|bias)", k)]:  # 5.x SwiGLU: pack
        up = key.replace("gate_proj", "up_proj")
        if up not in sd:
            raise ValueError(f"{key}: its SwiGLU partner {up} is missing")
        sd[key.replace("gate_proj", "weights_in")] = torch.cat([sd.pop(key), sd.pop(up)], dim=0)
    out, unknown = rename(sd, _RULES)
    if "reg_token" in out and "pos_embed" in out and "cls_token" in out:
        pos, cls = out["pos_embed"], out["cls_token"]
        if pos.ndim == 3 and cls.ndim == 3 and pos.shape[1] > 1 and pos.shape[2] == cls.shape[2]:
            out["cls_token"] = cls + pos[:, :1]
            out["pos_embed"] = pos[:, 1:]
    return out, unknown


def _swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    """HF's SwiGLU width: two thirds of ``int(dim * mlp_ratio)``, rounded up to a multiple of 8."""
    return (int(int(dim * mlp_ratio) * 2 / 3) + 7) // 8 * 8


def config_fields(c: dict, what: str) -> dict:
    """ViTConfig fields of a (dict) Dinov2Config / Dinov2WithRegistersConfig."""
    dim = c.get("hidden_size", 768)
    swiglu = bool(c.get("use_swiglu_ffn", False))
    ratio = c.get("mlp_ratio", 4)
    fields = dict(embed_dim=dim, depth=c.get("num_hidden_layers", 12), num_heads=c.get("num_attention_heads", 12),
                  patch_size=square_patch(c.get("patch_size", 14), what), img_size=c.get("image_size", 224),
                  in_chans=c.get("num_channels", 3), qkv_bias=c.get("qkv_bias", True), norm_eps=c.get("layer_norm_eps", 1e-6),
                  init_values=float(c.get("layerscale_value", 1.0)), num_classes=0, global_pool="token")
    if swiglu:
        fields.update(mlp_layer="swiglu", act_layer="silu", mlp_ratio=mlp_ratio_for(dim, 2 * _swiglu_hidden(dim, ratio)))
    else:
        fields.update(act_layer=hf_activation(c.get("hidden_act", "gelu"), what), mlp_ratio=mlp_ratio_for(dim, int(dim * ratio)))
    if c.get("model_type") == "dinov2_with_registers" or "num_register_tokens" in c:
        fields.update(reg_tokens=int(c.get("num_register_tokens", 4)), no_embed_class=True)
    if c.get("drop_path_rate"):
        fields["drop_path_rate"] = c["drop_path_rate"]
    return fields


# -- export -------------------------------------------------------------------------------


def check_exportable(model) -> list[str]:
    from .options import final_norm_place

    cfg, problems = model.cfg, []
    if not cfg.class_token or cfg.global_pool != "token" or cfg.distilled:
        problems.append("DINOv2 pools its class token (no distillation token)")
    if final_norm_place(cfg) != "norm" or cfg.pre_norm or not cfg.use_patch_bias or cfg.qk_norm:
        problems.append("DINOv2 has a final norm before pooling, a patch bias, no pre-norm and no qk-norm")
    if cfg.reg_tokens and not cfg.no_embed_class:
        problems.append("DINOv2's registers have no position embedding (the model needs no_embed_class=True)")
    if cfg.mlp_layer == "swiglu":
        h = cfg.mlp_hidden_dim // 2
        if not _swiglu_ratio(cfg.embed_dim, h):
            problems.append(f"no Dinov2Config mlp_ratio gives a SwiGLU width of {h}")
    elif cfg.mlp_hidden_dim % cfg.embed_dim:
        problems.append(f"Dinov2Config's mlp_ratio is an int; MLP width {cfg.mlp_hidden_dim} is not a multiple of {cfg.embed_dim}")
    if cfg.num_classes or cfg.representation_size or cfg.hybrid_layers is not None:
        problems.append("Dinov2Model has no classifier head, pre-logits layer or hybrid stem")
    return problems


def _swiglu_ratio(dim: int, hidden: int) -> int | None:
    """The Dinov2Config mlp_ratio (an int in transformers 5.x) giving SwiGLU width ``hidden``."""
    return next((r for r in range(1, 33) if _swiglu_hidden(dim, r) == hidden), None)


def to_config(model) -> dict:
    from .hf_common import HF_ACT_NAMES
    from .options import has_layer_scale

    cfg = model.cfg
    swiglu = cfg.mlp_layer == "swiglu"
    reg = cfg.reg_tokens
    kw = dict(hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
              mlp_ratio=_swiglu_ratio(cfg.embed_dim, cfg.mlp_hidden_dim // 2) if swiglu else cfg.mlp_hidden_dim // cfg.embed_dim,
              hidden_act="silu" if swiglu else HF_ACT_NAMES[cfg.act_layer], layer_norm_eps=cfg.norm_eps,
              image_size=cfg.img_size[0] if cfg.img_size[0] == cfg.img_size[1] else list(cfg.img_size),
              patch_size=cfg.patch_size, num_channels=cfg.in_chans, qkv_bias=cfg.qkv_bias, use_swiglu_ffn=swiglu,
              layerscale_value=float(cfg.init_values) if has_layer_scale(cfg) else 1.0,
              drop_path_rate=cfg.drop_path_rate, architectures=["Dinov2WithRegistersModel" if reg else "Dinov2Model"],
              model_type="dinov2_with_registers" if reg else "dinov2")
    if reg:
        kw["num_register_tokens"] = reg
    return kw


def to_state_dict(model) -> dict:
    """fastvit weights under ``Dinov2Model`` (5.x) names; ``Dinov2WithRegistersModel`` with registers.
    A model without LayerScale gets ``lambda1`` = 1 (the same forward)."""

    cfg = model.cfg
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    d = cfg.embed_dim
    pos = sd["pos_embed"]
    if cfg.no_embed_class:  # HF: one position for the class token; zero it
        pos = torch.cat([pos.new_zeros(1, 1, d), pos], dim=1)
    out = {"embeddings.cls_token": sd["cls_token"], "embeddings.mask_token": sd["cls_token"].new_zeros(1, d),
           "embeddings.position_embeddings": pos,
           "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}
    if "reg_token" in sd:
        out["embeddings.register_tokens"] = sd["reg_token"]
    swiglu = cfg.mlp_layer == "swiglu"
    for i in range(cfg.depth):
        b, o = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            for n in ("norm1", "norm2"):
                out[f"{o}{n}.{kind}"] = sd[f"{b}{n}.{kind}"]
            if f"{b}attn.qkv.{kind}" in sd:
                for part, t in zip("qkv", sd[f"{b}attn.qkv.{kind}"].chunk(3, dim=0)):
                    out[f"{o}attention.{part}_proj.{kind}"] = t
            out[f"{o}attention.o_proj.{kind}"] = sd[f"{b}attn.proj.{kind}"]
            if swiglu:
                gate, up = sd[f"{b}mlp.fc1.{kind}"].chunk(2, dim=0)
                out[f"{o}mlp.gate_proj.{kind}"], out[f"{o}mlp.up_proj.{kind}"] = gate, up
                out[f"{o}mlp.down_proj.{kind}"] = sd[f"{b}mlp.fc2.{kind}"]
            else:
                out[f"{o}mlp.fc1.{kind}"], out[f"{o}mlp.fc2.{kind}"] = sd[f"{b}mlp.fc1.{kind}"], sd[f"{b}mlp.fc2.{kind}"]
        for which in ("1", "2"):
            gamma = sd.get(f"{b}ls{which}.gamma")
            out[f"{o}layer_scale{which}.lambda1"] = gamma if gamma is not None else sd["norm.weight"].new_ones(d)
    return out
