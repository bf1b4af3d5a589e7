"""Exact attention probabilities of a model's blocks, for every ``attn_impl``.

Nothing in the model's forward changes. A forward pre-hook on each chosen
block's attention module captures its input (the normed tokens), recomputes
q and k from that module's own ``qkv`` projection and turns them into the
softmax probabilities:

- where the module runs fastvit's Triton kernel (``attn_impl="triton"``, or
  ``"auto"`` when it picks Triton), through the kernel's row log-sum-exp:
  :func:`fastvit.kernels.flash_attention.attention_fwd` gives ``lse`` and
  :func:`fastvit.kernels.attention_probs.attention_probs` writes
  ``exp(scale * q k^T - lse)`` tile by tile;
- for every other backend (eager, sdpa, flash_attn, xformers) as an fp32
  ``softmax(q k^T * scale)``.

Maps are fp32 (B, H, N, N) over all tokens, prefix tokens first. Each block's
maps are handed to a callback as soon as that block is reached and may be
dropped right after, so :func:`visit_attention_maps` holds one block's maps at
a time; the forward stops after the last block asked for.
"""

from __future__ import annotations

import operator
from typing import Callable, Sequence

import torch
from torch import Tensor, nn


class _Done(Exception):
    """Raised from a hook to stop the forward once the last wanted block has been seen."""


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
        raise TypeError(f"expected a fastvit VisionTransformer (a model with .blocks), got {type(model).__name__}")
    mods = []
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if attn is None or not all(hasattr(attn, a) for a in ("qkv", "num_heads", "head_dim", "scale")):
            raise TypeError(f"block {i} has no fastvit Attention module (.attn with qkv, num_heads, head_dim, scale)")
        mods.append(attn)
    return mods


def resolve_blocks(blocks: int | Sequence[int] | None, depth: int) -> list[int]:
    """Block indices (negative ones count from the end), in the order given; None: all."""
    if blocks is None:
        return list(range(depth))
    if hasattr(blocks, "__index__") and not isinstance(blocks, bool):
        try:
            blocks = [operator.index(blocks)]
        except TypeError:  # e.g. a 1-D tensor of indices: iterated below
            pass
    if isinstance(blocks, (bool, str, bytes)) or not hasattr(blocks, "__iter__"):
        raise TypeError(f"blocks must be None, an int or a sequence of ints, got {blocks!r}")
    items = list(blocks)
    if not items:
        raise ValueError("blocks is empty; pass None for all blocks")
    out = []
    for i in items:
        try:
            if isinstance(i, bool):
                raise TypeError
            i = operator.index(i)  # ints, numpy integers, 0-d integer tensors
        except TypeError:
            raise TypeError(f"block indices must be ints, got {i!r}") from None
        if not -depth <= i < depth:
            raise ValueError(f"block index {i} out of range for a model with {depth} blocks")
        out.append(i % depth)
    return out


def uses_lse_route(attn: nn.Module, qkv: Tensor) -> bool:
    """True where this attention module runs fastvit's Triton kernel for such a tensor."""
    impl = getattr(attn, "attn_impl", "eager")
    if impl == "triton":
        return True
    if impl == "auto":
        from fastvit.layers.attention import triton_unsupported

        return triton_unsupported(qkv.device.type, qkv.dtype, qkv.shape[-1]) is None
    return False


def probs_softmax(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """fp32 softmax(q k^T * scale) over (B, H, N, D) inputs."""
    return torch.matmul(q.float() * scale, k.float().transpose(-2, -1)).softmax(dim=-1)


def probs_lse(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """The same probabilities through the Triton forward's log-sum-exp."""
    from fastvit.kernels.attention_probs import attention_probs
    from fastvit.kernels.flash_attention import attention_fwd
    from fastvit.layers.attention import _require_triton_device

    _require_triton_device(q)
    _, lse = attention_fwd(q, k, v, scale)
    return attention_probs(q, k, lse, scale)


def block_probs(attn: nn.Module, x: Tensor) -> Tensor:
    """(B, H, N, N) fp32 probabilities of ``attn`` for its normed input x (B, N, C)."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).view(b, n, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    identity = nn.Identity()  # qk-norm (timm's and fastvit's q_norm / k_norm) when the module has it
    q, k = getattr(attn, "q_norm", identity)(q), getattr(attn, "k_norm", identity)(k)
    if uses_lse_route(attn, qkv):
        return probs_lse(q, k, v, attn.scale)
    return probs_softmax(q, k, attn.scale)


def _run_forward(model: nn.Module, x: Tensor) -> None:
    fwd = getattr(model, "forward_features", None) or model
    fwd(x)


def visit_attention_maps(
    model: nn.Module, x: Tensor, fn: Callable[[int, Tensor], None], blocks: int | Sequence[int] | None = None
) -> list[int]:
    """Call ``fn(block_index, maps)`` for each chosen block, in depth order, one block's maps at a time.

    The model runs in eval mode (restored afterwards) and without gradients.
    Returns the block indices visited, in depth order.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"expected an image batch tensor (B, C, H, W), got {type(x).__name__}")
    mods = _attention_modules(model)
    wanted = sorted(set(resolve_blocks(blocks, len(mods))))
    last = wanted[-1]
    handles = []

    def make_hook(i: int):
        def hook(module, args, kwargs):
            inp = args[0] if args else kwargs["x"]
            fn(i, block_probs(module, inp))
            if i == last:
                raise _Done

        return hook

    was_training = model.training
    try:
        for i in wanted:
            handles.append(mods[i].register_forward_pre_hook(make_hook(i), with_kwargs=True))
        model.eval()
        with torch.no_grad():
            try:
                _run_forward(model, x)
            except _Done:
                pass
            else:  # a model whose forward skipped the blocks' attention modules
                raise RuntimeError("the forward finished without reaching every requested block's attention")
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return wanted


def attention_maps(model: nn.Module, x: Tensor, blocks: int | Sequence[int] | None = None) -> list[Tensor]:
    """Exact softmax probabilities of the chosen blocks: a list of fp32 (B, H, N, N) tensors.

    ``blocks``: None for every block, an index, or a sequence of indices
    (negative ones count from the end); the list follows the order given.
    N counts all tokens, prefix (class / distillation) tokens first. Works for
    every ``attn_impl``; for Triton the maps come from the kernel's row
    log-sum-exp (see the module docstring). Rows sum to 1.
    """
    order = resolve_blocks(blocks, len(_attention_modules(model)))
    found: dict[int, Tensor] = {}
    visit_attention_maps(model, x, lambda i, p: found.__setitem__(i, p), order)
    return [found[i] for i in order]
