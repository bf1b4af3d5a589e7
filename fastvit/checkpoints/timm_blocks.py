"""timm's other transformer blocks in a timm VisionTransformer: ``ResPostBlock``,
``ParallelThingsBlock``, ``ParallelScalingBlock``, ``DiffParallelScalingBlock`` and the pre-norm
``Block`` with ``DiffAttention``; and timm's ``RmsNorm`` as every norm.

Their parameter names are fastvit's (:mod:`fastvit.layers.block_layouts`,
:mod:`fastvit.layers.diff_attention`), so conversion only reads the config from the modules;
:func:`fastvit.from_timm` hands these models here.
"""

from __future__ import annotations

from torch import nn

from .common import mlp_ratio_for, timm_activation

LAYOUTS = {"ResPostBlock": "res_post_norm", "ParallelThingsBlock": "parallel", "ParallelScalingBlock": "parallel_scaling",
           "DiffParallelScalingBlock": "diff_parallel_scaling"}


def _name(m) -> str:
    return type(m).__name__


def _is_identity(m) -> bool:
    return m is None or isinstance(m, nn.Identity)


def is_other_layout(block: nn.Module) -> bool:
    """Whether ``block`` is one of the layouts of this module (not the plain pre-norm Block)."""
    return _name(block) in LAYOUTS or (_name(block) == "Block" and _name(getattr(block, "attn", None)) == "DiffAttention")


def norm_layer_of(model: nn.Module) -> tuple[str | None, list[str]]:
    """("layernorm" | "rmsnorm", problems): every norm of the model must be one kind with one eps
    (differential attention's fixed sub-norm, a hybrid backbone's norms and the attention pool aside)."""
    norms = [(n, m) for n, m in model.named_modules()
             if _name(m) in ("LayerNorm", "RmsNorm", "RMSNorm") and not n.endswith("sub_norm")
             and not n.startswith(("patch_embed.backbone", "attn_pool"))]
    kinds = {"rmsnorm" if "rms" in _name(m).lower() else "layernorm" for _, m in norms}
    problems = []
    if len(kinds) > 1:
        problems.append("LayerNorm and RmsNorm mixed")
    if len({m.eps for _, m in norms}) > 1:
        problems.append("norms with different eps")
    if any(getattr(m, "weight", None) is None for _, m in norms) or any(
            _name(m) == "LayerNorm" and m.bias is None for _, m in norms):
        problems.append("norms without affine parameters")
    return (kinds.pop() if len(kinds) == 1 else None), problems


def _gamma_init(ls: nn.Module) -> float | None:
    return None if _is_identity(ls) else 1.0  # the loaded gammas compute the forward; 1.0 only builds it


def _attn_problems(where: str, attn: nn.Module) -> list[str]:
    kind = _name(attn)
    if kind not in ("Attention", "DiffAttention"):
        return [f"{where} is {kind}, not Attention or DiffAttention"]
    found = [] if _is_identity(getattr(attn, "norm", None)) else [f"{where}.norm (scale norm)"]
    if kind == "DiffAttention" and getattr(attn, "dual_lambda", False):
        found.append(f"{where} has dual_lambda (two scalar lambdas)")
    if attn.proj.bias is None:
        found.append(f"{where}.proj has no bias")
    return found


def _mlp_problems(where: str, mlp: nn.Module) -> list[str]:
    if _name(mlp) != "Mlp" or not _is_identity(getattr(mlp, "norm", None)):
        return [f"{where} is {_name(mlp)}, not a plain Mlp"]
    return [] if mlp.fc1.bias is not None and mlp.fc2.bias is not None else [f"{where} has projections without bias"]


def layout_problems(i: int, block: nn.Module) -> list[str]:
    """What fastvit's version of ``block`` cannot compute (empty: convertible)."""
    kind, where = _name(block), f"blocks.{i}"
    if kind in ("Block", "ResPostBlock"):
        return _attn_problems(f"{where}.attn", block.attn) + _mlp_problems(f"{where}.mlp", block.mlp)
    if kind == "ParallelThingsBlock":
        found = []
        for j, (a, f) in enumerate(zip(block.attns, block.ffns)):
            found += _attn_problems(f"{where}.attns.{j}.attn", a.attn) + _mlp_problems(f"{where}.ffns.{j}.mlp", f.mlp)
        return found
    found = []
    if kind == "ParallelScalingBlock" and getattr(block, "out_proj", None) is not None:
        found.append(f"{where} fuses its output projections (fuse_out_proj=True)")
    if kind == "DiffParallelScalingBlock" and getattr(block, "dual_lambda", False):
        found.append(f"{where} has dual_lambda (two scalar lambdas)")
    projs = [getattr(block, n, None) for n in ("attn_out_proj", "mlp_out_proj", "out_proj")]
    if any(p is not None and p.bias is None for p in projs):
        found.append(f"{where} has output projections without bias")
    return found


def layout_fields(model: nn.Module) -> dict:
    """The ViTConfig fields of the blocks (all alike: the first and last are read)."""
    first, last = model.blocks[0], model.blocks[-1]
    kind, d = _name(first), model.embed_dim
    if kind in ("ParallelScalingBlock", "DiffParallelScalingBlock"):
        hidden = first.in_split[0]
        return dict(block_type=LAYOUTS[kind], num_heads=first.num_heads, mlp_ratio=mlp_ratio_for(d, hidden),
                    qkv_bias=first.in_proj.bias is not None, qk_norm=not _is_identity(first.q_norm),
                    init_values=_gamma_init(first.ls), act_layer=timm_activation(first.mlp_act),
                    attn_drop_rate=float(getattr(first, "attn_drop_p", getattr(first.attn_drop, "p", 0.0))),
                    drop_path_rate=float(getattr(last.drop_path, "drop_prob", 0.0)))
    if kind == "ParallelThingsBlock":
        attn, mlp, ls, dp = first.attns[0].attn, first.ffns[0].mlp, first.attns[0].ls, last.attns[0].drop_path
        fields = dict(block_type="parallel", num_parallel=first.num_parallel, init_values=_gamma_init(ls))
    else:  # Block (with DiffAttention) or ResPostBlock
        attn, mlp, dp = first.attn, first.mlp, last.drop_path1
        if kind == "ResPostBlock":
            fields = dict(block_type="res_post_norm", init_values=first.init_values)
        else:
            fields = dict(attn_layer="diff", init_values=_gamma_init(first.ls1))
    return dict(fields, num_heads=attn.num_heads, mlp_ratio=mlp_ratio_for(d, mlp.fc1.out_features),
                qkv_bias=attn.qkv.bias is not None, qk_norm=not _is_identity(attn.q_norm), act_layer=timm_activation(mlp.act),
                attn_drop_rate=float(getattr(attn.attn_drop, "p", 0.0)), drop_path_rate=float(getattr(dp, "drop_prob", 0.0)))
