"""Google's JAX/Flax ViT checkpoints (.npz): google-research/vision_transformer and big_vision.

Flax stores Dense kernels as (in, out), the patch-embedding kernel as
(p, p, C, D) and attention projections per head: query/key/value kernels
(D, H, Dh), the output kernel (H, Dh, D). The original release names the block
parts LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3 and
keeps the position embedding (class token included) under
``Transformer/posembed_input``; big_vision numbers them 0, 0, 1, 0, puts
``pos_embedding`` at the top (no class-token entry) and may stack all blocks
along a leading axis (``Transformer/encoderblock/...``, scanned). Keys may sit
under ``opt/target/``, ``params/`` or ``params/img/``.
"""

from __future__ import annotations

import re

import torch

from .common import Rule, rename

_PREFIXES = ("opt/target/", "params/img/", "params/")
_BLOCK = r"Transformer/encoderblock_(\d+)/"
_MHA = _BLOCK + r"MultiHeadDotProductAttention_[01]/"


def _dense(w: torch.Tensor) -> torch.Tensor:
    if w.ndim != 2:
        raise ValueError(f"a Dense kernel is 2-D (in, out), got {w.ndim}-D")
    return w.T  # (in, out) -> (out, in)


def _qkv_kernel(w: torch.Tensor) -> torch.Tensor:
    return w.flatten(1).T  # (D, H, Dh) -> (H*Dh, D)


def _out_kernel(w: torch.Tensor) -> torch.Tensor:
    return w.flatten(0, 1).T  # (H, Dh, D) -> (D, H*Dh)


def _conv_kernel(w: torch.Tensor) -> torch.Tensor:
    return w.permute(3, 2, 0, 1)  # (p, p, C, D) -> (D, C, p, p)


_RULES: list[Rule] = [
    (r"embedding/kernel", "patch_embed.proj.weight", _conv_kernel),
    (r"embedding/bias", "patch_embed.proj.bias", None),
    (r"cls", "cls_token", None),
    (r"(?:Transformer/posembed_input/)?pos_embedding", "pos_embed", None),
    (_BLOCK + r"LayerNorm_0/scale", r"blocks.\1.norm1.weight", None),
    (_BLOCK + r"LayerNorm_0/bias", r"blocks.\1.norm1.bias", None),
    *[(_MHA + rf"{name}/kernel", rf"blocks.\1.attn.qkv.weight#{name[0]}", _qkv_kernel) for name in ("query", "key", "value")],
    *[(_MHA + rf"{name}/bias", rf"blocks.\1.attn.qkv.bias#{name[0]}", lambda b: b.flatten()) for name in ("query", "key", "value")],
    (_MHA + r"out/kernel", r"blocks.\1.attn.proj.weight", _out_kernel),
    (_MHA + r"out/bias", r"blocks.\1.attn.proj.bias", None),
    (_BLOCK + r"LayerNorm_[12]/scale", r"blocks.\1.norm2.weight", None),
    (_BLOCK + r"LayerNorm_[12]/bias", r"blocks.\1.norm2.bias", None),
    (_BLOCK + r"MlpBlock_[03]/Dense_0/kernel", r"blocks.\1.mlp.fc1.weight", _dense),
    (_BLOCK + r"MlpBlock_[03]/Dense_0/bias", r"blocks.\1.mlp.fc1.bias", None),
    (_BLOCK + r"MlpBlock_[03]/Dense_1/kernel", r"blocks.\1.mlp.fc2.weight", _dense),
    (_BLOCK + r"MlpBlock_[03]/Dense_1/bias", r"blocks.\1.mlp.fc2.bias", None),
    (r"Transformer/encoder_norm/scale", "norm.weight", None),
    (r"Transformer/encoder_norm/bias", "norm.bias", None),
    (r"head/kernel", "head.weight", _dense),
    (r"head/bias", "head.bias", None),
    (r"pre_logits/kernel", "pre_logits.fc.weight", _dense),
    (r"pre_logits/bias", "pre_logits.fc.bias", None),
]


def _strip_prefix(arrays: dict) -> dict:
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + "embedding/") for k in arrays):
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    return arrays


def _unscan(arrays: dict) -> dict:
    """Scanned blocks (one array per parameter, blocks along axis 0) -> encoderblock_N keys."""
    out = {}
    for key, value in arrays.items():
        m = re.fullmatch(r"Transformer/encoderblock/(.+)", key)
        if m is None:
            out[key] = value
        else:
            if value.ndim < 1:
                raise ValueError(f"{key}: a scanned block parameter needs a leading block axis, got a 0-d tensor")
            for i in range(value.shape[0]):
                out[f"Transformer/encoderblock_{i}/{m.group(1)}"] = value[i]
    return out


def convert_big_vision(arrays: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Flax names and layouts -> fastvit; returns (converted, entries no rule knows)."""
    arrays = _unscan(_strip_prefix(arrays))
    return rename(arrays, _RULES)
