"""``fastvit info`` for the eva family (timm's ``Eva``) and the naflexvit family (timm's ``NaFlexVit``):
which dispatched ops their models call and at how many tokens, for :func:`fastvit.auto_report.auto_report`.

The op list is read off the config as the model builds its layers (:mod:`fastvit.eva`,
:mod:`fastvit.naflex.model`): an Eva's LayerNorms are ``layer_norm``; its attention is
``rope_attention`` with rotary embeddings, else ``attention`` (q, k, v unpacked); a SwiGLU MLP's gate is
``linear_swiglu``, a plain one's fc1 + GELU ``linear_gelu`` (a scale-norm MLP's fc1 is a plain GEMM);
the projections ``linear_residual`` (plain GEMMs after a post-norm). A NaFlexVit's block norms are
``layer_norm_fork``, its final norm ``layer_norm``, its attention ``varlen_attention`` over the packed
images, fc1 + GELU ``linear_gelu`` (other activations: a plain GEMM) and ``linear_residual``.
A NaFlexVit takes any image size: its token count is per image, reported at the pretrained_cfg's input size.
"""

from __future__ import annotations

GELUS = ("gelu", "gelu_tanh", "quick_gelu")


def family_of(name: str) -> str:
    """'eva', 'naflex' or 'vit' for a model name ``fastvit.list_models()`` returns (a ``.tag`` is ignored)."""
    from fastvit.naflex.config import NAFLEX_PRESETS
    from fastvit.presets_eva import EVA_PRESETS

    arch = name.partition(".")[0]
    return "eva" if arch in EVA_PRESETS else "naflex" if arch in NAFLEX_PRESETS else "vit"


def eva_ops(cfg) -> list[str]:
    ops = ["layer_norm", "rope_attention" if cfg.use_rot_pos_emb else "attention"]
    if cfg.swiglu_mlp:
        ops.append("linear_swiglu")
    elif not cfg.scale_mlp:
        ops.append("linear_gelu")
    if not cfg.use_post_norm:
        ops.append("linear_residual")
    return ops


def naflex_ops(cfg) -> list[str]:
    ops = ["layer_norm_fork", "layer_norm", "varlen_attention"]
    if cfg.act_layer in GELUS:
        ops.append("linear_gelu")
    return ops + ["linear_residual"]


def family_tokens(name: str, cfg) -> tuple[int, str]:
    """(tokens, how they are counted) for a model of the eva or naflexvit family."""
    if family_of(name) == "eva":
        grid = cfg.grid_size
        return cfg.num_prefix_tokens + grid[0] * grid[1], (
            f"{cfg.num_prefix_tokens} prefix + {grid[0]}x{grid[1]} patches at its native {cfg.img_size[0]}x{cfg.img_size[1]}")
    h, w = naflex_input_size(name, cfg)
    gh, gw = h // cfg.patch_size, w // cfg.patch_size
    return cfg.num_prefix_tokens + gh * gw, (
        f"per image, which may be any size: {cfg.num_prefix_tokens} prefix + {gh}x{gw} patches at the "
        f"pretrained_cfg's input size {h}x{w}")


def naflex_input_size(name: str, cfg) -> tuple[int, int]:
    """The pretrained_cfg's input size (H, W) of naflexvit ``name`` (``name.tag``: the tag's), else the
    position table's native size."""
    from fastvit.factory import resolve_pretrained_cfg

    arch, _, tag = name.partition(".")
    size = resolve_pretrained_cfg(arch, tag or None).get("input_size")
    return tuple(size[-2:]) if size else cfg.img_size


def family_calls(name: str, cfg, batch: int, dtype, device):
    """(model of one block at ``cfg``'s widths, its input) on ``device`` in ``dtype``: one forward makes every
    dispatched call the full model makes (each block's keys are the same)."""
    import torch

    from fastvit.factory import create_model

    model = create_model(name.partition(".")[0], depth=1).to(device, dtype).eval()
    size = cfg.img_size if family_of(name) == "eva" else naflex_input_size(name, cfg)
    return model, torch.randn(batch, cfg.in_chans, *size, device=device, dtype=dtype)
