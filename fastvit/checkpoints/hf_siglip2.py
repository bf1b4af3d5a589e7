"""Hugging Face transformers' SigLIP 2 NaFlex image tower (``Siglip2VisionModel``,
``model_type="siglip2_vision_model"``) in and out of timm's / fastvit's ``naflexvit_*_siglip`` names.

The two are one model under other names. transformers' patch embedding is a ``Linear`` over
patches flattened as (patch row, patch column, channel) -- timm's NaFlex layout, so
``embeddings.patch_embedding`` is ``embeds.proj`` as it is; its ``position_embedding`` table
``(S*S, D)`` is ``embeds.pos_embed`` ``(1, S, S, D)``; separate ``q_proj`` / ``k_proj`` / ``v_proj``
are one ``attn.qkv``; ``post_layernorm`` is the final ``norm``; the attention-pool head
(``head.probe``, an ``nn.MultiheadAttention`` whose packed ``in_proj`` splits into ``q`` and ``kv``,
``head.layernorm``, ``head.mlp``) is timm's ``attn_pool``. transformers resizes the position
table per image with bilinear + antialias weights, so the converted model takes
``pos_embed_interp_mode="bilinear"`` (timm's presets say bicubic).

Inputs: transformers' ``pixel_values`` ``(B, L, C*P*P)`` (row-major patches, padding last),
``pixel_attention_mask`` ``(B, L)`` and ``spatial_shapes`` ``(B, 2)`` become timm's dict
``{"patches", "patch_coord", "patch_valid"}`` (:func:`hf_inputs_to_timm`) or fastvit's packed
batch with the padding dropped (:func:`hf_inputs_to_packed`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .common import mlp_ratio_for
from .files import read_checkpoint
from .hf_common import HF_ACT_NAMES, hf_activation, square_patch

MODEL_TYPE = "siglip2_vision_model"
MODEL_TYPES = (MODEL_TYPE, "siglip2")
_WHAT = "transformers Siglip2VisionModel"
_LAYER = "encoder.layers."
_SKIPPED = ("text_model.", "logit_scale", "logit_bias")  # a full Siglip2Model's other parts
# per-layer names: transformers -> timm
_BLOCK_NAMES = {"layer_norm1": "norm1", "layer_norm2": "norm2", "self_attn.out_proj": "attn.proj",
                "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_HEAD_NAMES = {"attention.out_proj": "proj", "layernorm": "norm", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


# -- config ---------------------------------------------------------------------------------


def vision_config(c: dict) -> dict:
    """The vision part of a ``siglip2`` config dict, or a ``siglip2_vision_model`` one as it is."""
    if c.get("model_type") == "siglip2":
        c = c.get("vision_config") or {}
    model_type = c.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise ValueError(f"expected a {MODEL_TYPE!r} (or 'siglip2') config, got model_type {model_type!r}")
    return c


def siglip2_config_fields(c: dict) -> dict:
    """Model arguments, under timm's ``NaFlexVitCfg`` / ``create_model`` names, of the naflexvit that
    computes what a transformers ``Siglip2VisionConfig`` (a dict, ``config.json``) describes."""
    c = vision_config(c)
    dim, width = c.get("hidden_size", 768), c.get("intermediate_size", 3072)
    heads, grid = c.get("num_attention_heads", 12), c.get("num_patches", 256)
    side = int(round(grid ** 0.5))
    if side * side != grid:
        raise ValueError(f"{_WHAT}: num_patches={grid} is not a square grid (transformers reshapes it to S x S)")
    if dim % heads:
        raise ValueError(f"{_WHAT}: hidden_size={dim} is not a multiple of num_attention_heads={heads}")
    eps = c.get("layer_norm_eps", 1e-6)
    fields = {} if abs(eps - 1e-6) <= 1e-12 else {"norm_eps": eps}  # timm's naflexvit fixes 1e-6; fastvit's takes it
    return fields | dict(patch_size=square_patch(c.get("patch_size", 16), _WHAT), in_chans=c.get("num_channels", 3),
                embed_dim=dim, depth=c.get("num_hidden_layers", 12), num_heads=heads, mlp_ratio=mlp_ratio_for(dim, width),
                act_layer=hf_activation(c.get("hidden_act", "gelu_pytorch_tanh"), _WHAT),
                global_pool="map" if c.get("vision_use_head", True) else "", num_classes=0,
                pos_embed_grid_size=(side, side), pos_embed_interp_mode="bilinear",
                attn_drop_rate=float(c.get("attention_dropout", 0.0) or 0.0))


def siglip2_config(fields: dict, width: int) -> dict:
    """transformers ``Siglip2VisionConfig`` fields (``config.json``) for a SigLIP-2-shaped naflexvit
    described by timm's field names; ``width`` is its MLP's hidden size; no attention pool
    (``global_pool`` other than "map") is ``vision_use_head=False``."""
    grid = tuple(fields["pos_embed_grid_size"])
    if grid[0] != grid[1]:
        raise ValueError(f"transformers' Siglip2VisionModel has a square position table; this one is {grid}")
    act = fields.get("act_layer", "gelu_tanh")
    if act not in HF_ACT_NAMES:
        raise ValueError(f"act_layer={act!r} has no transformers name (one of {sorted(HF_ACT_NAMES)})")
    return dict(model_type=MODEL_TYPE, architectures=["Siglip2VisionModel"], hidden_size=fields["embed_dim"],
                intermediate_size=width, num_hidden_layers=fields["depth"], num_attention_heads=fields["num_heads"],
                num_channels=fields.get("in_chans", 3), patch_size=fields["patch_size"], hidden_act=HF_ACT_NAMES[act],
                layer_norm_eps=float(fields.get("norm_eps", 1e-6)), attention_dropout=float(fields.get("attn_drop_rate", 0.0)),
                vision_use_head=fields.get("global_pool", "map") == "map", num_patches=grid[0] * grid[1])


# -- weights --------------------------------------------------------------------------------


def _vision_keys(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k.startswith(_SKIPPED):
            continue
        out[k[len("vision_model."):] if k.startswith("vision_model.") else k] = v
    return out


def convert_hf_siglip2_state_dict(sd: dict) -> dict[str, torch.Tensor]:
    """transformers ``Siglip2VisionModel`` names (or a ``Siglip2Model``'s ``vision_model.`` part) ->
    timm's naflexvit names; ``KeyError`` naming a key no rule knows."""
    sd, out, layers = _vision_keys(sd), {}, {}
    for k, v in sd.items():
        if k.startswith("embeddings.patch_embedding."):
            out["embeds.proj." + k.rsplit(".", 1)[1]] = v
        elif k == "embeddings.position_embedding.weight":
            side = int(round(v.shape[0] ** 0.5))
            if v.ndim != 2 or side * side != v.shape[0]:
                raise ValueError(f"{k}: shape {tuple(v.shape)} is not an (S*S, D) table")
            out["embeds.pos_embed"] = v.reshape(1, side, side, v.shape[1])
        elif k.startswith("post_layernorm."):
            out["norm." + k.rsplit(".", 1)[1]] = v
        elif k == "head.probe":
            out["attn_pool.latent"] = v
        elif k.startswith("head.attention.in_proj_"):
            kind = k.rsplit("_", 1)[1]
            if v.shape[0] % 3:
                raise ValueError(f"{k}: shape {tuple(v.shape)} is not three equal parts")
            d = v.shape[0] // 3
            out[f"attn_pool.q.{kind}"], out[f"attn_pool.kv.{kind}"] = v[:d], v[d:]
        elif k.startswith("head."):
            mod, kind = k[len("head."):].rsplit(".", 1)
            if mod not in _HEAD_NAMES:
                raise KeyError(f"unexpected Siglip2VisionModel key {k!r}")
            out[f"attn_pool.{_HEAD_NAMES[mod]}.{kind}"] = v
        elif k.startswith(_LAYER):
            i, rest = k[len(_LAYER):].split(".", 1)
            layers.setdefault(int(i), {})[rest] = v
        else:
            raise KeyError(f"unexpected Siglip2VisionModel key {k!r}")
    for i, p in sorted(layers.items()):
        b = f"blocks.{i}."
        for kind in ("weight", "bias"):
            parts = [p.pop(f"self_attn.{n}_proj.{kind}", None) for n in "qkv"]
            if all(t is not None for t in parts):
                out[f"{b}attn.qkv.{kind}"] = torch.cat(parts)
            elif any(t is not None for t in parts):
                raise KeyError(f"layer {i}: self_attn q/k/v {kind}s are not all present")
        for rest, v in p.items():
            mod, kind = rest.rsplit(".", 1)
            if mod not in _BLOCK_NAMES:
                raise KeyError(f"unexpected Siglip2VisionModel key {_LAYER}{i}.{rest!r}")
            out[f"{b}{_BLOCK_NAMES[mod]}.{kind}"] = v
    return out


def to_hf_siglip2_state_dict(sd: dict) -> dict[str, torch.Tensor]:
    """timm's naflexvit names -> ``Siglip2VisionModel``'s (copies, contiguous: safe to save);
    ``ValueError`` naming weights transformers' model has no place for."""
    sd = {k: v.detach() for k, v in sd.items()}
    out = {}
    pos = sd.pop("embeds.pos_embed", None)
    if pos is None or pos.ndim != 4 or pos.shape[1] != pos.shape[2]:
        raise ValueError("Siglip2VisionModel needs a learned square position table embeds.pos_embed (1, S, S, D)")
    out["embeddings.position_embedding.weight"] = pos.reshape(-1, pos.shape[-1])
    for kind in ("weight", "bias"):
        for ours, theirs in (("embeds.proj", "embeddings.patch_embedding"), ("norm", "post_layernorm")):
            if f"{ours}.{kind}" in sd:
                out[f"{theirs}.{kind}"] = sd.pop(f"{ours}.{kind}")
    if "attn_pool.latent" in sd:
        out["head.probe"] = sd.pop("attn_pool.latent")
        for kind in ("weight", "bias"):
            out[f"head.attention.in_proj_{kind}"] = torch.cat([sd.pop(f"attn_pool.q.{kind}"), sd.pop(f"attn_pool.kv.{kind}")])
        for theirs, ours in _HEAD_NAMES.items():
            for kind in ("weight", "bias"):
                out[f"head.{theirs}.{kind}"] = sd.pop(f"attn_pool.{ours}.{kind}")
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        b, h = f"blocks.{i}.", f"{_LAYER}{i}."
        for kind in ("weight", "bias"):
            if b + f"attn.qkv.{kind}" in sd:
                for n, t in zip("qkv", sd.pop(b + f"attn.qkv.{kind}").chunk(3)):
                    out[f"{h}self_attn.{n}_proj.{kind}"] = t
            for theirs, ours in _BLOCK_NAMES.items():
                if b + f"{ours}.{kind}" in sd:
                    out[f"{h}{theirs}.{kind}"] = sd.pop(b + f"{ours}.{kind}")
    if sd:
        raise ValueError(f"weights with no Siglip2VisionModel counterpart: {sorted(sd)[:6]}")
    return {k: v.clone().contiguous() for k, v in out.items()}


# -- inputs ---------------------------------------------------------------------------------


def _check_hf_inputs(pixel_values, pixel_attention_mask, spatial_shapes) -> list[tuple[int, int]]:
    for name, t in (("pixel_values", pixel_values), ("pixel_attention_mask", pixel_attention_mask),
                    ("spatial_shapes", spatial_shapes)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(t).__name__}")
    if pixel_values.ndim != 3:
        raise ValueError(f"pixel_values: expected (B, L, C*P*P) patches, got shape {tuple(pixel_values.shape)}")
    b, length = pixel_values.shape[:2]
    if tuple(pixel_attention_mask.shape) != (b, length):
        raise ValueError(f"pixel_attention_mask: expected shape {(b, length)}, got {tuple(pixel_attention_mask.shape)}")
    if tuple(spatial_shapes.shape) != (b, 2):
        raise ValueError(f"spatial_shapes: expected shape {(b, 2)}, got {tuple(spatial_shapes.shape)}")
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    valid = pixel_attention_mask.bool()
    for i, (h, w) in enumerate(shapes):
        n = h * w
        if h < 1 or w < 1 or n > length:
            raise ValueError(f"spatial_shapes[{i}] = {(h, w)}: needs 1..{length} patches, has {n}")
        if not bool(valid[i, :n].all()) or bool(valid[i, n:].any()):
            raise ValueError(f"pixel_attention_mask[{i}]: expected its first {n} patches valid (spatial_shapes "
                             f"{(h, w)}) and the rest padding, as transformers' Siglip2 processor writes it")
    return shapes


def grid_coords(h: int, w: int, device=None) -> torch.Tensor:
    """(h*w, 2) (row, column) of a row-major patch grid."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([ys.flatten(), xs.flatten()], dim=1)


def hf_inputs_to_timm(pixel_values, pixel_attention_mask, spatial_shapes) -> dict[str, torch.Tensor]:
    """transformers' Siglip2 inputs as timm's NaFlex dict ``{"patches", "patch_coord", "patch_valid"}``
    (same padded length; padding at coordinate (0, 0), marked invalid)."""
    shapes = _check_hf_inputs(pixel_values, pixel_attention_mask, spatial_shapes)
    b, length = pixel_values.shape[:2]
    coord = torch.zeros(b, length, 2, dtype=torch.long, device=pixel_values.device)
    for i, (h, w) in enumerate(shapes):
        coord[i, :h * w] = grid_coords(h, w, pixel_values.device)
    return {"patches": pixel_values, "patch_coord": coord, "patch_valid": pixel_attention_mask.bool()}


def hf_inputs_to_patch_lists(pixel_values, pixel_attention_mask, spatial_shapes):
    """Each image's valid patches ``(h*w, C*P*P)`` and grid ``(h, w)``: the padding dropped."""
    shapes = _check_hf_inputs(pixel_values, pixel_attention_mask, spatial_shapes)
    return [pixel_values[i, :h * w] for i, (h, w) in enumerate(shapes)], shapes


# -- models and directories -----------------------------------------------------------------


def read_hf_source(source) -> tuple[dict, dict]:
    """(config dict, state dict) of a transformers Siglip2 model in memory or of the directory its
    ``save_pretrained`` wrote."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path}: no config.json (a save_pretrained directory has one)")
        return json.loads(cfg_file.read_text()), read_checkpoint(path)
    if isinstance(source, nn.Module) and hasattr(source, "config"):
        return source.config.to_dict(), source.state_dict()
    raise TypeError(f"expected a transformers Siglip2VisionModel or a save_pretrained directory, got {type(source).__name__}")


def hf_inputs_to_packed(pixel_values, pixel_attention_mask, spatial_shapes):
    """transformers' Siglip2 inputs as fastvit's :class:`~fastvit.naflex.Packed` batch: each image's
    valid patches back to back, the padding dropped (``model(packed)`` gives ``pooler_output``'s rows)."""
    from ..naflex.packing import Packed

    patches, shapes = hf_inputs_to_patch_lists(pixel_values, pixel_attention_mask, spatial_shapes)
    device = pixel_values.device
    lens = [h * w for h, w in shapes]
    coords = torch.cat([grid_coords(h, w, device) for h, w in shapes])
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    side = int(round((pixel_values.shape[-1] / 3) ** 0.5))  # RGB: C*P*P; any other channel count: no patch size
    patch = side if 3 * side * side == pixel_values.shape[-1] else None
    return Packed(torch.cat(patches), coords, cu, tuple(shapes), max(lens), patch, tuple(lens))


def _naflex_fields(fields: dict) -> dict:
    """timm's fields -> fastvit's NaFlexConfig: no pool is an 'avg' pool kept out of the way (the final
    norm stays before it, no fc_norm), as fastvit's NaFlexVit has no ``global_pool=''``."""
    fields = dict(fields)
    if fields.get("global_pool") == "":
        fields.update(global_pool="avg", fc_norm=False)
    if not fields.get("attn_drop_rate"):
        fields.pop("attn_drop_rate", None)
    return fields


def from_hf_siglip2(source, **impls):
    """A fastvit :class:`~fastvit.naflex.NaFlexVit` from transformers' ``Siglip2VisionModel`` (in
    memory, or the directory its ``save_pretrained`` wrote; a ``Siglip2Model``'s vision tower too).
    ``model(packed)`` is transformers' ``pooler_output``; ``forward_features`` its
    ``last_hidden_state`` (valid rows). ``impls``: ``norm_impl`` / ``linear_impl`` / ``varlen_impl``."""
    from ..naflex import NaFlexConfig, NaFlexVit

    config, sd = read_hf_source(source)
    model = NaFlexVit(NaFlexConfig(**_naflex_fields(siglip2_config_fields(config)), **impls))
    model.load_state_dict(convert_hf_siglip2_state_dict(sd), strict=True)
    model.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear",
                            "num_classes": 0, "input_size": (model.cfg.in_chans, *(g * model.cfg.patch_size
                                                                                   for g in model.cfg.pos_embed_grid_size))}
    if isinstance(source, nn.Module):
        p = next(source.parameters())
        model = model.to(p.device, p.dtype).train(source.training)
    else:
        model = model.eval()
    return model


def _check_exportable(model) -> None:
    c = model.cfg
    wrong = [(n, want) for n, want in (("class_token", False), ("reg_tokens", 0), ("init_values", None),
                                       ("pos_embed", "learned"), ("pos_embed_ar_preserving", False), ("final_norm", True),
                                       ("qkv_bias", True), ("num_classes", 0), ("attn_pool_num_heads", None),
                                       ("attn_pool_mlp_ratio", None), ("pos_embed_interp_mode", "bilinear"))
             if getattr(c, n) != want]
    if c.global_pool != "map" and c.use_fc_norm:
        wrong.append(("fc_norm", False))
    if c.pos_embed_grid_size[0] != c.pos_embed_grid_size[1]:
        wrong.append(("pos_embed_grid_size", "square"))
    if c.act_layer not in HF_ACT_NAMES:
        wrong.append(("act_layer", sorted(HF_ACT_NAMES)))
    if wrong:
        raise ValueError("only SigLIP-2-shaped NaFlexVit models export to transformers' Siglip2VisionModel; this one has "
                         + ", ".join(f"{n}={getattr(c, n)!r} (needs {w!r})" for n, w in wrong))


def to_hf_siglip2_config(model) -> dict:
    """transformers ``Siglip2VisionConfig`` fields (a ``config.json``) for a SigLIP-2-shaped NaFlexVit."""
    _check_exportable(model)
    c = model.cfg
    fields = dict(patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.embed_dim, depth=c.depth,
                  num_heads=c.num_heads, act_layer=c.act_layer, norm_eps=c.norm_eps,
                  global_pool="map" if c.global_pool == "map" else "", pos_embed_grid_size=c.pos_embed_grid_size,
                  attn_drop_rate=c.attn_drop_rate)
    return siglip2_config(fields, width=int(c.embed_dim * c.mlp_ratio))


def to_hf_siglip2(model) -> dict[str, torch.Tensor]:
    """A SigLIP-2-shaped NaFlexVit's weights under ``Siglip2VisionModel``'s names (copies)."""
    _check_exportable(model)
    return to_hf_siglip2_state_dict(model.state_dict())


def is_naflex(model) -> bool:
    from ..naflex.model import NaFlexVit

    return isinstance(model, NaFlexVit)
