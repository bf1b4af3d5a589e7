"""The ViT paper's analyses (Dosovitskiy et al. 2020, Fig. 6, Fig. 7 and appendix D).

- :func:`mean_attention_distance`: attention-weighted distance in pixels between
  query and key patch centres (Fig. 7 right);
- :func:`pos_embed_similarity`: cosine similarity of the patch position
  embeddings (Fig. 7 centre);
- :func:`attention_rollout`: Abnar & Zuidema's rollout, class-token row (Fig. 6);
- :func:`patch_embed_components`: principal components of the patch-embedding
  filters (Fig. 7 left).

The attention-based ones read the maps one block at a time
(:func:`fastvit.analysis.maps.visit_attention_maps`). Results are CPU tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .maps import _attention_modules, visit_attention_maps


def token_stride(model: nn.Module) -> tuple[int, int]:
    """Pixels per token along (H, W): the patch size, or a hybrid backbone's total stride."""
    embed = getattr(model, "patch_embed", None)
    stride = getattr(embed, "stride", None) or getattr(embed, "patch_size", None)
    if stride is None:
        raise TypeError(f"cannot tell the patch size of {type(model).__name__} (no patch_embed.patch_size)")
    return (stride, stride) if isinstance(stride, int) else tuple(stride)


def token_grid(model: nn.Module, x: Tensor) -> tuple[int, int]:
    """The (gh, gw) patch grid the model makes of image batch ``x``."""
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"expected a 4-D image batch (B, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    sh, sw = token_stride(model)
    return x.shape[-2] // sh, x.shape[-1] // sw


def num_prefix_tokens(model: nn.Module) -> int:
    return int(getattr(model, "num_prefix_tokens", 1))


def patch_centre_distances(grid: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """(P, P) fp64 Euclidean distances in pixels between patch centres, patches in row-major order."""
    gh, gw = grid
    rows = (torch.arange(gh, dtype=torch.float64) + 0.5) * stride[0]
    cols = (torch.arange(gw, dtype=torch.float64) + 0.5) * stride[1]
    centres = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
    return torch.cdist(centres, centres)


def mean_attention_distance(model: nn.Module, x: Tensor, renormalize: bool = True) -> Tensor:
    """(depth, heads) fp32: attention-weighted mean query-key distance in pixels.

    Patch tokens only: each query row's weights over the patch keys are
    renormalised to sum to 1 (prefix keys dropped), the distances between
    patch centres weighted by them, and the result averaged over the patch
    queries and the images of ``x``. ``renormalize=False`` keeps the raw
    weights (what prefix keys take is then counted as distance 0), the
    convention of some public re-implementations.
    """
    grid = token_grid(model, x)
    prefix = num_prefix_tokens(model)
    dist = None
    out = torch.zeros(len(_attention_modules(model)), getattr(model.blocks[0].attn, "num_heads"), dtype=torch.float64)

    def take(i: int, maps: Tensor) -> None:
        nonlocal dist
        a = maps[:, :, prefix:, prefix:].double()
        if a.shape[-1] != grid[0] * grid[1]:
            raise ValueError(f"{a.shape[-1]} patch tokens do not form the {grid[0]}x{grid[1]} grid of the input")
        if dist is None:
            dist = patch_centre_distances(grid, token_stride(model)).to(a.device)
        if renormalize:  # a row with all its weight on prefix keys gives 0
            a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        out[i] = (a * dist).sum(-1).mean(dim=(0, 2)).cpu()

    visit_attention_maps(model, x, take)
    return out.float()


def pos_embed_similarity(model: nn.Module) -> Tensor:
    """(gh, gw, gh, gw) fp32 cosine similarity between the patch position embeddings.

    Entry [i, j, k, l] compares the embedding of patch (i, j) with that of
    patch (k, l); prefix-token embeddings are excluded. The grid is the model's
    native one (``model.cfg.grid_size``).
    """
    pos = getattr(model, "pos_embed", None)
    if not isinstance(pos, Tensor) or pos.ndim != 3:
        raise TypeError(f"expected a model with a (1, tokens, dim) pos_embed, got {type(model).__name__}")
    prefix = num_prefix_tokens(model)
    grid = getattr(getattr(model, "cfg", None), "grid_size", None)
    patches = pos[0, prefix:].detach().double().cpu()
    if grid is None:
        side = int(round(patches.shape[0] ** 0.5))
        grid = (side, side)
    gh, gw = grid
    if gh * gw != patches.shape[0]:
        raise ValueError(f"pos_embed has {patches.shape[0]} patch embeddings, not the {gh}x{gw} grid")
    unit = torch.nn.functional.normalize(patches, dim=-1)
    return (unit @ unit.T).reshape(gh, gw, gh, gw).float()


def attention_rollout(model: nn.Module, x: Tensor) -> Tensor:
    """(B, gh, gw) fp32 attention rollout (Abnar & Zuidema 2020), as in the ViT paper's appendix.

    Per block: the head mean of the attention, plus the identity (the residual
    path), rows renormalised to sum to 1; these are multiplied through the
    blocks, first block rightmost. Returned: the class token's row over the
    patch tokens (for a model without a class token, the mean of the patch
    tokens' rows).
    """
    grid = token_grid(model, x)
    prefix = num_prefix_tokens(model)
    has_cls = getattr(getattr(model, "cfg", None), "class_token", prefix > 0)
    rollout = None

    def take(i: int, maps: Tensor) -> None:
        nonlocal rollout
        a = maps.double().mean(dim=1)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        rollout = a if rollout is None else torch.bmm(a, rollout)

    visit_attention_maps(model, x, take)
    n_patch = rollout.shape[-1] - prefix
    if n_patch != grid[0] * grid[1]:
        raise ValueError(f"{n_patch} patch tokens do not form the {grid[0]}x{grid[1]} grid of the input")
    rows = rollout[:, 0, prefix:] if has_cls else rollout[:, prefix:, prefix:].mean(dim=1)
    return rows.reshape(-1, *grid).float().cpu()


def patch_embed_components(model: nn.Module, num_components: int = 28) -> tuple[Tensor, Tensor]:
    """Principal components of the patch-embedding filters.

    The D filters of ``patch_embed.proj`` (each C x p x p) are flattened,
    centred, and decomposed; returns ``(components, explained_variance_ratio)``
    with components (k, C, p, p) in decreasing order of variance, k =
    min(num_components, D, C*p*p), each of unit norm and signed so that its
    largest-magnitude entry is positive.
    """
    if isinstance(num_components, bool) or not isinstance(num_components, int) or num_components < 1:
        raise ValueError(f"num_components must be a positive int, got {num_components!r}")
    embed = getattr(model, "patch_embed", None)
    if getattr(embed, "backbone", None) is not None:
        raise ValueError("a hybrid model's patch embedding is a 1x1 projection of CNN features: it has no pixel filters")
    proj = getattr(embed, "proj", None)
    weight = getattr(proj, "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim != 4:
        raise TypeError(f"expected patch_embed.proj to be a Conv2d, got {type(proj).__name__}")
    d = weight.shape[0]
    flat = weight.detach().double().cpu().reshape(d, -1)
    flat = flat - flat.mean(dim=0, keepdim=True)
    _, s, vt = torch.linalg.svd(flat, full_matrices=False)
    k = min(num_components, vt.shape[0])
    var = s**2
    ratio = var / var.sum() if var.sum() > 0 else torch.zeros_like(var)
    comps = vt[:k]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    return comps.reshape(k, *weight.shape[1:]).float(), ratio[:k].float()
