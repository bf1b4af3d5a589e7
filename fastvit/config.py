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


GLOBAL_POOLS = ("token", "avg", "max", "avgmax", "map", "")
# MLP activations (timm's names; fastvit.layers.activations builds them) and MLP kinds.
ACT_LAYERS = ("gelu", "gelu_tanh", "quick_gelu", "silu")
MLP_LAYERS = ("mlp", "swiglu", "swiglu_unpacked")  # "swiglu": timm's SwiGLUPacked (GluMlp: fc1 D->H, act(x1) * x2, fc2 H/2->D)
# timm's block_fn: "pre_norm" (Block), "res_post_norm" (ResPostBlock), "parallel" (ParallelThingsBlock:
# num_parallel attentions, then as many MLPs), "parallel_scaling" (ParallelScalingBlock: attention and
# MLP from one input projection), "diff_parallel_scaling" (the same with differential attention)
BLOCK_TYPES = ("pre_norm", "res_post_norm", "parallel", "parallel_scaling", "diff_parallel_scaling")
ATTN_LAYERS = ("attn", "diff")  # timm's attn_layer: softmax attention | differential attention
NORM_LAYERS = ("layernorm", "rmsnorm")
HYBRID_STEMS = ("resnetv2", "resnetd", "mci")  # BiT ResNetV2 | ResNet-D (BatchNorm) | MobileCLIP's MCI stem


# The implementation switches' names; fastvit.layers maps each to its classes
# (tests/test_config.py holds these names and the layers' tables to each other).
ATTN_IMPLS = ("auto", "triton", "flash_attn", "xformers", "sdpa", "eager")
NORM_IMPLS = ("auto", "torch", "triton")
LINEAR_IMPLS = ("auto", "torch", "triton")


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
    # timm's: "token" (class token) | "avg" | "max" | "avgmax" (of patch tokens) | "map" (attention
    # pooling with a learned latent query, ``attn_pool``) | "" (none)
    global_pool: str = "token"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_norm: bool = False  # LayerNorm(head_dim) on queries and keys (attn.q_norm / attn.k_norm)
    init_values: float | None = None  # LayerScale (blocks.i.ls1/ls2.gamma) initialised to this; None: none
    class_token: bool = True
    reg_tokens: int = 0  # register tokens (reg_token, 1 x R x D), after the class token
    no_embed_class: bool = False  # pos_embed covers the patches only; prefix tokens get none (DeiT III, big_vision)
    distilled: bool = False  # DeiT distillation token + second head
    pre_norm: bool = False  # LayerNorm (norm_pre) after the position embedding (CLIP)
    patch_bias: bool | None = None  # patch_embed.proj bias; None: ``not pre_norm`` (timm's rule)
    final_norm: bool = True  # False: no final norm at all (norm and fc_norm both Identity)
    representation_size: int | None = None  # pre-logits Linear + tanh
    fc_norm: bool | None = None  # LayerNorm after pooling instead of before; None: on for "avg" (timm's rule)
    act_layer: str = "gelu"  # MLP activation: gelu | gelu_tanh | quick_gelu (x * sigmoid(1.702 x)) | silu
    mlp_layer: str = "mlp"  # mlp | swiglu (needs act_layer="silu"; fc1 D->H, fc2 H/2->D)
    drop_rate: float = 0.0  # after the position embedding, projections, MLP and before the head
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # stochastic depth, increasing linearly to this value over the blocks
    norm_eps: float = 1e-6
    dynamic_img_size: bool = False
    dynamic_img_pad: bool = False  # pad images (right / bottom) to a multiple of patch_size, as timm
    # How the position embedding is resampled to another grid (dynamic_img_size, set_input_size,
    # checkpoint loads): "timm" (bicubic, antialias) | "hf" (interpolate_pos_encoding, no antialias)
    # | "big_vision" (timm's .npz loader: bilinear) | "torchvision" (bicubic, align_corners).
    # The converters set it to the convention of the weights' source.
    pos_embed_resample: str = "timm"
    hybrid_layers: tuple[int, ...] | None = None  # blocks per stage of a hybrid stem (() the stem alone); None: no stem
    hybrid_stem: str = "resnetv2"  # the hybrid stem's network (HYBRID_STEMS); patch_size = pixels per token
    block_type: str = "pre_norm"  # BLOCK_TYPES (fastvit.layers.block_layouts)
    num_parallel: int = 2  # branches of a "parallel" block
    attn_layer: str = "attn"  # ATTN_LAYERS; "diff": differential attention (fastvit.layers.diff_attention)
    norm_layer: str = "layernorm"  # NORM_LAYERS: every norm of the model (the attention pool's aside)
    scale_norm: bool = False  # timm's scale_attn_norm + scale_mlp_norm (BEiT-3): attn.norm before proj, mlp.norm before fc2
    pool_include_prefix: bool = False  # pooling ("avg", "max", "avgmax", "map") over the prefix tokens too
    proj_bias: bool = True  # False: attention and MLP projections without bias (AIMv2)
    patch_norm: bool = False  # a norm after the patch embedding (patch_embed.norm, AIMv2)
    # Implementation switches (see fastvit.layers): never change parameters.
    attn_impl: str = "auto"  # auto | triton | flash_attn | xformers | sdpa | eager
    # auto: per op and shape the faster of PyTorch's op and fastvit's kernel on this GPU (measured
    # once, cached; PyTorch's off CUDA) -- see fastvit.layers.impls and fastvit.dispatch
    norm_impl: str = "auto"  # auto | torch | triton
    linear_impl: str = "auto"  # auto | torch | triton (fc1+GELU, fc2+residual, out-proj+residual GEMMs)

    def __post_init__(self):
        self.img_size = to_2tuple(self.img_size)
        for name in ("patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            _require(name, getattr(self, name), _is_int, "a positive int", lambda v: v > 0)
        _require("num_classes", self.num_classes, _is_int, "an int >= 0", lambda v: v >= 0)
        _require("mlp_ratio", self.mlp_ratio, _is_real, "a finite number > 0", lambda v: 0 < v < math.inf)
        _require("norm_eps", self.norm_eps, _is_real, "a finite number > 0", lambda v: 0 < v < math.inf)
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            _require(name, getattr(self, name), _is_real, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0)
        for name in ("qkv_bias", "qk_norm", "class_token", "no_embed_class", "distilled", "pre_norm", "final_norm",
                     "dynamic_img_size", "dynamic_img_pad", "scale_norm", "pool_include_prefix", "proj_bias", "patch_norm"):
            _require(name, getattr(self, name), lambda v: isinstance(v, bool), "True or False")
        for name in ("fc_norm", "patch_bias"):
            if getattr(self, name) is not None:
                _require(name, getattr(self, name), lambda v: isinstance(v, bool), "None, True or False")
        _require("reg_tokens", self.reg_tokens, _is_int, "an int >= 0", lambda v: v >= 0)
        if self.init_values is not None:  # timm treats 0 as "no LayerScale": say None for that
            _require("init_values", self.init_values, _is_real, "None or a finite number > 0 (None: no LayerScale)",
                     lambda v: 0 < v < math.inf)
        _require("num_parallel", self.num_parallel, _is_int, "a positive int", lambda v: v > 0)
        for name, valid in (("act_layer", ACT_LAYERS), ("mlp_layer", MLP_LAYERS), ("block_type", BLOCK_TYPES),
                            ("attn_layer", ATTN_LAYERS), ("norm_layer", NORM_LAYERS), ("hybrid_stem", HYBRID_STEMS)):
            _require(name, getattr(self, name), lambda v: isinstance(v, str), f"one of {list(valid)}", lambda v: v in valid)
        if self.representation_size is not None:
            _require("representation_size", self.representation_size, _is_int, "None or an int >= 0", lambda v: v >= 0)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        # As timm, an img_size that is not a multiple of patch_size keeps floor(img_size / patch_size)
        # patches a side (the convolution leaves the last pixels out: SigLIP so400m at 384 with 14)
        if any(s < self.patch_size for s in self.img_size):
            raise ValueError(f"img_size {self.img_size} is smaller than one patch ({self.patch_size})")
        if self.mlp_fc2_in_dim < 1:
            raise ValueError(f"mlp_ratio={self.mlp_ratio} gives an MLP of {self.mlp_hidden_dim} features at "
                             f"embed_dim={self.embed_dim}; it needs at least {2 if self.mlp_layer == 'swiglu' else 1}")
        self._check_combinations()
        check_resample_convention(self.pos_embed_resample)
        if self.hybrid_layers is not None:
            from .layers.conv_stems import check_stem

            self.hybrid_layers = check_stem(self.hybrid_stem, self.hybrid_layers, self.patch_size, self.embed_dim)
            if any(s % self.patch_size for s in self.img_size):
                raise ValueError(f"img_size {self.img_size} must be divisible by the hybrid stem's stride {self.patch_size}")
        self._check_impls()

    def _check_combinations(self):
        """Options that only make sense together (each message says which field to change)."""
        if self.global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' or 'map' without a class token")
        if self.distilled and not self.class_token:
            raise ValueError("distilled=True needs class_token=True (DeiT pools the class and distillation tokens)")
        if self.distilled and self.global_pool == "map":
            raise ValueError("distilled=True pools the class and distillation tokens; it cannot take global_pool='map'")
        if self.distilled and self.reg_tokens:
            # timm's DeiT keeps num_prefix_tokens=2 and never puts its reg_token in the sequence
            raise ValueError(f"reg_tokens={self.reg_tokens} with distilled=True is not supported "
                             "(timm's distilled DeiT ignores register tokens); use reg_tokens=0")
        if not self.proj_bias and (self.block_type != "pre_norm" or self.attn_layer != "attn" or self.mlp_layer == "swiglu"
                                   or self.scale_norm):
            raise ValueError("proj_bias=False is for the pre_norm block with softmax attention and an 'mlp' or "
                             "'swiglu_unpacked' MLP")
        if self.mlp_layer == "swiglu_unpacked" and (self.block_type != "pre_norm" or self.scale_norm):
            raise ValueError("mlp_layer='swiglu_unpacked' goes in the pre_norm block without scale_norm")
        if self.patch_norm and self.hybrid_layers is not None:
            raise ValueError("patch_norm=True normalizes the patch embedding's tokens; a hybrid stem has none")
        if self.mlp_layer == "swiglu":
            if self.act_layer != "silu":
                raise ValueError(f"mlp_layer='swiglu' needs act_layer='silu' (SwiGLU gates with SiLU), got {self.act_layer!r}")
            if self.mlp_hidden_dim % 2:
                raise ValueError(f"mlp_layer='swiglu' splits fc1's {self.mlp_hidden_dim} outputs in two halves: "
                                 f"int(embed_dim * mlp_ratio) must be even (embed_dim={self.embed_dim}, mlp_ratio={self.mlp_ratio})")
        if self.block_type != "pre_norm" and self.attn_layer != "attn":
            raise ValueError(f"attn_layer={self.attn_layer!r} goes in the pre_norm block; block_type={self.block_type!r} "
                             "has its own attention (diff_parallel_scaling: differential)")
        if self.scale_norm and (self.block_type not in ("pre_norm", "parallel") or self.attn_layer != "attn" or self.mlp_layer != "mlp"):
            raise ValueError("scale_norm=True adds norms inside softmax attention and the plain MLP of the pre_norm or "
                             "parallel block; use it without other attention, MLP or block types")
        if self.block_type in ("parallel_scaling", "diff_parallel_scaling") and self.mlp_layer != "mlp":
            raise ValueError(f"block_type={self.block_type!r} computes a plain MLP from its input projection; use mlp_layer='mlp'")
        if self.attn_layer == "diff" or self.block_type == "diff_parallel_scaling":
            if self.head_dim % 2:
                raise ValueError(f"differential attention splits each head in two: head_dim {self.head_dim} must be even")
        if self.hybrid_layers is not None and self.dynamic_img_pad:
            raise ValueError("dynamic_img_pad=True pads images for a patch embedding; the hybrid (ResNet) stem has none")

    def _check_impls(self):
        for name, valid in (("attn_impl", ATTN_IMPLS), ("norm_impl", NORM_IMPLS), ("linear_impl", LINEAR_IMPLS)):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, one of {list(valid)}; got {value!r}")
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {list(valid)}")

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches per side at the native size (rounded down, as timm)."""
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: class, registers, distillation (timm's count)."""
        return int(self.class_token) + self.reg_tokens + int(self.distilled)

    @property
    def num_tokens(self) -> int:
        """Length of the position embedding: the patches, plus the prefix tokens unless ``no_embed_class``."""
        return self.num_patches + (0 if self.no_embed_class else self.num_prefix_tokens)

    @property
    def seq_len(self) -> int:
        """Tokens through the blocks at the native size: prefix + patches."""
        return self.num_prefix_tokens + self.num_patches

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden_dim(self) -> int:
        """fc1's output width, timm's ``int(embed_dim * mlp_ratio)`` (SwiGLU: both halves)."""
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def mlp_fc2_in_dim(self) -> int:
        """fc2's input width: the hidden width, half of it for SwiGLU (gate * value)."""
        return self.mlp_hidden_dim // 2 if self.mlp_layer == "swiglu" else self.mlp_hidden_dim

    @property
    def use_fc_norm(self) -> bool:
        """A norm after pooling (``fc_norm``) instead of before; never one with ``final_norm=False``."""
        return self.final_norm and (self.global_pool in ("avg", "max", "avgmax") if self.fc_norm is None else self.fc_norm)

    @property
    def use_final_norm(self) -> bool:
        """The norm on all tokens (``norm``) after the blocks."""
        return self.final_norm and not self.use_fc_norm

    @property
    def use_patch_bias(self) -> bool:
        """Whether ``patch_embed.proj`` has a bias: ``patch_bias``, by default ``not pre_norm`` (timm's rule)."""
        return (not self.pre_norm) if self.patch_bias is None else self.patch_bias

    def replace(self, **overrides) -> "ViTConfig":
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown ViTConfig field(s) {unknown}; valid: {sorted(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **overrides)

    def num_params(self) -> int:
        """Closed-form parameter count (what ``sum(p.numel())`` of the model gives)."""
        d, h = self.embed_dim, self.mlp_hidden_dim
        norm = d if self.norm_layer == "rmsnorm" else 2 * d  # RMSNorm has a weight, LayerNorm a bias too
        bias = d if self.use_patch_bias else 0
        n = self.in_chans * self.patch_size**2 * d + bias + (norm if self.patch_norm else 0)  # patch embedding
        if self.hybrid_layers is not None:  # the stem's network + its projection instead
            from .layers.conv_stems import stem_num_params

            n = stem_num_params(self.hybrid_stem, self.hybrid_layers, self.in_chans, self.patch_size, d, bias)
        n += self.num_prefix_tokens * d + self.num_tokens * d  # class / register / distillation tokens, position embedding
        n += norm if self.pre_norm else 0  # norm_pre
        n += self.depth * self._block_params()
        n += norm if self.final_norm else 0  # norm or fc_norm
        if self.global_pool == "map":  # latent, q, kv, proj, norm, a plain MLP of int(d * mlp_ratio)
            n += d + (d * d + d) + (2 * d * d + 2 * d) + (d * d + d) + 2 * d + (2 * d * h + h + d)
        feat = d
        if self.representation_size:
            n += d * self.representation_size + self.representation_size
            feat = self.representation_size
        if self.num_classes:
            n += (feat * self.num_classes + self.num_classes) * (2 if self.distilled else 1)
        return n

    def _block_params(self) -> int:
        """One block's parameters, by ``block_type``."""
        d, h, h2, hd = self.embed_dim, self.mlp_hidden_dim, self.mlp_fc2_in_dim, self.head_dim
        rms = self.norm_layer == "rmsnorm"
        norm = d if rms else 2 * d
        qk_norm = lambda width: (2 * width if rms else 4 * width) if self.qk_norm else 0  # noqa: E731
        layer_scale = d if self.init_values is not None else 0
        mlp = d * h + h + h2 * d + d
        if self.block_type in ("parallel_scaling", "diff_parallel_scaling"):
            n = norm + d * (h + 3 * d) + (h + 3 * d if self.qkv_bias else h) + layer_scale  # in_norm, in_proj, biases
            if self.block_type == "parallel_scaling":
                return n + qk_norm(hd) + (d * d + d) + (h * d + d)  # attention and MLP out-projections
            # half-width heads: their q/k norms, the sub-norm over both halves, four lambda vectors, one out-projection
            return n + qk_norm(hd // 2) + hd + 2 * hd + (d + h) * d + d
        attn = 3 * d * d + (3 * d if self.qkv_bias else 0) + d * d + (d if self.proj_bias else 0)
        if self.mlp_layer == "swiglu_unpacked":  # fc1_g, fc1_x D -> H, fc2 H -> D
            mlp = 3 * d * h + (2 * h + d if self.proj_bias else 0)
        elif not self.proj_bias:
            mlp = 2 * d * h
        attn += qk_norm(hd) if self.attn_layer == "attn" else qk_norm(hd // 2) + hd + 2 * hd
        if self.scale_norm:  # attn.norm over the width, mlp.norm over the hidden layer
            attn += norm
            mlp += h if rms else 2 * h
        if self.block_type == "res_post_norm":  # init_values initialise its norms: no LayerScale
            return 2 * norm + attn + mlp
        if self.block_type == "parallel":
            return self.num_parallel * (2 * norm + attn + mlp + 2 * layer_scale)
        return 2 * norm + attn + mlp + 2 * layer_scale
