"""A training run's folder is a model: timm's local-dir layout, plus what resuming needs.

``DIR/config.json`` follows what ``timm.models.push_to_hf_hub`` writes and
``timm.create_model("local-dir:DIR")`` reads::

    {"architecture": "vit_tiny_patch16_224", "num_classes": 10, "num_features": 32,
     "global_pool": "token", "label_names": ["0", ..., "9"],
     "model_args": {"img_size": 8, "patch_size": 4, "depth": 2, ...},   # the preset's overrides
     "pretrained_cfg": {"input_size": [3, 8, 8], "mean": [...], "std": [...],
                        "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash",
                        "num_classes": 10, "label_names": [...], ...},
     "fastvit": {"objective": "supervised", "impl": {...}}}

beside ``DIR/model.safetensors`` (fastvit = timm names). :func:`load_run` rebuilds
the model from them; :func:`read_run_config` gives ``(architecture, model_args,
pretrained_cfg)`` to a caller that builds the model itself (``create_model``).
Folders written before this layout (``{"model", "overrides", "classes"}``) are read too.

Writes go to a temporary file renamed over the old one, so an interrupted write
leaves the previous file whole.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# ViTConfig fields that choose an implementation, not the architecture: kept out of model_args
RUNTIME_FIELDS = ("attn_impl", "norm_impl", "linear_impl", "varlen_impl")
# What a run writes; --overwrite removes exactly these (and nothing else the folder holds)
RUN_FILES = ("config.json", "model.safetensors", "metrics.jsonl", "curves.png", "run.json")
RUN_DIRS = ("state", "state.tmp", "state.old")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def model_args(overrides: dict) -> dict:
    """The architecture overrides of a preset (no implementation choice, no class count)."""
    return {k: v for k, v in overrides.items() if k not in RUNTIME_FIELDS and k != "num_classes"}


def preprocessing_cfg(name: str, model_cfg, classes: list[str] | None, interpolation: str = "bilinear") -> dict:
    """``pretrained_cfg`` of a trained model: how fastvit.train fed it its images
    (resized whole to the input size, ``crop_mode="squash"``, scaled to [-1, 1])."""
    from .objectives import MEAN, STD

    cfg = {"architecture": name, "tag": None, "input_size": [model_cfg.in_chans, *model_cfg.img_size],
           "fixed_input_size": not model_cfg.dynamic_img_size, "interpolation": interpolation, "crop_pct": 1.0,
           "crop_mode": "squash", "mean": [MEAN] * model_cfg.in_chans, "std": [STD] * model_cfg.in_chans,
           "num_classes": model_cfg.num_classes, "first_conv": "patch_embed.proj",
           "classifier": ["head", "head_dist"] if model_cfg.distilled else "head"}
    if classes and model_cfg.num_classes:
        cfg["label_names"] = list(classes)
    return cfg


def write_run_config(out: Path, name: str, overrides: dict, classes: list[str] | None, objective: str,
                     extra: dict | None = None, naflex: dict | None = None) -> dict:
    """Write ``out/config.json`` for model ``name`` built with ``overrides``; returns the document.
    ``naflex``: a NaFlexVit run's fields (:func:`fastvit.train.naflex.run_config_doc`)."""
    if naflex is not None:
        doc = {"architecture": name, **{k: naflex[k] for k in ("num_classes", "num_features", "global_pool")}}
        pcfg = naflex["pretrained_cfg"]
    else:
        from ..presets import get_config

        model_cfg = get_config(name, **overrides)
        doc = {"architecture": name, "num_classes": model_cfg.num_classes, "num_features": model_cfg.embed_dim,
               "global_pool": model_cfg.global_pool}
        pcfg = preprocessing_cfg(name, model_cfg, classes)
    if classes and doc["num_classes"]:
        doc["label_names"] = list(classes)
    doc["model_args"] = _jsonable(model_args(overrides))
    doc["pretrained_cfg"] = pcfg
    doc["fastvit"] = {"objective": objective, "impl": {k: overrides[k] for k in RUNTIME_FIELDS if k in overrides},
                      **(extra or {})}
    atomic_write_text(out / "config.json", json.dumps(doc, indent=2) + "\n")
    return doc


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _args_from_json(args: dict) -> dict:
    """JSON lists back to tuples where a ViTConfig field takes a tuple (img_size, hybrid_layers)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}


def read_run_config(path: str | os.PathLike) -> tuple[str, dict, dict] | None:
    """``(architecture, model_args incl. num_classes, pretrained_cfg)`` of a run folder (or of the
    ``config.json`` beside a run's ``model.safetensors``); None if it is not one."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path.with_name("config.json")
    if not file.is_file():
        return None
    try:
        doc = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{file}: not a readable JSON config ({e})") from e
    if not isinstance(doc, dict):
        return None
    if "architecture" in doc and "model_type" not in doc:  # timm local-dir (a run folder or timm's own)
        args = _args_from_json(doc.get("model_args") or {})
        if "num_classes" in doc:
            args["num_classes"] = doc["num_classes"]
        pcfg = dict(doc.get("pretrained_cfg") or {})
        if "label_names" in doc and "label_names" not in pcfg:
            pcfg["label_names"] = doc["label_names"]
        return doc["architecture"], args, pcfg
    if "model" in doc and "overrides" in doc:  # a run folder written before the local-dir layout
        args = _args_from_json(model_args(doc["overrides"]))
        args["num_classes"] = doc["overrides"].get("num_classes", 1000)
        return doc["model"], args, {}
    return None


def is_run_folder(path) -> bool:
    return Path(path).is_dir() and read_run_config(path) is not None


def load_run(path: str | os.PathLike, **overrides):
    """The model a run folder (or a timm local-dir folder of a fastvit preset) holds, with its
    weights, and ``pretrained_cfg`` carrying the run's preprocessing and label names.
    ``overrides``: ViTConfig fields to change (``attn_impl``, ``dynamic_img_size``, ...)."""
    from ..checkpoints import load_checkpoint
    from ..model import VisionTransformer
    from ..presets import get_config, pretrained_cfg_for

    path = Path(path)
    found = read_run_config(path)
    if found is None:
        raise ValueError(f"{path}: no run config.json (expected 'architecture' and 'model_args', as fastvit train writes)")
    name, args, pcfg = found
    weights = path / "model.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: the run did not finish (continue it with fastvit train --resume {path})")
    if pcfg.get("crop_mode") == "naflex":  # a NaFlexVit trained with --naflex
        from ..naflex import create_naflex

        model = create_naflex(name, **{**args, **overrides})
        model.pretrained_cfg = model.default_cfg = dict(pcfg)
        from ..checkpoints.files import read_checkpoint

        model.load_state_dict(read_checkpoint(weights), strict=True)
        return model
    model = VisionTransformer(get_config(name, **{**args, **overrides}))
    model.pretrained_cfg = model.default_cfg = {**pretrained_cfg_for(name, model.cfg), **pcfg}
    load_checkpoint(model, str(weights))
    return model


def run_status(out: Path) -> str | None:
    """``"finished"``, ``"stopped"`` (resumable), ``"weights"`` (a model.safetensors of no run),
    ``"incomplete"`` (a run stopped before its first save: nothing to lose), or None."""
    from .checkpointing import has_state

    if (out / "model.safetensors").is_file() and (out / "run.json").is_file():
        return "finished"
    if has_state(out):
        return "stopped"
    if (out / "model.safetensors").is_file():
        return "weights"
    if any((out / n).exists() for n in RUN_FILES):
        return "incomplete"
    return None


def clear_run(out: Path) -> None:
    """Remove a run's own files and folders from ``out`` (for ``--overwrite``); other files stay."""
    for n in RUN_FILES:
        (out / n).unlink(missing_ok=True)
    for n in RUN_DIRS:
        shutil.rmtree(out / n, ignore_errors=True)
