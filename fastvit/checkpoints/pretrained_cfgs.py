"""timm's pretrained tags and their ``pretrained_cfg`` for every architecture of timm's
vision_transformer, vision_transformer_hybrid and deit modules (timm 1.0.29).

The table is data (``timm_pretrained_cfgs.json``, written by ``scripts/gen_pretrained_cfgs.py``
from timm itself): per architecture its tags in timm's order, the first the default, and per tag
the fields that differ from timm's ``PretrainedCfg`` defaults. Only architectures that are
fastvit presets are offered (:func:`tags_for`, :func:`list_pretrained`).
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import re
from pathlib import Path

from ..presets import PRESETS

_TABLE = Path(__file__).with_name("timm_pretrained_cfgs.json")


class UnknownModelError(ValueError, RuntimeError):
    """An unknown model name or pretrained tag (a ``ValueError``, and timm's ``RuntimeError``)."""


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(_TABLE.read_text())


def _tuples(value):
    """JSON lists back to the tuples timm keeps (input_size, mean, std, ...)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def split_tag(name: str) -> tuple[str, str]:
    """``"arch.tag"`` -> ``("arch", "tag")``; no tag: ``""`` (timm's ``split_model_name_tag``)."""
    arch, _, tag = name.partition(".")
    return arch, tag


def _known(arch: str) -> bool:
    """A model fastvit builds: a ViT preset, or one of timm's eva-module names (the table holds
    exactly the modules fastvit covers)."""
    return arch in PRESETS or arch in _table()["archs"]


def tags_for(arch: str) -> list[str]:
    """timm's tags for model ``arch``, the default first; [] for a name timm has none for."""
    return list(_table()["archs"].get(arch, {})) if _known(arch) else []


def default_tag(arch: str) -> str | None:
    tags = tags_for(arch)
    return tags[0] if tags else None


def timm_cfg_defaults() -> dict:
    """timm's ``PretrainedCfg().to_dict()``: the fields every pretrained_cfg starts from."""
    return {k: _tuples(v) for k, v in _table()["defaults"].items()}


def pretrained_cfg(arch: str, tag: str | None = None) -> dict:
    """timm's ``pretrained_cfg`` (as ``model.pretrained_cfg`` holds it) for ``arch.tag``;
    ``tag=None``: the default tag. :class:`UnknownModelError` listing the tags for a tag timm
    does not have."""
    tags = _table()["archs"].get(arch) if _known(arch) else None
    if not tags:
        raise UnknownModelError(f"timm has no pretrained tags for {arch!r}" if _known(arch)
                                else f"unknown model {arch!r}; fastvit.list_models() lists the presets")
    tag = tag or next(iter(tags))
    if tag not in tags:
        raise UnknownModelError(f"unknown pretrained tag {tag!r} for {arch}; its tags (the first is the default): "
                                f"{', '.join(tags)}")
    entry = {k: _tuples(v) for k, v in tags[tag].items() if k != "pretrained"}
    order = _table()["fields"]
    return finish_cfg({**timm_cfg_defaults(), **entry}, order)


# fields timm keeps in a pretrained_cfg even when they are None (its filter_pretrained_cfg)
_KEEP_NULL = ("pool_size", "first_conv", "classifier")


def finish_cfg(cfg: dict, order=None) -> dict:
    """A pretrained_cfg as timm hands it out: None fields dropped (but pool_size, first_conv,
    classifier), timm's field order first, then any others; values as given (a config.json's lists stay lists)."""
    order = list(order or _table()["fields"])
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    return copy.deepcopy({k: cfg[k] for k in keys if cfg[k] is not None or k in _KEEP_NULL})


def has_weights(arch: str, tag: str) -> bool:
    """Whether timm lists ``arch.tag`` as pretrained (it names a Hub repo, a URL or a file)."""
    return bool(_table()["archs"].get(arch, {}).get(tag, {}).get("pretrained"))


def _natural_key(name: str) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name.lower())]


def _expand(pattern: str) -> list[str]:
    """A filter without a tag part also matches every tag of the names it matches (timm's rule)."""
    return [pattern] if "." in pattern else [f"{pattern}.*", pattern]


def list_pretrained(filter: str | list[str] = "", exclude_filters: str | list[str] = "") -> list[str]:
    """``name.tag`` for every pretrained tag of fastvit's presets, as ``timm.list_pretrained``:
    shell-style ``filter`` / ``exclude_filters`` (a string or a list), sorted naturally; a pattern
    without a tag part (``"vit_base_patch16_224"``) matches all that name's tags. A string
    ``exclude_filters`` is one pattern (timm 1.0.29 iterates such a string character by character
    and so excludes everything; a list gives the same result in both)."""
    def patterns(value) -> list[str]:
        if isinstance(value, str):
            value = [value] if value else []
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"filters must be a string or a list of strings, got {value!r}")
        return [p for v in value for p in _expand(v)]

    include, exclude = patterns(filter), patterns(exclude_filters)
    names = {f"{arch}.{tag}" for arch, tags in _table()["archs"].items() if _known(arch)
             for tag, cfg in tags.items() if cfg.get("pretrained")}
    if include:
        names = {n for p in include for n in fnmatch.filter(names, p)}
    for p in exclude:
        names -= set(fnmatch.filter(names, p))
    return sorted(names, key=_natural_key)
