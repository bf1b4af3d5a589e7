"""The analytic FLOP count of a ViT forward pass and of a training step."""

from __future__ import annotations

from .variants import MODES

TRAINING_FLOP_FACTOR = 3  # forward + backward (input and weight gradients) ~ 3 x forward


def forward_macs(cfg) -> int:
    """Multiply-accumulates of one image's forward pass, from a :class:`fastvit.ViTConfig`.

    Counts the GEMM-like work: patch embedding (for a hybrid, every ResNet
    convolution and the 1x1 projection), qkv, the two attention matmuls
    (q k^T and attn v), the output projection, the MLP (SwiGLU's packed fc1
    included), the attention-pool head (``global_pool="map"``), the pre-logits
    layer and the head(s); over every token the blocks see (registers included). Norms, softmax, GELU and adds are left out, as in timm's
    (fvcore's) count: ViT-B/16 at 224 gives 17.56e9 (timm: 17.58e9).
    """
    if hasattr(cfg, "rope_type"):  # an EvaConfig (timm's eva-module family)
        return eva_forward_macs(cfg)
    d, hidden, fc2_in, t = cfg.embed_dim, cfg.mlp_hidden_dim, cfg.mlp_fc2_in_dim, cfg.seq_len
    gh, gw = cfg.grid_size
    if cfg.hybrid_layers is not None:
        from fastvit.layers.resnetv2 import backbone_width, resnetv2_macs

        macs = resnetv2_macs(cfg.hybrid_layers, cfg.in_chans, cfg.img_size) + gh * gw * backbone_width(cfg.hybrid_layers) * d
    else:
        macs = gh * gw * cfg.in_chans * cfg.patch_size**2 * d  # patch embedding conv
    per_block = t * d * 3 * d  # qkv
    per_block += 2 * t * t * d  # q k^T and attn v, all heads together
    per_block += t * d * d  # output projection
    per_block += t * d * hidden + t * fc2_in * d  # fc1, fc2
    macs += cfg.depth * per_block
    if cfg.global_pool == "map":  # one latent query: q, packed kv over the patch tokens, attention, proj, MLP
        n, pool_hidden = cfg.num_patches, int(d * cfg.mlp_ratio)
        macs += d * d + n * d * 2 * d + 2 * n * d + d * d + 2 * d * pool_hidden
    heads = 2 if cfg.distilled else 1
    feat = d
    if cfg.representation_size:
        macs += heads * d * cfg.representation_size
        feat = cfg.representation_size
    if cfg.num_classes:
        macs += heads * feat * cfg.num_classes
    return macs


def eva_forward_macs(cfg) -> int:
    """:func:`forward_macs` of an :class:`fastvit.eva.EvaConfig`: patch embedding, per block qkv, the two
    attention matmuls over every token (class and registers included), the projection and the MLP (SwiGLU:
    gate and value projections, the hidden width rounded up to ``swiglu_align_to``), the attention-pool head
    (one latent query over every token) and the classifier. The rotation, norms and activations are left out."""
    d, (gh, gw) = cfg.embed_dim, cfg.grid_size
    n = gh * gw
    t = n + cfg.num_prefix_tokens
    hidden = int(d * cfg.mlp_ratio)
    if cfg.swiglu_mlp and cfg.swiglu_align_to:
        hidden += -hidden % cfg.swiglu_align_to
    fc1_out = 2 * hidden if cfg.swiglu_mlp else hidden
    per_block = t * d * 3 * d + 2 * t * t * d + t * d * d + t * d * fc1_out + t * hidden * d
    macs = n * cfg.in_chans * cfg.patch_size**2 * d + cfg.depth * per_block
    if cfg.global_pool == "map":
        pool_hidden = int(d * (cfg.attn_pool_mlp_ratio or cfg.mlp_ratio))
        macs += d * d + t * d * 2 * d + 2 * t * d + d * d + 2 * d * pool_hidden
    return macs + (d * cfg.num_classes if cfg.num_classes else 0)


def flop_per_image(cfg, mode: str = "inference") -> int:
    """FLOPs per image: 2 per MAC; a training step counts 3x the forward."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    return 2 * forward_macs(cfg) * (TRAINING_FLOP_FACTOR if mode == "training" else 1)


def rope_traffic_saved(batch: int, heads: int, tokens: int, head_dim: int, dtype_bytes: int = 2) -> dict[str, int]:
    """Bytes of device-memory traffic one attention block saves by rotating q and k inside the attention
    kernel (:func:`fastvit.kernels.rope_attention`) instead of before it (timm's way), counted, not timed.

    Unfused, the rotation writes the rotated q and k ((B, H, N, D) each: the prefix tokens are copied
    along) and the attention reads them back; in the backward the attention writes dq and dk of the
    rotated tensors and the inverse rotation reads them back. Fused, none of these four passes per
    tensor happen (the kernel reads q and k, and writes dq and dk, in any case). Counted at the minimum
    an unfused rotation must move (one pass per tensor; eager PyTorch's intermediates move more):

    - ``forward``: 2 tensors x (write + read back) = 4 B H N D bytes-per-element;
    - ``backward``: the same for the gradients, 4 B H N D;
    - ``training``: forward + backward;
    - ``saved_activations``: the rotated q and k autograd keeps for the backward, 2 B H N D
      (memory held, not traffic).
    """
    for name, value in (("batch", batch), ("heads", heads), ("tokens", tokens), ("head_dim", head_dim), ("dtype_bytes", dtype_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"rope_traffic_saved: {name} must be a positive int, got {value!r}")
    tensor = batch * heads * tokens * head_dim * dtype_bytes
    forward = backward = 2 * 2 * tensor
    return {"forward": forward, "backward": backward, "training": forward + backward, "saved_activations": 2 * tensor}
