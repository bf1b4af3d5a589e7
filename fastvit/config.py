"""What fixes a model's architecture and implementation: :class:`ViTConfig` (presets: :mod:`fastvit.presets`)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def to_2tuple(v, name: str = "img_size") -> tuple[int, int]:
    """``v`` as a (height, width) pair of positive ints; an int means a square."""
    if _is_int(v):
        v = (v, v)
    elif isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise TypeError(f"{name} must be a positive int or a pair of positive ints, got {v!r}")
    v = tuple(v)
    if len(v) != 2 or not all(_is_int(i) for i in v):
        raise TypeError(f"{name} must be a positive int or a pair of positive ints, got {v!r}")
    if min(v) <= 0:
        raise ValueError(f"{name} must be positive, got {v!r}")
    return (int(v[0]), int(v[1]))


def _require(name: str, value, type_ok, expected: str, value_ok=lambda v: True) -> None:
    """TypeError when ``value`` has the wrong type, ValueError when it is out of range; both name the field."""
    if not type_ok(value):
        raise TypeError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")
    if not value_ok(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}")


GLOBAL_POOLS = ("token", "avg", "max", "avgmax", "")


def check_resample_convention(name) -> None:
    from .layers.embed import RESAMPLE_CONVENTIONS

    if name not in RESAMPLE_CONVENTIONS:
        raise ValueError(f"pos_embed_resample must be one of {sorted(RESAMPLE_CONVENTIONS)}, got {name!r}")


@dataclass
class ViTConfig:
    """Everything that fixes a VisionTransformer's architecture and implementation.

    Architecture fields change the parameters; the ``*_impl`` fields choose how
    the same parameters are computed and never change the state-dict keys.
    """

    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    global_pool: str = "token"  # timm's: "token" (class token) | "avg" | "max" | "avgmax" (of patch tokens) | "" (none)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    distilled: bool = False  # DeiT distillation token + second head
    representation_size: int | None = None  # pre-logits Linear + tanh
    fc_norm: bool | None = None  # LayerNorm after pooling instead of before; None: on for "avg" (timm's rule)
    drop_rate: float = 0.0  # after the position embedding, projections, MLP and before the head
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # stochastic depth, increasing linearly to this value over the blocks
    norm_eps: float = 1e-6
    dynamic_img_size: bool = False
    # How the position embedding is resampled to another grid (dynamic_img_size, set_input_size,
    # checkpoint loads): "timm" (bicubic, antialias) | "hf" (interpolate_pos_encoding, no antialias)
    # | "big_vision" (timm's .npz loader: bilinear) | "torchvision" (bicubic, align_corners).
    # The converters set it to the convention of the weights' source.
    pos_embed_resample: str = "timm"
    hybrid_layers: tuple[int, ...] | None = None  # ResNetV2 blocks per stage of a hybrid stem; patch_size = its stride
    # Implementation switches (see fastvit.layers): never change parameters.
    attn_impl: str = "auto"  # auto | triton | flash_attn | xformers | sdpa | eager
    norm_impl: str = "torch"  # torch | triton
    linear_impl: str = "torch"  # torch | triton (fc1+GELU, fc2+residual, out-proj+residual GEMMs)

    def __post_init__(self):
        self.img_size = to_2tuple(self.img_size)
        for name in ("patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            _require(name, getattr(self, name), _is_int, "a positive int", lambda v: v > 0)
        _require("num_classes", self.num_classes, _is_int, "an int >= 0", lambda v: v >= 0)
        _require("mlp_ratio", self.mlp_ratio, _is_real, "a finite number > 0", lambda v: 0 < v < math.inf)
        _require("norm_eps", self.norm_eps, _is_real, "a finite number > 0", lambda v: 0 < v < math.inf)
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            _require(name, getattr(self, name), _is_real, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0)
        for name in ("qkv_bias", "class_token", "distilled", "dynamic_img_size"):
            _require(name, getattr(self, name), lambda v: isinstance(v, bool), "True or False")
        if self.fc_norm is not None:
            _require("fc_norm", self.fc_norm, lambda v: isinstance(v, bool), "None, True or False")
        if self.representation_size is not None:
            _require("representation_size", self.representation_size, _is_int, "None or an int >= 0", lambda v: v >= 0)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if any(s % self.patch_size for s in self.img_size):
            raise ValueError(f"img_size {self.img_size} must be divisible by patch_size {self.patch_size}")
        if self.mlp_hidden_dim < 1:
            raise ValueError(f"mlp_ratio={self.mlp_ratio} gives an MLP of {self.mlp_hidden_dim} features at "
                             f"embed_dim={self.embed_dim}; it needs at least 1")
        if self.global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' without a class token")
        if self.distilled and not self.class_token:
            raise ValueError("distilled=True needs class_token=True (DeiT pools the class and distillation tokens)")
        check_resample_convention(self.pos_embed_resample)
        if self.hybrid_layers is not None:
            from .layers.resnetv2 import backbone_stride, check_layers

            self.hybrid_layers = check_layers(self.hybrid_layers)
            if self.patch_size != backbone_stride(self.hybrid_layers):
                raise ValueError(f"patch_size must be the hybrid backbone's stride {backbone_stride(self.hybrid_layers)}, got {self.patch_size}")
        self._check_impls()

    def _check_impls(self):
        from .layers import BACKENDS, LINEAR_IMPLS, NORM_LAYERS

        for name, valid in (("attn_impl", BACKENDS), ("norm_impl", NORM_LAYERS), ("linear_impl", LINEAR_IMPLS)):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, one of {list(valid)}; got {value!r}")
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {list(valid)}")

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + int(self.distilled)

    @property
    def num_tokens(self) -> int:
        gh, gw = self.grid_size
        return gh * gw + self.num_prefix_tokens

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def use_fc_norm(self) -> bool:
        return self.global_pool in ("avg", "max", "avgmax") if self.fc_norm is None else self.fc_norm

    def replace(self, **overrides) -> "ViTConfig":
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown ViTConfig field(s) {unknown}; valid: {sorted(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **overrides)

    def num_params(self) -> int:
        """Closed-form parameter count (what ``sum(p.numel())`` of the model gives)."""
        d, h = self.embed_dim, self.mlp_hidden_dim
        gh, gw = self.grid_size
        n = self.in_chans * self.patch_size**2 * d + d  # patch embedding
        if self.hybrid_layers is not None:  # ResNetV2 backbone + 1x1 projection instead
            from .layers.resnetv2 import backbone_width, resnetv2_num_params

            n = resnetv2_num_params(self.hybrid_layers, self.in_chans) + backbone_width(self.hybrid_layers) * d + d
        n += self.num_prefix_tokens * d + self.num_tokens * d  # prefix tokens, position embedding
        qkv_b = 3 * d if self.qkv_bias else 0
        block = 4 * d + (3 * d * d + qkv_b) + (d * d + d) + (d * h + h) + (h * d + d)
        n += self.depth * block + 2 * d  # blocks, final norm (or fc_norm)
        feat = d
        if self.representation_size:
            n += d * self.representation_size + self.representation_size
            feat = self.representation_size
        if self.num_classes:
            n += (feat * self.num_classes + self.num_classes) * (2 if self.distilled else 1)
        return n
