"""What a model case needs: the case, the weights and inputs its variants share,
whether a variant can run here, and the variant's model."""

from __future__ import annotations

import gc
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from .variants import BASE_VARIANTS, MODES, REFERENCE, Variant, dtype_name, torch_dtype


@dataclass(frozen=True)
class ModelCase:
    model: str
    variant: str
    mode: str = "inference"
    dtype: str = "bf16"
    batch: int = 256
    overrides: tuple[tuple[str, Any], ...] = ()  # architecture fields of ViTConfig, e.g. (("depth", 2),)

    @property
    def name(self) -> str:
        extra = "".join(f",{k}={v}" for k, v in self.overrides)
        return f"{self.model}{extra}/{self.dtype}/b{self.batch}/{self.variant}/{self.mode}"


class ModelContext:
    """What every variant of one (model, dtype, batch) shares: the weights (one
    random init, fp32 on the CPU), the rotating input buffers (random normal
    images and labels, generated on the CPU so every device sees the same
    values) and the fp32 eager reference logits for buffer 0."""

    def __init__(self, model: str, dtype: str, batch: int, device: str, overrides=(), buffers: int | None = None, seed: int = 0):
        import torch

        import fastvit

        self.model, self.dtype, self.batch, self.device, self.overrides = model, dtype_name(dtype), batch, device, tuple(overrides)
        self.cfg = fastvit.get_config(model, **dict(self.overrides))
        torch.manual_seed(seed)
        reference = build_fastvit(self.cfg.replace(**dict(BASE_VARIANTS[REFERENCE].overrides)))
        self.state_dict = {k: v.detach().clone() for k, v in reference.state_dict().items()}
        del reference
        gen = torch.Generator().manual_seed(seed + 1)
        h, w = self.cfg.img_size
        dt = torch_dtype(self.dtype)
        self.inputs = []
        for _ in range(buffers or (3 if device == "cuda" else 2)):
            x = torch.randn(batch, self.cfg.in_chans, h, w, generator=gen)
            y = torch.randint(0, max(self.cfg.num_classes, 1), (batch,), generator=gen)
            self.inputs.append((x.to(device=device, dtype=dt), y.to(device)))
        self._ref_logits = None

    def matches(self, case: ModelCase) -> bool:
        return (self.model, self.dtype, self.batch, self.overrides) == (case.model, dtype_name(case.dtype), case.batch, tuple(case.overrides))

    def reference_logits(self):
        """Logits of the fp32 eager reference model on buffer 0 (TF32 off), computed once."""
        if self._ref_logits is None:
            import torch

            model = build_fastvit(self.cfg.replace(**dict(BASE_VARIANTS[REFERENCE].overrides)))
            model.load_state_dict(self.state_dict)
            model.to(self.device).eval()
            saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            try:
                with torch.inference_mode():
                    self._ref_logits = model(self.inputs[0][0].float()).float()
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
            del model
            _free_memory(self.device)
        return self._ref_logits


def build_fastvit(cfg):
    """fastvit's model of a config: :class:`fastvit.eva.Eva` for an ``EvaConfig`` (timm's eva-module
    family), else :class:`fastvit.VisionTransformer`."""
    from fastvit.eva import Eva, EvaConfig
    from fastvit.model import VisionTransformer

    return Eva(cfg) if isinstance(cfg, EvaConfig) else VisionTransformer(cfg)


def _free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _import_error(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - e.g. timm failing on a broken torchvision
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"{module} does not import ({type(e).__name__}: {first})"
    return None


def _hf_mismatch(cfg) -> str | None:
    """Why transformers has no equivalent of this config (fastvit's own exporter decides), or None."""
    import types

    from fastvit.checkpoints import to_hf_config
    from fastvit.eva import EvaConfig

    if isinstance(cfg, EvaConfig):
        return "fastvit bench compares transformers' ViT classifiers only, not the eva family"

    try:
        to_hf_config(types.SimpleNamespace(cfg=cfg))
    except ValueError as e:
        return str(e)
    return None


def unavailable_reason(variant: Variant, cfg, device: str, dtype: str, mode: str, model: str | None = None) -> str | None:
    """None when ``variant`` can run here, else why not (it is then skipped, not an error).

    ``model`` is the preset name (timm builds its model from it)."""
    if mode not in MODES:
        return f"unknown mode {mode!r}"
    if mode == "training" and not cfg.num_classes:
        return "training needs a classification head (num_classes > 0)"
    if variant.needs_cuda and device != "cuda":
        if variant.impl == "fastvit" and ("attn_impl", "triton") in variant.overrides:
            return "Triton kernels need a CUDA GPU (TRITON_INTERPRET=1 runs them on the CPU far too slowly to time)"
        return f"{variant.base} needs a CUDA GPU"
    if variant.package and importlib.util.find_spec(variant.package) is None:
        return f"{variant.package} is not installed"
    if variant.base == "flash_attn" and dtype_name(dtype) == "fp32":
        return "flash-attn takes fp16 or bf16 only"
    if variant.impl == "timm":
        reason = _import_error("timm")
        if reason:
            return reason
        import timm

        if model is not None and not timm.is_model(model):
            return f"timm has no model {model!r}"
    if variant.impl == "hf":
        from fastvit import checkpoints

        if not hasattr(checkpoints, "to_hf_state_dict"):
            return "fastvit.checkpoints.to_hf_state_dict does not exist (needed to copy the weights)"
        reason = _import_error("transformers") or _hf_mismatch(cfg)
        if reason:
            return reason
    return None


def _logits_module(hf):
    """Wrap a transformers model so that ``model(x)`` returns the logits tensor."""
    from torch import nn

    class HFLogits(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(pixel_values=x).logits

    return HFLogits(hf)


def _architecture(overrides) -> dict:
    return {k: v for k, v in dict(overrides).items() if not k.endswith("_impl")}


def build_model(variant: Variant, ctx: ModelContext):
    """The variant's model with the context's weights, on its device and dtype (mode not set)."""
    import fastvit

    if variant.impl == "fastvit":
        model = build_fastvit(ctx.cfg.replace(**dict(variant.overrides)))
        model.load_state_dict(ctx.state_dict)
    elif variant.impl == "timm":
        import timm

        model = timm.create_model(ctx.model, pretrained=False, **_architecture(ctx.overrides))
        model.load_state_dict(ctx.state_dict)
    elif variant.impl == "hf":
        import transformers

        from fastvit.checkpoints import to_hf_config, to_hf_state_dict

        source = fastvit.VisionTransformer(ctx.cfg)
        source.load_state_dict(ctx.state_dict)
        kw = to_hf_config(source)
        kw.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        cls = getattr(transformers, kw["architectures"][0])
        hf = cls._from_config(cls.config_class(**kw), attn_implementation="sdpa")
        legacy = any(".encoder.layer." in k for k in hf.state_dict())  # transformers 4.x block names
        hf.load_state_dict(to_hf_state_dict(source, legacy=legacy))
        model = _logits_module(hf)
    else:
        raise ValueError(f"unknown variant implementation {variant.impl!r}")
    return model.to(device=ctx.device, dtype=torch_dtype(ctx.dtype))
