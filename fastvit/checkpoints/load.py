"""``load_checkpoint``: read a file, recognise its layout, convert, validate, then load."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping

import torch

from ..layers.embed import check_interpolation
from .big_vision import convert_big_vision
from .common import CheckpointKeyError, fit_state_dict, shorten
from .files import read_checkpoint, unwrap
from ..layers import resample_options
from .hf_config import apply_honoured, check_against, hf_config_fields, read_hf_config
from .huggingface import convert_hf
from .huggingface import resample_convention as hf_resample_convention
from .open_clip import SIGNATURE as OPEN_CLIP_SIGNATURE
from .open_clip import convert_open_clip
from .options import check_options
from .tensors import check_entries
from .timm import convert_timm
from .torchvision import convert_torchvision

# layout -> (a key pattern only that layout has, converter). Checked in this order.
LAYOUTS = {
    "big_vision": (r"(?:.*/)?(?:embedding/kernel|Transformer/encoderblock.*)", convert_big_vision),
    "torchvision": (r"conv_proj\.weight|class_token|encoder\.layers\.encoder_layer_\d+\..*", convert_torchvision),
    "huggingface": (r"(?:(?:vit|deit|dinov2|dinov2_with_registers|vision_model)\.)?(?:embeddings\.patch_embeddings?\..*"
                    r"|encoder\.layers?\.\d+\..*|layers\.\d+\.attention\..*)", convert_hf),
    "open_clip": (OPEN_CLIP_SIGNATURE, convert_open_clip),
    "timm": (r"patch_embed\.proj\.weight|blocks\.\d+\..*", convert_timm),
}
# layout -> (how its own loader resamples a position embedding at load time, the convention
# the loaded model then resamples with at run time: dynamic_img_size, set_input_size).
# big_vision: timm's .npz loader resamples bilinearly, the timm model it fills then as timm.
RESAMPLE_BY_LAYOUT = {"timm": ("timm", "timm"), "open_clip": ("timm", "timm"), "big_vision": ("big_vision", "timm"),
                      "huggingface": ("hf", "hf"), "torchvision": ("torchvision", "torchvision")}
_EXAMPLES = {
    "big_vision": "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
    "torchvision": "encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
    "huggingface": "vit.layers.0.attention.q_proj.weight (5.x) or vit.encoder.layer.0.attention.attention.query.weight (4.x)",
    "open_clip": "visual.transformer.resblocks.0.attn.in_proj_weight",
    "timm": "blocks.0.attn.qkv.weight",
}


def detect_layout(keys, source: str = "checkpoint") -> str:
    """Which implementation's names ``keys`` use; ``ValueError`` when none fits."""
    keys = [k for k in keys if isinstance(k, str)]
    for layout, (signature, _) in LAYOUTS.items():
        if any(re.fullmatch(signature, k) for k in keys):
            return layout
    examples = "\n  ".join(f"{name}: {key}" for name, key in _EXAMPLES.items())
    raise ValueError(f"{source}: unknown checkpoint layout; its keys ({shorten(keys, 6)}) match none of\n  {examples}")


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], layout: str | None = None,
                       source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Any supported layout -> fastvit names. Keys no converter knows are kept as they
    are (loading then reports them as unexpected)."""
    check_entries(dict(state_dict), source, floating=False)
    layout = layout or detect_layout(state_dict, source)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {list(LAYOUTS)}")
    try:
        converted, unknown = LAYOUTS[layout][1](dict(state_dict))
    except CheckpointKeyError as e:  # a q/k/v triple with a part missing
        raise CheckpointKeyError(f"{source} ({layout} layout): {e}") from e
    except ValueError as e:  # a tensor the layout's transform cannot take
        raise ValueError(f"{source} ({layout} layout): {e}") from e
    converted.update(unknown)
    return converted


def _check_arguments(model, checkpoint, strict, layout, interpolation, antialias) -> None:
    if not (isinstance(model, torch.nn.Module) and hasattr(model, "cfg") and isinstance(getattr(model, "pos_embed", None), torch.Tensor)):
        raise TypeError(f"load_checkpoint takes a fastvit VisionTransformer, got {type(model).__name__}")
    if isinstance(checkpoint, torch.nn.Module):
        raise TypeError(f"checkpoint is a {type(checkpoint).__name__} module; pass its state_dict() or fastvit.from_timm/"
                        "from_hf/from_torchvision for an in-memory model")
    if not isinstance(checkpoint, (Mapping, str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path or a state dict (a Mapping of name -> tensor), got {type(checkpoint).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be True or False, got {strict!r}")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {list(LAYOUTS)} (or None to detect it)")
    check_interpolation(interpolation, antialias)


def _prepare(model, state_dict: dict, source: str) -> dict:
    """Plain tensors in the dtypes of the model's, so that ``load_state_dict`` only copies
    (same shape, same dtype): whatever conversion could fail fails here, before any write.
    A conversion costs memory only where a dtype differs, as the copy would anyway."""
    expected = model.state_dict()
    prepared = {}
    with torch.no_grad():
        for key, value in state_dict.items():
            if key in expected:
                try:
                    value = value.detach()
                    if type(value) is not torch.Tensor:  # a tensor subclass: its own copy_ may do anything
                        value = value.as_subclass(torch.Tensor)
                    value = value.to(dtype=expected[key].dtype)
                except Exception as e:
                    raise ValueError(f"{source}: {key} cannot be converted to {expected[key].dtype}: "
                                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
            prepared[key] = value
    return prepared


def load_checkpoint(
    model,
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    strict: bool = True,
    *,
    layout: str | None = None,
    interpolation: str | None = None,
    antialias: bool | None = None,
):
    """Load weights saved by timm, torchvision, Hugging Face transformers or big_vision into ``model``.

    ``checkpoint``: a .safetensors, .pth/.pt/.bin/.ckpt or .npz file, a Hugging
    Face model directory, or an already loaded state dict. The layout is
    recognised from the key names (or forced with ``layout=``). A position
    embedding for another grid is resampled as the layout's own library does
    (timm: bicubic with antialias; Hugging Face: ``interpolate_pos_encoding``, no
    antialias; big_vision .npz: timm's npz loader, bilinear; torchvision:
    ``interpolate_embeddings``, align_corners) unless ``interpolation``/``antialias``
    say otherwise, and ``model.cfg.pos_embed_resample`` is set to that source's
    convention. A Hugging Face file's ``config.json`` (in the directory or beside
    the file) is read: its ``layer_norm_eps`` replaces the model's, and a head
    count, activation or size it contradicts is refused. A classifier head for
    another number of classes is dropped with a warning and the model's head re-initialised.

    Everything is converted and checked before the first parameter is written,
    so on any error the model is left exactly as it was. Errors:
    ``FileNotFoundError``, ``ImportError`` (safetensors), ``ValueError`` (bad
    file, unknown layout, shape mismatch), ``KeyError`` (missing / unexpected
    keys; ``strict=False`` loads the rest and warns). Returns ``model``.
    """
    _check_arguments(model, checkpoint, strict, layout, interpolation, antialias)
    if isinstance(checkpoint, Mapping):
        source = "state dict"
        raw = unwrap(dict(checkpoint), source)
    else:
        source = os.fspath(checkpoint)
        raw = read_checkpoint(checkpoint)
    layout = layout or detect_layout(raw, source)
    state_dict = convert_state_dict(raw, layout, source)
    honoured = {}
    if layout == "huggingface" and not isinstance(checkpoint, Mapping):
        honoured = _hf_config_changes(model, checkpoint, source)
    state_dict, option_notices = check_options(model, state_dict, f"{source} ({layout} layout)", strict)
    load_time, run_time = RESAMPLE_BY_LAYOUT.get(layout, ("timm", "timm"))
    if layout == "huggingface":  # DINOv2 with registers resamples as timm does
        load_time = run_time = hf_resample_convention(raw)
    options = resample_options(load_time)
    options.update({k: v for k, v in (("interpolation", interpolation), ("antialias", antialias)) if v is not None})
    state_dict, notices = fit_state_dict(model, state_dict, strict=strict, source=f"{source} ({layout} layout)", **options)
    state_dict = _prepare(model, state_dict, f"{source} ({layout} layout)")
    with torch.no_grad():
        model.load_state_dict(state_dict, strict=strict)
    apply_honoured(model, {**honoured, "pos_embed_resample": run_time})
    for notice in option_notices + notices:
        warnings.warn(notice, stacklevel=2)
    return model


def _hf_config_changes(model, checkpoint, source: str) -> dict:
    """Values of the config.json beside a Hugging Face checkpoint that the model must take."""
    c = read_hf_config(checkpoint)
    if c is None:
        return {}
    what = f"{source} (config.json)"
    return check_against(model.cfg, hf_config_fields(c, what), what)
