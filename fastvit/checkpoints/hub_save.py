"""Writing a model in timm's Hub format: :func:`save_pretrained` and :func:`push_to_hub`, for the ViT
presets (timm's ``VisionTransformer``), the eva family (timm's ``Eva``) and the naflexvit family
(timm's ``NaFlexVit``, whose ``NaFlexVitCfg`` fields are keywords of its ``naflexvit_*`` names).

The folder holds ``config.json`` (``architecture``, ``num_classes``, ``num_features``,
``global_pool``, ``model_args``, ``pretrained_cfg``) and the weights under timm's names
(``model.safetensors`` and / or ``pytorch_model.bin``), so ``timm.create_model("local-dir:<folder>",
pretrained=True)`` builds timm's model with the same outputs, and fastvit reads it back the same way.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from dataclasses import dataclass
from typing import Callable

from ..eva import Eva
from ..presets import PRESETS, get_config
from .hub import SAFE_WEIGHTS, TORCH_WEIGHTS, _huggingface_hub, _version
from .timm import to_timm_state_dict
from .timm_eva import TIMM_EVA_ARGS, to_timm_eva_state_dict
from .timm_naflex import NaFlexVit, to_timm_naflex_state_dict

# ViTConfig fields that timm's VisionTransformer takes under the same keyword
TIMM_ARGS = ("img_size", "patch_size", "in_chans", "global_pool", "embed_dim", "depth", "num_heads", "mlp_ratio",
             "qkv_bias", "qk_norm", "init_values", "class_token", "reg_tokens", "no_embed_class", "pre_norm",
             "final_norm", "fc_norm", "dynamic_img_size", "dynamic_img_pad", "attn_drop_rate", "drop_path_rate",
             "act_layer")
# fields that only choose an implementation or a run-time convention: never saved
_NOT_SAVED = ("num_classes", "attn_impl", "norm_impl", "linear_impl", "varlen_impl", "pos_embed_resample")
# NaFlexConfig fields that are timm's NaFlexVitCfg fields (keywords of its naflexvit_* names) or NaFlexVit's
TIMM_NAFLEX_ARGS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "init_values",
                    "drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "class_token", "reg_tokens",
                    "pos_embed", "pos_embed_grid_size", "pos_embed_interp_mode", "pos_embed_ar_preserving",
                    "final_norm", "fc_norm", "global_pool", "attn_pool_num_heads", "attn_pool_mlp_ratio",
                    "act_layer", "in_chans")
_SOURCE_FIELDS = ("url", "file", "hf_hub_id", "hf_hub_filename", "source")
_KEEP_NULL = ("pool_size", "first_conv", "classifier")


def _json_value(value):
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class TimmFamily:
    """What writing one of timm's model classes needs: its names (``presets``: name -> fields), each name's
    config (``config_of``), the config fields timm takes under the same keyword, timm's state dict of a
    model, and the model class. The eva family's is built where its presets are known (``fastvit.factory``)."""

    label: str
    presets: dict
    config_of: Callable
    timm_args: tuple
    state_dict: Callable
    model_cls: type
    split_drop_rate: bool = False  # fastvit's one drop rate is timm's three (the ViT family)
    timm_only: bool = False  # a field with no timm keyword is refused (else written to fastvit_args, with a warning)


VIT_FAMILY = TimmFamily("the ViT presets", PRESETS, get_config, TIMM_ARGS, to_timm_state_dict, nn.Module, True)


def eva_family(presets: dict, config_of: Callable) -> TimmFamily:
    """timm's ``Eva`` (the eva module's names ``presets``; EvaConfig's fields are its keywords)."""
    return TimmFamily("the eva family", presets, config_of, TIMM_EVA_ARGS, to_timm_eva_state_dict, Eva)


def naflex_family(presets: dict, config_of: Callable) -> TimmFamily:
    """timm's ``NaFlexVit`` (its ``naflexvit_*`` names ``presets``). timm builds every field from its
    keywords, so a field it has none for (``norm_eps``) is refused rather than saved aside."""
    return TimmFamily("the naflexvit family", presets, config_of, TIMM_NAFLEX_ARGS, to_timm_naflex_state_dict,
                      NaFlexVit, timm_only=True)


def model_args_for(model, architecture: str, family: TimmFamily = VIT_FAMILY) -> tuple[dict, dict]:
    """(timm's keywords, fastvit-only fields) that rebuild ``model.cfg`` from preset ``architecture``."""
    preset, cfg = family.config_of(architecture), model.cfg
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    timm_args, own = {}, {}
    for name in cfg.__dataclass_fields__:
        if name in _NOT_SAVED:
            continue
        value = getattr(cfg, name)
        differs = value != getattr(preset, name)
        if name == "img_size" and size is not None and tuple(size[-2:]) != tuple(value):
            differs = True  # timm would take the pretrained_cfg's input size otherwise
        if name == "in_chans" and size is not None and size[0] != value:
            differs = True
        if not differs:
            continue
        if name == "drop_rate" and family.split_drop_rate:  # fastvit's one rate is timm's three
            timm_args.update(drop_rate=value, pos_drop_rate=value, proj_drop_rate=value)
        elif name in family.timm_args:
            timm_args[name] = _json_value(value)
        else:
            own[name] = _json_value(value)
    return timm_args, own


def _closest_preset(model, family: TimmFamily) -> str:
    """The preset of ``family`` whose config differs from ``model.cfg`` in the fewest fields: where timm's
    keywords express every field (the naflexvit family), any preset rebuilds the model; the closest keeps
    ``model_args`` short."""
    def differing(name):
        preset = family.config_of(name)
        return sum(getattr(model.cfg, f) != getattr(preset, f) for f in model.cfg.__dataclass_fields__
                   if f not in _NOT_SAVED)

    return min(sorted(family.presets), key=differing)


def hub_config(model, model_config: dict | None = None, model_args: dict | None = None,
               architecture: str | None = None, family: TimmFamily = VIT_FAMILY) -> dict:
    """The config.json timm's ``save_for_hf`` writes for ``model`` (of ``family``)."""
    model_config = dict(model_config or {})
    pretrained_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    architecture = architecture or pretrained_cfg.get("architecture")
    if not architecture and family.timm_only and isinstance(model, family.model_cls):
        architecture = _closest_preset(model, family)  # e.g. a converted HF SigLIP 2 model: no timm name
    own_family = isinstance(model, family.model_cls) if family.model_cls is not nn.Module else \
        not isinstance(model, (Eva, NaFlexVit))
    if not own_family:
        raise TypeError(f"save_pretrained: a {type(model).__name__} is not a model of {family.label}; "
                        "fastvit.save_pretrained picks the family itself")
    if architecture not in family.presets:
        raise ValueError(f"save_pretrained needs the model's name among {family.label} (timm's architecture), got "
                         f"{architecture!r}; build the model with fastvit.create_model(name) or pass architecture=<name>")
    pretrained_cfg = {k: v for k, v in pretrained_cfg.items()
                      if k not in _SOURCE_FIELDS and (v is not None or k in _KEEP_NULL)}
    pretrained_cfg.pop("architecture", None)
    pretrained_cfg["architecture"] = architecture  # popped to the top level below, as timm
    config = {"architecture": pretrained_cfg.pop("architecture"),
              "num_classes": model_config.pop("num_classes", model.num_classes),
              "num_features": model_config.pop("num_features", model.num_features)}
    pool = model_config.pop("global_pool", model.global_pool)
    if isinstance(pool, str) and pool:
        config["global_pool"] = pool
    if "labels" in model_config:
        model_config.setdefault("label_names", model_config.pop("labels"))
    for key in ("label_names", "label_descriptions"):
        value = model_config.pop(key, None)
        if value:
            config[key] = value
    derived, own = model_args_for(model, architecture, family)
    args = {**derived, **(model_args or {})}
    if args:
        config["model_args"] = args
    if own and family.timm_only:
        raise ValueError(f"save_pretrained: {sorted(own)} differ from {architecture}'s and timm's NaFlexVit has no "
                         f"keyword for them ({', '.join(f'{k}={v!r}' for k, v in sorted(own.items()))}); timm would "
                         "build another model. Save a model with the preset's values, or use torch.save")
    if own:  # timm ignores this key; fastvit reads it
        config["fastvit_args"] = own
        warnings.warn(f"{sorted(own)} differ from {architecture}'s and have no timm keyword: fastvit rebuilds "
                      "them from config.json's fastvit_args, timm builds its model without them", stacklevel=3)
    config["pretrained_cfg"] = {k: _json_value(v) for k, v in pretrained_cfg.items()}
    config.update(model_config)
    return config


def save_pretrained(model, save_directory, model_config: dict | None = None, model_args: dict | None = None,
                    safe_serialization: bool | str = True, architecture: str | None = None,
                    family: TimmFamily = VIT_FAMILY) -> Path:
    """Write ``model`` as timm's ``save_for_hf`` does: config.json and the weights under timm's
    names (``safe_serialization``: True model.safetensors, False pytorch_model.bin, "both").
    ``timm.create_model("local-dir:<folder>", pretrained=True)`` and ``fastvit.create_model`` read it.
    Returns the folder. (``fastvit.save_pretrained`` passes the model's ``family``.)"""
    if safe_serialization not in (True, False, "both"):
        raise ValueError(f"safe_serialization must be True, False or 'both', got {safe_serialization!r}")
    config = hub_config(model, model_config, model_args, architecture, family)  # every check before any write
    tensors = {k: v.contiguous() for k, v in family.state_dict(model).items()}
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    if safe_serialization in (True, "both"):
        from safetensors.torch import save_file

        save_file(tensors, str(folder / SAFE_WEIGHTS))
    if safe_serialization in (False, "both"):
        torch.save(tensors, folder / TORCH_WEIGHTS)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def _model_card(repo_id: str, config: dict, model_card: dict | None) -> str:
    card = dict(model_card or {})
    license_ = config["pretrained_cfg"].get("license", "apache-2.0")
    lines = ["---", "tags:", "- image-classification", "- timm", "- fastvit", "library_name: timm",
             f"license: {license_}", "---", f"# Model card for {repo_id.split('/')[-1]}", "",
             card.get("description", f"A {config['architecture']} Vision Transformer in timm's format, saved by fastvit."),
             "", "```python", "import fastvit  # or: import timm", "",
             f'model = fastvit.create_model("hf-hub:{repo_id}", pretrained=True)', "```", ""]
    return "\n".join(lines)


def push_to_hub(model, repo_id: str, commit_message: str = "Add model", token: str | None = None,
                revision: str | None = None, private: bool = False, create_pr: bool = False,
                model_config: dict | None = None, model_card: dict | None = None, model_args: dict | None = None,
                safe_serialization: bool | str = "both", architecture: str | None = None,
                family: TimmFamily = VIT_FAMILY):
    """Upload ``model`` in timm's format (:func:`save_pretrained`) to Hub repo ``repo_id``, creating
    it if needed and adding a model card where the repo has none (timm's ``push_to_hf_hub``)."""
    import tempfile

    hub = _huggingface_hub()
    api = hub.HfApi(token=token, library_name="fastvit", library_version=_version())
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    has_readme = api.file_exists(repo_id=repo_id, filename="README.md", revision=revision)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, model_config=model_config, model_args=model_args,
                        safe_serialization=safe_serialization, architecture=architecture, family=family)
        if not has_readme:
            config = json.loads((Path(tmp) / "config.json").read_text())
            (Path(tmp) / "README.md").write_text(_model_card(repo_id, config, model_card))
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message)
