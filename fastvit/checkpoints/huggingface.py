"""Hugging Face transformers ViT / DeiT: checkpoint names, export, in-memory conversion.

transformers 4.x names blocks ``encoder.layer.N.attention.attention.query``,
5.x ``layers.N.attention.q_proj``; both are read. fastvit keeps q, k and v
packed in one ``qkv`` projection (order q, k, v), so they are concatenated on
the way in and split on the way out. ``ViTModel``'s pooler (Linear + tanh on
the class token) is fastvit's ``pre_logits`` layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import ViTConfig
from .common import CheckpointKeyError, Rule, build_like, config_mismatch, rename, shorten

_BLOCK = r"(?:encoder\.layer|layers)\.(\d+)\."
_RULES: list[Rule] = [
    (r"embeddings\.cls_token", "cls_token", None),
    (r"embeddings\.distillation_token", "dist_token", None),
    (r"embeddings\.position_embeddings", "pos_embed", None),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1", None),
    *[(rf"encoder\.layer\.(\d+)\.attention\.attention\.{name}\.(weight|bias)", rf"blocks.\1.attn.qkv.\2#{name[0]}", None)
      for name in ("query", "key", "value")],
    (r"layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)", r"blocks.\1.attn.qkv.\3#\2", None),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2", None),
    (r"layers\.(\d+)\.attention\.o_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2", None),
    (_BLOCK + r"layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2", None),
    (_BLOCK + r"layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2", None),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2", None),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2", None),
    (r"layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3", None),
    (r"layernorm\.(weight|bias)", r"norm.\1", None),
    (r"(?:classifier|cls_classifier)\.(weight|bias)", r"head.\1", None),
    (r"distillation_classifier\.(weight|bias)", r"head_dist.\1", None),
]
_POOLER_RULE: Rule = (r"pooler\.dense\.(weight|bias)", r"pre_logits.fc.\1", None)


def _strip_model_prefix(state_dict: dict) -> dict:
    return {k.split(".", 1)[1] if k.startswith(("vit.", "deit.")) else k: v for k, v in state_dict.items()}


def hf_family(keys) -> str:
    """Which transformers family a state dict's keys come from: vit, dinov2, clip or siglip
    (:mod:`.hf_families`, loaded when first needed)."""
    from .hf_families import family_of

    return family_of(keys)


def _family_module(family: str):
    from .hf_families import family_module

    return family_module(family)


def resample_convention(keys) -> str:
    """How the checkpoint's own transformers class resamples its position embedding."""
    keys = list(keys)
    return _family_module("dinov2").resample_convention(keys) if hf_family(keys) == "dinov2" else "hf"


def convert_hf(state_dict: dict, pooler: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Hugging Face names -> fastvit names; returns (converted, entries no rule knows).

    ViT / DeiT, DINOv2 (with registers), CLIP and SigLIP vision towers, recognised
    from the keys. ``pooler``: map ViT's ``pooler.dense`` to ``pre_logits.fc`` (else
    the pooler is skipped).
    """
    family = hf_family(state_dict)
    if family != "vit":
        return _family_module(family).convert(state_dict)
    state_dict = _strip_model_prefix(state_dict)
    if not pooler:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("pooler.")}
    return rename(state_dict, _RULES + [_POOLER_RULE])


def convert_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``ViTModel`` / ``ViTForImageClassification`` weights -> fastvit names.

    The separate query/key/value projections are concatenated into ``qkv``.
    Raises ``KeyError`` naming any key no rule matches (the pooler of a bare
    ``ViTModel`` is not part of a fastvit model and is skipped).
    """
    out, unknown = convert_hf(state_dict, pooler=False)
    if unknown:
        raise CheckpointKeyError(f"not a Hugging Face ViT layout: no rule for keys [{shorten(unknown)}]")
    return out


# -- export -------------------------------------------------------------------------------


def _block_names(i: int, legacy: bool) -> dict[str, str]:
    if legacy:  # transformers 4.x
        b = f"encoder.layer.{i}."
        return {"q": b + "attention.attention.query", "k": b + "attention.attention.key",
                "v": b + "attention.attention.value", "attn.proj": b + "attention.output.dense",
                "norm1": b + "layernorm_before", "norm2": b + "layernorm_after",
                "mlp.fc1": b + "intermediate.dense", "mlp.fc2": b + "output.dense"}
    b = f"layers.{i}."
    return {"q": b + "attention.q_proj", "k": b + "attention.k_proj", "v": b + "attention.v_proj",
            "attn.proj": b + "attention.o_proj", "norm1": b + "layernorm_before", "norm2": b + "layernorm_after",
            "mlp.fc1": b + "mlp.fc1", "mlp.fc2": b + "mlp.fc2"}


def _check_exportable(cfg: ViTConfig):
    problems = []
    if not cfg.class_token or cfg.global_pool != "token":
        problems.append("it pools without a class token (global_pool='avg')")
    if cfg.use_fc_norm:
        problems.append("its final norm comes after pooling (fc_norm)")
    if cfg.representation_size and (cfg.num_classes or cfg.distilled):
        problems.append("a pre-logits layer maps to ViTModel's pooler, which only a headless, undistilled model has")
    if getattr(cfg, "hybrid_layers", None):
        problems.append("its patch embedding is a ResNet (hybrid), which ViTModel has no place for")
    problems += _check_plain_vit(cfg)
    if problems:
        raise ValueError("this model has no Hugging Face ViT/DeiT equivalent: " + "; ".join(problems))


FAMILIES = ("vit", "dinov2", "clip", "siglip")


def _siglip2(model, family: str | None) -> bool:
    """A NaFlexVit exports to transformers' Siglip2VisionModel (:mod:`.hf_siglip2`), and only there."""
    from .hf_siglip2 import is_naflex

    if not is_naflex(model):
        if family == "siglip2":
            raise ValueError("family='siglip2' (transformers' Siglip2VisionModel) takes a fastvit NaFlexVit")
        return False
    if family not in (None, "siglip2"):
        raise ValueError(f"a NaFlexVit exports to transformers' Siglip2VisionModel (family 'siglip2'), not {family!r}")
    return True


def model_family(model, family: str | None = None) -> str:
    """The transformers family a fastvit model exports to: ``family`` if given (checked),
    else the one its options imply (pre_norm: CLIP; attention pool / no class token:
    SigLIP; LayerScale, registers or SwiGLU: DINOv2; else ViT / DeiT)."""
    from .options import has_layer_scale

    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES} (or None to infer it), got {family!r}")
    cfg = model.cfg
    if family is None:
        if cfg.pre_norm:
            family = "clip"
        elif cfg.global_pool == "map" or (not cfg.class_token and cfg.global_pool == "" and not cfg.reg_tokens):
            family = "siglip"
        elif has_layer_scale(cfg) or cfg.reg_tokens or cfg.mlp_layer == "swiglu":
            family = "dinov2"
        else:
            family = "vit"
    if family == "vit":
        _check_exportable(cfg)
        return family
    mod = _family_module(family)
    problems = mod.check_exportable(model)
    if problems:
        raise ValueError(f"this model has no Hugging Face {family} equivalent: " + "; ".join(problems))
    return family


def _check_plain_vit(cfg) -> list[str]:
    from .options import final_norm_place, has_layer_scale

    problems = []
    if cfg.reg_tokens or has_layer_scale(cfg) or cfg.qk_norm or cfg.pre_norm:
        problems.append("it has registers, LayerScale, qk-norm or a pre-norm")
    if cfg.mlp_layer != "mlp" or cfg.act_layer != "gelu" or not cfg.use_patch_bias:
        problems.append("its MLP is not a GELU MLP or its patch embedding has no bias")
    if final_norm_place(cfg) is None or cfg.no_embed_class:
        problems.append("it has no final norm or no class-token position")
    return problems


def to_hf_config(model, family: str | None = None, labels: list[str] | None = None) -> dict:
    """The transformers config describing ``model``, as a dict: keyword arguments for
    ``ViTConfig``, ``DeiTConfig``, ``Dinov2Config``, ``Dinov2WithRegistersConfig``,
    ``CLIPVisionConfig`` or ``SiglipVisionConfig``, and (``json.dump``-ed) a ``config.json``
    that ``AutoConfig`` / ``AutoModel*.from_pretrained`` read: ``"model_type"`` says which
    class, ``"architectures"`` names the one :func:`to_hf_state_dict`'s keys fit.
    ``family`` (vit, dinov2, clip, siglip) defaults to what the model's options imply.
    A classifier gets ``num_labels``, ``id2label`` and ``label2id``: from ``labels``, else the
    model's ``pretrained_cfg["label_names"]`` (a fastvit train run's classes), else ``LABEL_i``."""
    if _siglip2(model, family):
        from .hf_siglip2 import to_hf_siglip2_config

        return to_hf_siglip2_config(model)
    family = model_family(model, family)
    if family != "vit":
        return _family_module(family).to_config(model)
    cfg = model.cfg
    family = "DeiT" if cfg.distilled else "ViT"
    if cfg.num_classes:
        arch = "DeiTForImageClassificationWithTeacher" if cfg.distilled else "ViTForImageClassification"
    else:
        arch = f"{family}Model"
    kw = dict(
        hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.mlp_hidden_dim, hidden_act="gelu", layer_norm_eps=cfg.norm_eps,
        image_size=cfg.img_size[0] if cfg.img_size[0] == cfg.img_size[1] else list(cfg.img_size),
        patch_size=cfg.patch_size, num_channels=cfg.in_chans, qkv_bias=cfg.qkv_bias,
        hidden_dropout_prob=cfg.drop_rate, attention_probs_dropout_prob=cfg.attn_drop_rate,
        architectures=[arch],
    )
    kw["model_type"] = family.lower()
    if cfg.num_classes:
        names = _label_names(model, labels)
        kw.update(num_labels=cfg.num_classes, id2label={str(i): n for i, n in enumerate(names)},
                  label2id={n: i for i, n in enumerate(names)})
    if cfg.representation_size:
        kw.update(pooler_output_size=cfg.representation_size, pooler_act="tanh")
    return kw


def _label_names(model, labels) -> list[str]:
    n = model.cfg.num_classes
    if labels is None:
        labels = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
        if labels is None or len(labels) != n:
            return [f"LABEL_{i}" for i in range(n)]
    labels = [str(v) for v in labels]
    if len(labels) != n:
        raise ValueError(f"labels: the model has {n} classes, got {len(labels)} names")
    if len(set(labels)) != n:
        raise ValueError("labels: names must be distinct (label2id maps each name to one class)")
    return labels


def save_hf(model, folder, labels: list[str] | None = None, family: str | None = None) -> Path:
    """Write ``folder/config.json`` (:func:`to_hf_config`) and ``folder/model.safetensors``
    (:func:`to_hf_state_dict`), a folder ``transformers.AutoModelForImageClassification``
    (or ``AutoModel``, for a headless model) ``.from_pretrained`` loads. Returns the folder."""
    import json

    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ImportError("save_hf writes model.safetensors: pip install safetensors") from None
    config = to_hf_config(model, family, labels)
    tensors = to_hf_state_dict(model, family=family)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def to_hf_state_dict(model, legacy: bool = False, family: str | None = None) -> dict[str, torch.Tensor]:
    """fastvit weights under Hugging Face names, for the class ``to_hf_config(model)`` names.

    With a head: ``ViTForImageClassification`` (``vit.`` prefix, ``classifier``) or,
    for a distilled model, ``DeiTForImageClassificationWithTeacher``. Without
    one: ``ViTModel`` / ``DeiTModel`` names, ``pre_logits`` becoming the pooler.
    ``legacy=True`` gives transformers 4.x block names instead of 5.x ones.
    Tensors are copies (safe to save with safetensors, independent of the model).
    DINOv2, CLIP and SigLIP models (``family``, as :func:`to_hf_config`) get their
    own classes' names (transformers 5.x).
    """
    if _siglip2(model, family):
        from .hf_siglip2 import to_hf_siglip2

        return to_hf_siglip2(model)
    family = model_family(model, family)
    if family != "vit":
        out = _family_module(family).to_state_dict(model)
        return {k: v.clone().contiguous() for k, v in out.items()}
    cfg = model.cfg
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    base = ("deit." if cfg.distilled else "vit.") if cfg.num_classes else ""
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
    }
    if cfg.distilled:
        out["embeddings.distillation_token"] = sd["dist_token"]
    for i in range(cfg.depth):
        names = _block_names(i, legacy)
        for kind in ("weight", "bias"):
            packed = sd.get(f"blocks.{i}.attn.qkv.{kind}")
            if packed is not None:
                for part, t in zip("qkv", packed.chunk(3, dim=0)):
                    out[f"{names[part]}.{kind}"] = t
            for ours in ("attn.proj", "norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[f"{names[ours]}.{kind}"] = sd[f"blocks.{i}.{ours}.{kind}"]
    for kind in ("weight", "bias"):
        out[f"layernorm.{kind}"] = sd[f"norm.{kind}"]
        if cfg.representation_size:
            out[f"pooler.dense.{kind}"] = sd[f"pre_logits.fc.{kind}"]
    out = {base + k: v for k, v in out.items()}
    if cfg.num_classes:
        heads = {"head": "cls_classifier", "head_dist": "distillation_classifier"} if cfg.distilled else {"head": "classifier"}
        for ours, theirs in heads.items():
            for kind in ("weight", "bias"):
                out[f"{theirs}.{kind}"] = sd[f"{ours}.{kind}"]
    return {k: v.clone().contiguous() for k, v in out.items()}


# -- in-memory conversion -----------------------------------------------------------------

_HEADS = {  # transformers class -> (distilled, head attribute or None)
    "ViTModel": (False, None),
    "ViTForImageClassification": (False, "classifier"),
    "DeiTModel": (True, None),
    "DeiTForImageClassificationWithTeacher": (True, "cls_classifier"),
}


_MODERN = {"Dinov2Model": "dinov2", "Dinov2WithRegistersModel": "dinov2", "CLIPVisionModel": "clip",
           "CLIPVisionModelWithProjection": "clip", "SiglipVisionModel": "siglip"}


def from_hf(model: nn.Module, **impl):
    """An equivalent fastvit VisionTransformer of a transformers ``ViTModel``,
    ``ViTForImageClassification``, ``DeiTModel``, ``DeiTForImageClassificationWithTeacher``,
    ``Dinov2Model``, ``Dinov2WithRegistersModel``, ``CLIPVisionModel``,
    ``CLIPVisionModelWithProjection`` or ``SiglipVisionModel``.

    DINOv2 / SigLIP: ``forward_features`` is ``last_hidden_state``, the pooled
    features (``forward_head(..., pre_logits=True)``) ``pooler_output``. CLIP:
    ``forward_features`` is ``post_layernorm(last_hidden_state)`` (HF's last state
    is before the final norm), the pooled features ``pooler_output`` and, with a
    projection, ``forward`` gives ``image_embeds``.

    ``ViTModel``'s pooler becomes ``pre_logits`` (so ``forward`` gives its
    ``pooler_output`` and ``forward_features`` its ``last_hidden_state``);
    ``DeiTModel``'s pooler is left out. ``impl``: ``attn_impl``, ``norm_impl``,
    ``linear_impl``. The result has the source's device, dtype and train/eval mode.

    ``Siglip2VisionModel`` (SigLIP 2 NaFlex) becomes a :class:`fastvit.naflex.NaFlexVit`
    (:mod:`.hf_siglip2`; its inputs map with ``hf_inputs_to_packed``), ``DINOv3ViTModel`` an Eva.
    """
    name = type(model).__name__
    what = f"transformers {name}"
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if name == "Siglip2VisionModel" or model_type == "siglip2_vision_model":
        from .hf_siglip2 import from_hf_siglip2

        return from_hf_siglip2(model, **impl)
    if name in ("DINOv3ViTModel", "DINOv3ViTBackbone") or model_type == "dinov3_vit":
        from .hf_dinov3 import from_hf_dinov3

        return from_hf_dinov3(model, **impl)
    if name in _MODERN:
        from .hf_families import from_hf_modern

        return from_hf_modern(model, _family_module(_MODERN[name]), **impl)
    if name not in _HEADS:
        raise TypeError(f"from_hf takes one of {sorted(_HEADS) + sorted(_MODERN)}, got {name}"
                        + (" (its classifier sees only the class token, with no distillation head)" if name == "DeiTForImageClassification" else ""))
    distilled, head_attr = _HEADS[name]
    c = model.config
    if c.hidden_act != "gelu":
        raise config_mismatch(what, f"hidden_act={c.hidden_act!r} (fastvit's MLP uses exact GELU, 'gelu')")
    pooler = None if head_attr else getattr(model, "pooler", None)
    representation = None
    if pooler is not None and not distilled:
        if getattr(c, "pooler_act", "tanh") != "tanh":
            raise config_mismatch(what, f"pooler_act={c.pooler_act!r} (fastvit's pre-logits layer uses tanh)")
        representation = pooler.dense.out_features
    head = getattr(model, head_attr) if head_attr else None
    num_classes = head.out_features if isinstance(head, nn.Linear) else 0
    patch = c.patch_size if isinstance(c.patch_size, int) else tuple(c.patch_size)
    if not isinstance(patch, int):
        if patch[0] != patch[1]:
            raise config_mismatch(what, f"non-square patch_size={patch}")
        patch = patch[0]
    cfg = ViTConfig(
        img_size=c.image_size, patch_size=patch, in_chans=c.num_channels, num_classes=num_classes,
        embed_dim=c.hidden_size, depth=c.num_hidden_layers, num_heads=c.num_attention_heads,
        mlp_ratio=c.intermediate_size / c.hidden_size, qkv_bias=c.qkv_bias, distilled=distilled,
        representation_size=representation, norm_eps=c.layer_norm_eps,
        drop_rate=c.hidden_dropout_prob, attn_drop_rate=c.attention_probs_dropout_prob, pos_embed_resample="hf", **impl,
    )
    if cfg.mlp_hidden_dim != c.intermediate_size:
        raise config_mismatch(what, f"intermediate_size={c.intermediate_size} (not reproduced by an mlp_ratio)")
    sd, unknown = convert_hf(model.state_dict(), pooler=representation is not None)
    if unknown:
        raise config_mismatch(what, f"weights fastvit does not have: {shorten(unknown)}")
    return build_like(cfg, sd, model, what)
