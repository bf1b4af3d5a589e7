"""The implementations ``fastvit bench`` compares, its defaults, and dtype names.

- :data:`BASE_VARIANTS` / :func:`get_variant`: fastvit's reference, SDPA,
  fused and ``auto`` (the defaults: measured per op) builds, timm and Hugging
  Face, each optionally ``+compile``.
- :data:`CUDA_DEFAULTS` / :data:`CPU_DEFAULTS` (and ``*_QUICK``): what
  ``fastvit bench`` runs when not told otherwise.
- :func:`dtype_name` / :func:`torch_dtype`: "bf16", "fp16", "fp32".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

COMPILE_SUFFIX = "+compile"


@dataclass(frozen=True)
class Variant:
    """One implementation of the same model and weights.

    ``impl``: "fastvit" (built with ``overrides`` of the ``*_impl`` switches),
    "timm" (timm's VisionTransformer) or "hf" (transformers' ViTForImageClassification).
    """

    name: str
    impl: str
    overrides: tuple[tuple[str, str], ...] = ()
    compile: bool = False
    needs_cuda: bool = False
    package: str | None = None  # optional package the variant needs

    @property
    def base(self) -> str:
        return self.name.removesuffix(COMPILE_SUFFIX)


_TORCH_PARTS = (("norm_impl", "torch"), ("linear_impl", "torch"))
BASE_VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("reference", "fastvit", (("attn_impl", "eager"), *_TORCH_PARTS)),
        Variant("sdpa", "fastvit", (("attn_impl", "sdpa"), *_TORCH_PARTS)),
        Variant("fused", "fastvit", (("attn_impl", "triton"), ("norm_impl", "triton"), ("linear_impl", "triton")), needs_cuda=True),
        # the defaults: per op and shape the faster of PyTorch's op and fastvit's kernel (PyTorch's off CUDA)
        Variant("auto", "fastvit", (("attn_impl", "auto"), ("norm_impl", "auto"), ("linear_impl", "auto"))),
        Variant("flash_attn", "fastvit", (("attn_impl", "flash_attn"), *_TORCH_PARTS), needs_cuda=True, package="flash_attn"),
        Variant("xformers", "fastvit", (("attn_impl", "xformers"), *_TORCH_PARTS), needs_cuda=True, package="xformers"),
        Variant("timm", "timm", package="timm"),
        Variant("hf", "hf", package="transformers"),
    )
}
REFERENCE = "reference"
MODES = ("inference", "training")


def variant_names() -> list[str]:
    """Every valid variant name: each base name, and each with ``+compile``."""
    return [n for base in BASE_VARIANTS for n in (base, base + COMPILE_SUFFIX)]


def get_variant(name: str) -> Variant:
    base = name.removesuffix(COMPILE_SUFFIX)
    if base not in BASE_VARIANTS:
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(variant_names())}")
    return dataclasses.replace(BASE_VARIANTS[base], name=name, compile=name.endswith(COMPILE_SUFFIX))


# What `fastvit bench` runs when not told otherwise.
CUDA_DEFAULTS = dict(
    model="vit_base_patch16_224", batch=256, dtype="bf16", modes=MODES, rounds=20, warmup=5,
    variants=("reference", "sdpa", "fused", "auto", "reference+compile", "sdpa+compile", "fused+compile", "auto+compile",
              "timm", "timm+compile", "hf"),
)
CUDA_QUICK = dict(variants=("reference", "sdpa", "fused", "auto", "fused+compile"), rounds=10, warmup=3)
CPU_DEFAULTS = dict(
    model="vit_tiny_patch16_224", batch=8, dtype="fp32", modes=("inference",), rounds=5, warmup=1,
    variants=("reference", "sdpa", "sdpa+compile"),
)
CPU_QUICK = dict(variants=("reference", "sdpa"), rounds=3, warmup=1)

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def dtype_name(name: str) -> str:
    """Canonical short dtype name ("bf16", "fp16", "fp32") for any common spelling."""
    name = str(name).replace("torch.", "")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return name


def torch_dtype(name: str):
    import torch

    return getattr(torch, DTYPES[dtype_name(name)])
