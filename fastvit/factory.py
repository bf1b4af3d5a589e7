"""Building models by name, timm's ``create_model`` contract: :func:`create_model`.

It sits above both the model and the checkpoint loaders, so neither imports the other.
Names are timm's (``fastvit.list_models()``), optionally with a pretrained tag
(``"vit_base_patch16_224.augreg2_in21k_ft_in1k"``, ``fastvit.list_pretrained()``), or a
timm-format source: ``"hf-hub:<org>/<repo>"`` or ``"local-dir:<folder>"``.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoints import load_checkpoint
from .checkpoints import hub_save
from .checkpoints.hf_config import HF_MODEL_TYPES, hf_config_fields, read_hf_config
from .checkpoints.hub import folder_model_config, hub_model_config, is_timm_folder, parse_source, pretrained_weights
from .checkpoints.load import convert_state_dict
from .checkpoints.pretrained_cfgs import (UnknownModelError, finish_cfg, pretrained_cfg as tag_cfg, split_tag,
                                          tags_for, timm_cfg_defaults)
from .features import features_only as wrap_features
from .eva import Eva
from .presets_eva import EVA_PRESETS, create_eva, get_eva_config, list_eva_models
from .naflex.config import NAFLEX_PRESETS, get_naflex_config, list_naflex_models
from .model import VisionTransformer
from .presets import PRESETS, get_config, pretrained_cfg_for
from .presets import get_config as get_vit_config
from .presets import list_models as list_vit_models

# timm's ViT keywords with no field of their own here: fastvit has one dropout rate for the
# position embedding, projections, MLP and head (the largest given is used)
_DROP_ALIASES = ("pos_drop_rate", "proj_drop_rate")
# timm's ViT keywords that fastvit's model always has at timm's default: accepted at that value only
_IGNORED_IF_DEFAULT = {"patch_drop_rate": 0.0, "weight_init": "", "fix_init": False, "scriptable": None,
                       "exportable": None, "no_jit": None, "pos_embed": "learn", "proj_bias": True,
                       "scale_attn_norm": False, "scale_mlp_norm": False, "pool_include_prefix": False}


def names_weights(model_name: str) -> bool:
    """Whether ``model_name`` itself says which weights to load: ``name.tag``, ``hf-hub:``, ``local-dir:``
    (for commands taking a model name: ``create_model(name, pretrained=names_weights(name))``)."""
    source, rest = parse_source(model_name)
    arch, tag = split_tag(rest)
    return source is not None or (bool(tag) and (arch in PRESETS or arch in EVA_PRESETS or arch in NAFLEX_PRESETS))


def list_models(pattern: str = "*") -> list[str]:
    """Every model name ``create_model`` builds (the ViT presets, timm's eva-module and naflexvit
    families), sorted; ``pattern`` is a shell-style wildcard (``"vit_base*"``)."""
    return sorted({*list_vit_models(pattern), *list_eva_models(pattern), *list_naflex_models(pattern)})


def get_config(name: str, **overrides):
    """The config of any model name ``create_model`` builds (``name.tag`` gives the name's), with
    ``overrides``: a :class:`fastvit.ViTConfig`, or an :class:`fastvit.eva.EvaConfig` for the eva family."""
    if isinstance(name, str) and name.partition(".")[0] in EVA_PRESETS:
        return get_eva_config(name.partition(".")[0], **overrides)
    if isinstance(name, str) and name.partition(".")[0] in NAFLEX_PRESETS:
        return get_naflex_config(name.partition(".")[0], **overrides)
    if isinstance(name, str) and name.partition(".")[0] not in PRESETS:
        _check_name(name.partition(".")[0], name)
    return get_vit_config(name, **overrides)


def _check_name(arch: str, model_name: str) -> None:
    if arch in PRESETS or arch in EVA_PRESETS or arch in NAFLEX_PRESETS:
        return
    if arch.startswith("fastvit_"):
        raise UnknownModelError(
            f"{model_name!r} is one of timm's fastvit_* models: Apple's FastViT, a convolutional / attention hybrid "
            "(RepMixer blocks), a different model from this package's Vision Transformers; build it with timm. "
            "fastvit.list_models() lists the ViTs this package has.")
    names = list_models()  # every family's: the ViT presets, the eva and naflexvit families
    close = difflib.get_close_matches(arch, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownModelError(f"unknown model {model_name!r}.{hint} fastvit.list_models() lists all {len(names)} models.")


def _as_cfg_dict(value, what: str) -> dict:
    if hasattr(value, "to_dict") and callable(value.to_dict):  # timm's PretrainedCfg
        value = value.to_dict()
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a tag (str), a dict or a timm PretrainedCfg, got {type(value).__name__}")
    return dict(value)


def resolve_pretrained_cfg(arch: str, pretrained_cfg=None, overlay=None) -> dict:
    """timm's ``resolve_pretrained_cfg``: a tag, a dict (timm's fields fill the rest) or the
    default tag's, then ``overlay`` on top."""
    if overlay is not None and not isinstance(overlay, dict):
        raise TypeError(f"pretrained_cfg_overlay must be a dict, got {type(overlay).__name__}")
    if isinstance(pretrained_cfg, str) and pretrained_cfg:
        cfg = tag_cfg(arch, pretrained_cfg)
    elif pretrained_cfg:
        cfg = finish_cfg({**timm_cfg_defaults(), **_as_cfg_dict(pretrained_cfg, "pretrained_cfg")})
    elif tags_for(arch):
        cfg = tag_cfg(arch)
    else:
        cfg = pretrained_cfg_for(arch, get_config(arch))
    overlay = dict(overlay or {})
    if not cfg.get("architecture"):
        overlay.setdefault("architecture", arch)
    return finish_cfg({**cfg, **overlay})


def _defaults_from_cfg(cfg: dict, kwargs: dict) -> None:
    """timm sets num_classes, in_chans and (a fixed input size) img_size from the pretrained_cfg,
    where the caller gave none."""
    n = cfg.get("num_classes")
    if n is not None and n >= 0:
        kwargs.setdefault("num_classes", n)
    if cfg.get("global_pool") is not None:
        kwargs.setdefault("global_pool", cfg["global_pool"])
    size = cfg.get("input_size")
    if size is not None:
        if len(size) != 3:
            raise ValueError(f"pretrained_cfg input_size must be (C, H, W), got {size!r}")
        kwargs.setdefault("in_chans", size[0])
        if cfg.get("fixed_input_size", False):
            kwargs.setdefault("img_size", tuple(size[-2:]))


def _config_fields(kwargs: dict) -> dict:
    """timm's ViT keywords -> ViTConfig fields (drop aliases folded, no-op ones dropped)."""
    kwargs = dict(kwargs)
    rates = [kwargs.pop(k) for k in _DROP_ALIASES if k in kwargs]
    if rates:
        kwargs["drop_rate"] = max([kwargs.get("drop_rate", 0.0), *rates])
    for key, default in _IGNORED_IF_DEFAULT.items():
        if key in kwargs:
            if kwargs[key] not in (default, None):
                raise ValueError(f"{key}={kwargs[key]!r}: fastvit's VisionTransformer has no such option "
                                 f"(only {default!r} is accepted)")
            del kwargs[key]
    if "img_size" in kwargs and isinstance(kwargs["img_size"], list):
        kwargs["img_size"] = tuple(kwargs["img_size"])
    return kwargs


def _adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """timm's rule for a first convolution trained on RGB: 1 channel sums them, more repeat them scaled."""
    dtype, w = weight.dtype, weight.float()
    if in_chans == 1:
        w = w.reshape(w.shape[0], w.shape[1] // 3, 3, *w.shape[2:]).sum(2) if w.shape[1] > 3 else w.sum(1, keepdim=True)
    elif in_chans != w.shape[1]:
        if w.shape[1] != 3:
            raise ValueError(f"cannot adapt a first convolution of {w.shape[1]} input channels to {in_chans}")
        w = w.repeat(1, -(-in_chans // 3), 1, 1)[:, :in_chans] * (3 / in_chans)
    return w.to(dtype)


def _load_pretrained(model, cfg: dict, state_dict: dict, source: str, head_classes: int) -> None:
    """timm's ``load_pretrained`` on fastvit's loader: adapt the first convolution to
    ``in_chans``, re-initialise the head when the class count differs, all-or-nothing."""
    sd = convert_state_dict(state_dict, source=source)
    first = cfg.get("first_conv")
    if model.cfg.in_chans != 3 and first:
        for name in (first,) if isinstance(first, str) else first:
            key = f"{name}.weight"
            if key in sd and sd[key].shape[1] != model.cfg.in_chans:
                sd[key] = _adapt_input_conv(sd[key], model.cfg.in_chans)
    if model.attn_pool is None:  # as timm: a pool the model was built without (global_pool != 'map') goes
        sd = {k: v for k, v in sd.items() if not k.startswith("attn_pool.")}
    with warnings.catch_warnings():
        if head_classes != cfg.get("num_classes"):  # asked for: the new head starts fresh, silently (as timm)
            warnings.filterwarnings("ignore", message=r".*classifier head.*")
            warnings.filterwarnings("ignore", message=r".*re-initialised the model's head.*")
        load_checkpoint(model, sd, layout="timm")


def _legacy_path_overrides(path, overrides: dict) -> dict:
    # a Hugging Face config.json beside the weights fixes what they cannot show (eps, heads);
    # keywords given here still win
    hf = read_hf_config(path)
    if hf is not None and hf.get("model_type") in HF_MODEL_TYPES:
        return {**hf_config_fields(hf, f"{path} (config.json)"), **overrides}
    return overrides


def create_model(
    model_name: str,
    pretrained: bool | str | os.PathLike = False,
    pretrained_cfg=None,
    pretrained_cfg_overlay: dict | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    **kwargs,
):
    """Build a model as ``timm.create_model`` does.

    ``model_name``: a preset (``fastvit.list_models()``), ``name.tag`` for one of timm's
    pretrained tags (``fastvit.list_pretrained()``), ``"hf-hub:<org>/<repo>"`` or
    ``"local-dir:<folder>"`` (a timm-format config.json + weights). ``pretrained``: False (random
    init), True (the tag's weights, or the default tag's, from the Hugging Face Hub through
    ``huggingface_hub``), or a path (a checkpoint file in any layout fastvit reads, a Hugging Face
    model folder, or a timm-format folder such as :func:`fastvit.save_pretrained` writes).
    ``pretrained_cfg``: a tag or a dict; ``pretrained_cfg_overlay``: fields over it. The
    pretrained_cfg sets ``num_classes``, ``in_chans`` and ``img_size`` where no keyword does.
    ``checkpoint_path``: a checkpoint loaded after building. ``cache_dir``: the Hub cache
    (default: huggingface_hub's, HF_HUB_CACHE / HF_HOME). ``features_only=True`` returns
    timm's feature wrapper (``out_indices``, default the last 3 blocks; ``feature_cls`` 'getter').
    Other keywords are ViTConfig fields (timm's ViT keywords, ``None`` meaning "not given").
    """
    if not isinstance(model_name, str) or not model_name:
        raise TypeError(f"model_name must be a non-empty string, got {model_name!r}")
    if pretrained is None:  # fastvit's earlier default
        pretrained = False
    if not isinstance(pretrained, (bool, str, os.PathLike, Mapping)):
        raise TypeError(f"pretrained must be False, True or a checkpoint path, got {type(pretrained).__name__}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    features = bool(kwargs.pop("features_only", False))
    feature_kwargs = {k: kwargs.pop(k) for k in ("out_indices", "feature_cls") if k in kwargs}
    feature_kwargs.update(kwargs.pop("feature_cfg", None) or {})
    source, model_id = parse_source(model_name)
    if source is not None:
        if pretrained_cfg:
            raise ValueError(f"pretrained_cfg cannot be given with {source}: (the repo's config.json is the pretrained_cfg)")
        read = hub_model_config(model_id, cache_dir) if source == "hf-hub" else folder_model_config(model_id)
        pretrained_cfg, arch, model_args = read
        for key, value in model_args.items():
            kwargs.setdefault(key, value)
        model_name = arch
    else:
        arch, tag = split_tag(model_id)
        if tag and not pretrained_cfg:
            pretrained_cfg = tag
    _check_name(arch, model_name)
    if arch in NAFLEX_PRESETS:
        return _create_naflex(arch, pretrained, pretrained_cfg, pretrained_cfg_overlay, checkpoint_path, cache_dir,
                              features, feature_kwargs, kwargs)
    if arch in EVA_PRESETS:
        return _create_eva(arch, pretrained, pretrained_cfg, pretrained_cfg_overlay, checkpoint_path, cache_dir,
                           features, feature_kwargs, kwargs)
    path = None if isinstance(pretrained, bool) else pretrained
    if isinstance(path, (str, os.PathLike)) and Path(path).is_dir() and is_timm_folder(path):
        # a timm-format folder (a training run, save_pretrained): its config.json rebuilds the model
        folder_cfg, _, model_args = folder_model_config(path)
        for key, value in model_args.items():
            kwargs.setdefault(key, value)
        pretrained_cfg, path, pretrained = folder_cfg, None, True
    elif isinstance(path, (str, os.PathLike)):
        kwargs = _legacy_path_overrides(path, kwargs)
    cfg = resolve_pretrained_cfg(arch, pretrained_cfg, pretrained_cfg_overlay)
    _defaults_from_cfg(cfg, kwargs)
    if not features:
        for key in ("out_indices", "feature_cls"):
            if key in feature_kwargs:
                raise ValueError(f"{key} is for features_only=True")
    weights = None
    if pretrained is True:  # everything read before anything is built: all-or-nothing
        weights = pretrained_weights(cfg, cache_dir)
    model = VisionTransformer(get_config(arch, **_config_fields(kwargs)))
    model.pretrained_cfg = model.default_cfg = cfg
    if path is not None:  # a checkpoint file or folder in any layout fastvit reads
        load_checkpoint(model, path)
    if weights is not None:
        _load_pretrained(model, cfg, weights[0], weights[1], model.num_classes)
    if checkpoint_path:
        load_checkpoint(model, checkpoint_path)
    return _as_features(model, cfg, feature_kwargs) if features else model


def _create_eva(arch, pretrained, pretrained_cfg, overlay, checkpoint_path, cache_dir, features, feature_kwargs, kwargs):
    """The eva-module family (EVA-02, DINOv3, PE, RoPE-ViT) by timm's contract: a tag's pretrained_cfg
    (sizes, classes), its weights from the Hub or a local timm file, a head of another class count
    re-initialised, all read before anything is built."""
    from .checkpoints.timm_eva import load_timm_eva

    path = None if isinstance(pretrained, bool) else pretrained
    if path is not None and Path(path).is_dir() and is_timm_folder(path):
        folder_cfg, _, model_args = folder_model_config(path)
        for key, value in model_args.items():
            kwargs.setdefault(key, value)
        pretrained_cfg, path, pretrained = folder_cfg, None, True
    cfg = resolve_pretrained_cfg(arch, pretrained_cfg, overlay)
    _defaults_from_cfg(cfg, kwargs)
    weights = pretrained_weights(cfg, cache_dir) if pretrained is True else None
    model = create_eva(arch, pretrained=path, **kwargs)
    model.pretrained_cfg = model.default_cfg = cfg
    if weights is not None:
        load_timm_eva(model, _fit_eva_checkpoint(model, dict(weights[0])))
    if checkpoint_path:
        load_timm_eva(model, checkpoint_path)
    return _as_features(model, cfg, feature_kwargs) if features else model


def _create_naflex(arch, pretrained, pretrained_cfg, overlay, checkpoint_path, cache_dir, features, feature_kwargs,
                   kwargs):
    """timm's naflexvit family by the same contract as the eva family: a tag's pretrained_cfg, its
    weights (Hub or a local timm file / folder), a head of another class count re-initialised."""
    from .checkpoints.timm_naflex import load_timm_naflex
    from .naflex import NaFlexVit

    path = None if isinstance(pretrained, bool) else pretrained
    if path is not None and Path(path).is_dir() and is_timm_folder(path):
        folder_cfg, _, model_args = folder_model_config(path)
        for key, value in model_args.items():
            kwargs.setdefault(key, value)
        pretrained_cfg, path, pretrained = folder_cfg, None, True
    cfg = resolve_pretrained_cfg(arch, pretrained_cfg, overlay)
    _defaults_from_cfg(cfg, kwargs)
    kwargs.pop("img_size", None)  # NaFlexVit takes any size; its grid is pos_embed_grid_size
    weights = pretrained_weights(cfg, cache_dir) if pretrained is True else None
    model = NaFlexVit(get_naflex_config(arch, **kwargs))
    model.pretrained_cfg = model.default_cfg = cfg
    if path is not None:
        load_timm_naflex(model, path)
    if weights is not None:
        load_timm_naflex(model, _fit_head(model, dict(weights[0])))
    if checkpoint_path:
        load_timm_naflex(model, checkpoint_path)
    return _as_features(model, cfg, feature_kwargs) if features else model


def _fit_head(model, sd: dict) -> dict:
    """A head the checkpoint lacks or sizes otherwise keeps the model's init (timm's rule)."""
    own = model.state_dict()
    for name in ("head.weight", "head.bias"):
        if name not in own:
            sd.pop(name, None)
        elif name not in sd or sd[name].shape != own[name].shape:
            sd[name] = own[name].detach().clone()
    return sd


def _fit_eva_checkpoint(model, sd: dict) -> dict:
    """timm's ``load_pretrained`` rules on an Eva state dict: a first convolution adapted to
    ``in_chans``, a head of another class count (or none) left as the model initialised it."""
    key = "patch_embed.proj.weight"
    if key in sd and model.cfg.in_chans != sd[key].shape[1]:
        sd[key] = _adapt_input_conv(sd[key], model.cfg.in_chans)
    own = model.state_dict()
    for name in ("head.weight", "head.bias"):  # a head the checkpoint lacks or sizes otherwise keeps the model's init
        if name not in own:
            sd.pop(name, None)
        elif name not in sd or sd[name].shape != own[name].shape:
            sd[name] = own[name].detach().clone()
    return sd


def _as_features(model, cfg: dict, feature_kwargs: dict):
    """timm's ``features_only`` wrapper around ``model``; its pretrained_cfg loses the head's fields, as timm's."""
    model = wrap_features(model, **feature_kwargs)
    model.pretrained_cfg = model.default_cfg = {k: v for k, v in cfg.items()
                                                if k not in ("num_classes", "classifier", "global_pool")}
    return model


_EVA_FAMILY = hub_save.eva_family(EVA_PRESETS, get_eva_config)
_NAFLEX_FAMILY = hub_save.naflex_family(NAFLEX_PRESETS, get_naflex_config)


def _save_family(model) -> hub_save.TimmFamily:
    if isinstance(model, Eva):
        return _EVA_FAMILY
    return _NAFLEX_FAMILY if isinstance(model, hub_save.NaFlexVit) else hub_save.VIT_FAMILY


def save_pretrained(model, save_directory, model_config: dict | None = None, model_args: dict | None = None,
                    safe_serialization: bool | str = True, architecture: str | None = None):
    """Write ``model`` in timm's Hub format (config.json + weights under timm's names), as timm's
    ``save_for_hf``: a ViT preset for timm's ``VisionTransformer``, an eva-family model for its ``Eva``,
    a naflexvit one for its ``NaFlexVit``.
    ``timm.create_model("local-dir:<folder>", pretrained=True)`` and ``fastvit.create_model`` read it
    (:func:`fastvit.checkpoints.hub_save.save_pretrained`). Returns the folder."""
    return hub_save.save_pretrained(model, save_directory, model_config, model_args, safe_serialization, architecture,
                                    family=_save_family(model))


def push_to_hub(model, repo_id: str, **kwargs):
    """Upload ``model`` in timm's format to Hub repo ``repo_id`` (:func:`fastvit.checkpoints.hub_save.push_to_hub`:
    commit_message, token, revision, private, create_pr, model_config, model_card, model_args,
    safe_serialization, architecture)."""
    return hub_save.push_to_hub(model, repo_id, family=_save_family(model), **kwargs)

