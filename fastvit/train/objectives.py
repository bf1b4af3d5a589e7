"""What is optimized: supervised classification, or the ViT paper's masked patch prediction.

An objective is an ``nn.Module`` that owns the backbone (as ``.model``) and
whatever the objective adds (the MPP mask embedding and colour head), so DDP
and FSDP wrap one module and every parameter is trained, saved and sharded
alike. ``forward(images, labels)`` returns per-sample statistics (B, 3):
summed loss, correct predictions and predictions made; the training loss is
``stats[:, 0].sum() / stats[:, 2].sum()``. Evaluation sums them over the test set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

OBJECTIVES = ("supervised", "mpp")

# Images reach the objectives normalized as (x - 0.5) / 0.5 (see fastvit.train.data).
MEAN, STD = 0.5, 0.5


def loss_from_stats(stats: torch.Tensor) -> torch.Tensor:
    return stats[:, 0].sum() / stats[:, 2].sum()


class Supervised(nn.Module):
    """Cross-entropy on the classifier head (a distilled model: the mean over both heads)."""

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0):
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None):
        out = self.model(images)
        heads = out if isinstance(out, tuple) else (out,)
        smoothing = self.label_smoothing if self.training else 0.0
        loss = sum(F.cross_entropy(h.float(), labels, reduction="none", label_smoothing=smoothing) for h in heads) / len(heads)
        logits = sum(h.float() for h in heads) / len(heads)
        correct = (logits.argmax(-1) == labels).float()
        return torch.stack([loss, correct, torch.ones_like(loss)], dim=1)


def mean_colour_targets(images: torch.Tensor, patch_size: int, bits: int = 3) -> torch.Tensor:
    """Each patch's mean colour, every channel quantized to ``bits`` bits, as one class id.

    images: normalized (B, 3, H, W) -> (B, N) int64 in [0, 2**(3*bits)), patches in
    row-major order (the order of the patch tokens); red is the most significant digit.
    """
    levels = 2**bits
    pixels = (images.float() * STD + MEAN).clamp(0, 1)
    mean = F.avg_pool2d(pixels, patch_size).flatten(2).transpose(1, 2)  # (B, N, C)
    q = (mean * levels).floor().clamp(max=levels - 1).long()
    target = torch.zeros(q.shape[:2], dtype=torch.long, device=q.device)
    for c in range(q.shape[-1]):
        target = target * levels + q[..., c]
    return target


def corrupt_patches(tokens: torch.Tensor, mask_token: torch.Tensor, ratio: float = 0.5, p_mask: float = 0.8,
                    p_random: float = 0.1, generator: torch.Generator | None = None):
    """BERT-style corruption of patch embeddings (B, N, D), as in the ViT paper's B.1.2.

    Exactly ``round(ratio * N)`` patches per image are chosen; of those, a fraction
    ``p_mask`` becomes the learned mask embedding, ``p_random`` another patch's embedding
    (any patch of any image in the batch) and the rest stay as they are.
    Returns (corrupted tokens, chosen (B, N) bool).
    """
    b, n, _ = tokens.shape
    k = max(1, int(round(ratio * n)))
    dev = tokens.device
    scores = torch.rand(b, n, generator=generator, device="cpu").to(dev)
    chosen = torch.zeros(b, n, dtype=torch.bool, device=dev)
    chosen.scatter_(1, scores.argsort(dim=1)[:, :k], True)
    kind = torch.rand(b, n, generator=generator, device="cpu").to(dev)
    use_mask = chosen & (kind < p_mask)
    use_random = chosen & (kind >= p_mask) & (kind < p_mask + p_random)
    flat = tokens.reshape(b * n, -1)
    donors = flat[torch.randint(0, b * n, (b * n,), generator=generator, device="cpu").to(dev)].view_as(tokens)
    out = torch.where(use_mask[..., None], mask_token.to(tokens.dtype).expand_as(tokens), tokens)
    out = torch.where(use_random[..., None], donors, out)
    return out, chosen


class MaskedPatchPrediction(nn.Module):
    """Self-supervised pretraining (Dosovitskiy et al. 2020, section 4.6 and appendix B.1.2).

    Half of the patch embeddings are corrupted (80% learned ``mask_token``, 10% a
    random other patch's embedding, 10% left alone) before the position embedding is
    added; a linear head on each corrupted patch's output token predicts the patch's
    3-bit mean colour (512 classes). The backbone's own classifier head is not used.
    """

    def __init__(self, model: nn.Module, bits: int = 3, ratio: float = 0.5):
        super().__init__()
        self.model = model
        self.bits, self.ratio = bits, ratio
        dim = model.cfg.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mpp_head = nn.Linear(dim, 2 ** (model.cfg.in_chans * bits))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.mpp_head.weight, std=0.02)
        nn.init.zeros_(self.mpp_head.bias)

    def _add_prefix_and_pos(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        prefix = [t.expand(x.shape[0], -1, -1) for t in (m.cls_token, m.dist_token) if t is not None]
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        return m.pos_drop(x + m.pos_embed)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None):
        m = self.model
        if images.ndim != 4 or tuple(images.shape[-2:]) != tuple(m.cfg.img_size):
            raise ValueError(f"expected images (B, C, {m.cfg.img_size[0]}, {m.cfg.img_size[1]}), got {tuple(images.shape)}")
        targets = mean_colour_targets(images, m.cfg.patch_size, self.bits)
        tokens, chosen = corrupt_patches(m.patch_embed(images), self.mask_token, self.ratio, generator=generator)
        x = self._add_prefix_and_pos(tokens)
        for block in m.blocks:
            if m.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = m.norm(x)[:, m.num_prefix_tokens :]
        logits = self.mpp_head(x[chosen]).float()
        loss = F.cross_entropy(logits, targets[chosen], reduction="none")
        correct = (logits.argmax(-1) == targets[chosen]).float()
        rows = chosen.nonzero()[:, 0]
        per_image = torch.zeros(images.shape[0], 3, device=images.device, dtype=torch.float32)
        per_image.index_add_(0, rows, torch.stack([loss, correct, torch.ones_like(loss)], dim=1))
        return per_image


def build_objective(name: str, model: nn.Module, label_smoothing: float = 0.0) -> nn.Module:
    if name == "supervised":
        return Supervised(model, label_smoothing)
    if name == "mpp":
        return MaskedPatchPrediction(model)
    raise ValueError(f"unknown objective {name!r}; valid: {', '.join(OBJECTIVES)}")
