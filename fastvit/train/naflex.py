"""``fastvit train --naflex``: images at their own size and aspect ratio, packed per step up to a
token budget, for a NaFlexVit model (``naflexvit_*``).

Each image is taken at its native size rounded to whole patches (:func:`native_grid`); one larger
than ``--max-patches`` patches is scaled down by SigLIP 2's rule (aspect ratio kept). A step takes
images in the epoch's order (a permutation drawn from ``seed + epoch``) while their patches fit
``--max-tokens`` (:class:`TokenBudgetSampler`), so which images a step sees is a pure function of
(seed, epoch, step) and a resumed run continues the same sequence. The step's images are packed
(:func:`fastvit.naflex.pack`): no padding token, no mask.
"""

from __future__ import annotations

import math

import torch

DEFAULT_MAX_TOKENS = 4096


def naflex_names() -> list[str]:
    from ..naflex.config import NAFLEX_PRESETS

    return sorted(NAFLEX_PRESETS)


def is_naflex_model(name: str) -> bool:
    return name in naflex_names()


def check_naflex(cfg) -> None:
    """What ``--naflex`` cannot run with, refused before anything is read or built."""
    if not cfg.naflex:
        if cfg.max_patches is not None or cfg.max_tokens != DEFAULT_MAX_TOKENS:
            raise ValueError("--max-tokens / --max-patches set the packed steps of --naflex; add --naflex")
        return
    if not is_naflex_model(cfg.model):
        raise ValueError(f"--naflex packs images of different sizes for a NaFlexVit model; --model {cfg.model} is not "
                         f"one (choose one of {', '.join(naflex_names())})")
    if cfg.data == "digits":
        raise ValueError("--naflex trains at each image's own size: give an image folder (--data DIR); "
                         "the digits are all 8x8")
    if cfg.objective != "supervised":
        raise ValueError(f"--naflex trains --objective supervised only (got {cfg.objective})")
    if cfg.strategy != "single":
        raise ValueError(f"--naflex runs with --strategy single (got {cfg.strategy}): its steps hold different "
                         "numbers of images, which the ranks of ddp/fsdp would have to share out")
    if cfg.max_tokens < 1:
        raise ValueError(f"--max-tokens must be >= 1, got {cfg.max_tokens}")
    if cfg.max_patches is not None and not 1 <= cfg.max_patches <= cfg.max_tokens:
        raise ValueError(f"--max-patches must be between 1 and --max-tokens ({cfg.max_tokens}), got {cfg.max_patches}")


def per_image_budget(cfg) -> int:
    """Patches one image may have: ``--max-patches``, else the whole step budget."""
    return cfg.max_patches if cfg.max_patches is not None else cfg.max_tokens


def impl_overrides(impl: str, device: torch.device) -> dict:
    """``--impl`` for a NaFlexVit: fused = Triton varlen attention, LayerNorm and GEMMs; torch = PyTorch's."""
    from ..layers.varlen import VARLEN_IMPLS

    fused = impl == "fused" or (impl == "auto" and device.type == "cuda")
    if fused:  # the Triton varlen kernel where this fastvit has it (else its default attention)
        return {"norm_impl": "triton", "linear_impl": "triton", **({"varlen_impl": "triton"} if "triton" in VARLEN_IMPLS else {})}
    return {"varlen_impl": "torch", "norm_impl": "torch", "linear_impl": "torch"} if impl == "torch" else {}


def native_grid(height: int, width: int, patch_size: int, max_patches: int) -> tuple[int, int]:
    """(rows, columns) of patches an image of ``height`` x ``width`` pixels is trained at: its own size
    rounded to whole patches (at least one), or SigLIP 2's size for ``max_patches`` when larger."""
    from ..naflex.packing import size_for_max_patches

    rows, cols = max(1, round(height / patch_size)), max(1, round(width / patch_size))
    if rows * cols > max_patches:
        h, w = size_for_max_patches(height, width, patch_size, max_patches)
        rows, cols = h // patch_size, w // patch_size
    return rows, cols


class TokenBudgetSampler:
    """Steps of whole images whose patches fit ``max_tokens``, as a pure function of (seed, epoch, step).

    Epoch ``e`` is one permutation of the training set (``seed + e``) cut greedily into steps: a step
    takes the next image while the sum of patches stays within the budget. Every image is seen once
    per epoch; the number of steps can differ from epoch to epoch (:meth:`steps_in`)."""

    def __init__(self, tokens: list[int], max_tokens: int, seed: int):
        big = [(i, n) for i, n in enumerate(tokens) if n > max_tokens]
        if big:
            raise ValueError(f"image {big[0][0]} has {big[0][1]} patches, over --max-tokens {max_tokens}")
        if not tokens:
            raise ValueError("no training images")
        self.tokens, self.max_tokens, self.seed = torch.tensor(tokens), max_tokens, seed
        self._plans: dict[int, list[torch.Tensor]] = {}

    def plan(self, epoch: int) -> list[torch.Tensor]:
        if epoch not in self._plans:
            perm = torch.randperm(len(self.tokens), generator=torch.Generator().manual_seed(self.seed + epoch))
            steps, start, used = [], 0, 0
            for j, n in enumerate(self.tokens[perm].tolist()):
                if used + n > self.max_tokens:
                    steps.append(perm[start:j])
                    start, used = j, 0
                used += n
            steps.append(perm[start:])
            self._plans = {epoch: steps}  # one epoch at a time is all the loop asks for
        return self._plans[epoch]

    def steps_in(self, epoch: int) -> int:
        return len(self.plan(epoch))

    @property
    def steps_per_epoch(self) -> int:
        return self.steps_in(0)

    def indices(self, epoch: int, step: int) -> torch.Tensor:
        plan = self.plan(epoch)
        if not 0 <= step < len(plan):
            raise IndexError(f"step {step} outside epoch {epoch}'s {len(plan)} steps")
        return plan[step]


def total_steps(sampler, epochs: int) -> int:
    return sum(sampler.steps_in(e) for e in range(epochs))


def model_input(images, cfg, patch_size: int, device: torch.device):
    """The model's input for a batch from the data: packed for ``--naflex``, a tensor otherwise."""
    if not cfg.naflex:
        return images.to(device)
    from ..naflex.packing import pack

    return pack([im.to(device) for im in images], patch_size=patch_size)


def build_model(cfg, overrides: dict):
    """(model, overrides, notes) for a NaFlexVit run: a fresh preset, or with ``--pretrained`` (a
    weights file or a run folder, fastvit = timm names) its weights, a head of another size replaced."""
    from pathlib import Path

    from ..checkpoints.files import read_checkpoint
    from ..naflex import create_naflex
    from .run_folder import is_run_folder

    model = create_naflex(cfg.model, **overrides)
    if cfg.pretrained is None:
        return model, overrides, []
    source = Path(cfg.pretrained)
    if not source.exists():
        raise ValueError(f"--naflex --pretrained {cfg.pretrained}: give a weights file or a run folder")
    sd = read_checkpoint(source / "model.safetensors" if is_run_folder(source) else source)
    own, notes = model.state_dict(), []
    for k in ("head.weight", "head.bias"):
        if k in sd and (k not in own or sd[k].shape != own[k].shape):
            sd.pop(k)
            notes.append(f"{k} left out (the checkpoint's head has another size; a new one is trained)")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(f"--pretrained {cfg.pretrained} does not fit {cfg.model}: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")
    return model, overrides, notes


def naflex_config(name: str, overrides: dict):
    from ..naflex.config import get_naflex_config

    return get_naflex_config(name, **overrides)


def run_config_doc(name: str, overrides: dict, classes, cfg) -> dict:
    """``config.json`` fields of a NaFlexVit run (timm's local-dir keys; ``pretrained_cfg`` records
    that images were fed at their own size, up to ``max_patches`` patches)."""
    from .objectives import MEAN, STD

    m = naflex_config(name, overrides)
    grid = m.pos_embed_grid_size
    pcfg = {"architecture": name, "tag": None, "input_size": [m.in_chans, grid[0] * m.patch_size, grid[1] * m.patch_size],
            "fixed_input_size": False, "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "naflex",
            "mean": [MEAN] * m.in_chans, "std": [STD] * m.in_chans, "num_classes": m.num_classes,
            "first_conv": "embeds.proj", "classifier": "head",
            "max_patches": per_image_budget(cfg), "max_tokens": cfg.max_tokens}
    if classes and m.num_classes:
        pcfg["label_names"] = list(classes)
    return {"num_classes": m.num_classes, "num_features": m.embed_dim, "global_pool": m.global_pool, "pretrained_cfg": pcfg}


def describe(name: str, overrides: dict) -> str:
    m = naflex_config(name, overrides)
    return (f"NaFlexVit {m.depth} block(s), width {m.embed_dim}, {m.num_heads} head(s), patch {m.patch_size}, "
            f"native sizes (from {name})")


def budget_note(tokens: list[int], max_tokens: int) -> str:
    total = sum(tokens)
    return (f"{len(tokens)} images, {total} patches ({total / len(tokens):.0f} per image), "
            f"steps of up to {max_tokens} patches (~{math.ceil(total / max_tokens)} per epoch)")
