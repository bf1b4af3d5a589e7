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


def flop_per_image(cfg, mode: str = "inference") -> int:
    """FLOPs per image: 2 per MAC; a training step counts 3x the forward."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    return 2 * forward_macs(cfg) * (TRAINING_FLOP_FACTOR if mode == "training" else 1)
