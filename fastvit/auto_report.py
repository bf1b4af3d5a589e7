"""What ``auto`` runs for a model's shapes, for ``fastvit info``.

:func:`model_calls` lists one call per dispatched op of a ViT config's block
(and its final norm) on synthetic inputs of the model's shapes, made through
the ``auto`` layers themselves, so the keys are exactly the ones the model
uses: the sequence length is the config's own (``cfg.seq_len``: class,
register and distillation tokens plus the patches, whether or not the position
embedding covers the prefix), the block norms are called at their residual
junction (``fork``), LayerScale's gamma is passed where the model has one. The dtype is the model's own (as ``fastvit bench`` runs it: weights and
inputs in that dtype, no autocast). :func:`auto_report` makes the calls on
CUDA (measuring, or reading the cache) and formats the records; off CUDA it
lists the candidates and says why PyTorch runs.
"""

from __future__ import annotations

from typing import Any

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# ViTConfig.act_layer -> AutoLinearGELU's approximate (others, e.g. silu/SwiGLU, are not an fc1 + GELU)
APPROXIMATE = {"gelu": "none", "gelu_tanh": "tanh", "quick_gelu": "quick"}


def model_calls(cfg, batch: int, dtype, device) -> list[tuple[str, Any, tuple]]:
    """(label, layer or function, args) for each dispatched op of ``cfg``'s model at ``batch`` images."""
    import torch

    from fastvit.layers import auto

    d, heads, head_dim, hidden = cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_hidden_dim
    tokens = cfg.seq_len

    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    x = rand(batch, tokens, d)
    gamma = () if cfg.init_values is None else (rand(d),)  # LayerScale: the residual GEMMs' per-channel factor
    if getattr(cfg, "norm_layer", "layernorm") == "rmsnorm":  # AIMv2: RMSNorm everywhere (ops rms_norm, rms_norm_fork)
        from fastvit.layers.norm import AutoBlockRMSNorm, AutoRMSNorm as norm_cls

        calls = [("norm1, norm2", AutoBlockRMSNorm(d, eps=cfg.norm_eps, device=device, dtype=dtype).fork, (x,))]
    else:
        norm_cls = auto.AutoLayerNorm
        calls = [("norm1, norm2", auto.AutoBlockNorm(d, eps=cfg.norm_eps, device=device, dtype=dtype).fork, (x,))]
    if cfg.qk_norm:  # q_norm / k_norm over each head, then attention over q, k, v
        q = rand(batch, heads, tokens, head_dim)
        calls.append(("q_norm, k_norm", norm_cls(head_dim, eps=cfg.norm_eps, device=device, dtype=dtype), (q,)))
        calls.append(("attention", auto.auto_attention, (q, rand(*q.shape), rand(*q.shape))))
    else:
        calls.append(("attention", auto.auto_attention_packed, (rand(batch, tokens, 3, heads, head_dim),)))
    calls.append(("attn.proj + residual", auto.AutoResidualLinear(d, d).to(device, dtype).eval(), (rand(batch, tokens, d), x, *gamma)))
    approximate = APPROXIMATE.get(getattr(cfg, "act_layer", "gelu"))
    fc2_in = hidden // 2 if cfg.mlp_layer == "swiglu" else hidden
    if approximate is not None and getattr(cfg, "mlp_layer", "mlp") == "mlp":
        fc1 = auto.AutoLinearGELU(d, hidden, approximate=approximate, device=device, dtype=dtype)
        calls.append(("mlp.fc1 + act", fc1, (x,)))
    if getattr(cfg, "mlp_layer", "mlp") in ("swiglu", "swiglu_unpacked"):
        calls.append(("mlp.fc1 gate", _swiglu_gate(cfg, d, hidden).to(device, dtype).eval().gate, (x,)))
    fc2 = auto.AutoResidualLinear(fc2_in, d).to(device, dtype).eval()
    calls.append(("mlp.fc2 + residual", fc2, (rand(batch, tokens, fc2_in), x, *gamma)))
    calls.append(("norm", norm_cls(d, eps=cfg.norm_eps, device=device, dtype=dtype), (x,)))
    return calls


def _swiglu_gate(cfg, d: int, hidden: int):
    """The SwiGLU branch ``auto`` builds for ``cfg`` (its gate is the dispatched op ``linear_swiglu``)."""
    from fastvit.layers.activations import activation_class

    act = activation_class(cfg.act_layer)
    if cfg.mlp_layer == "swiglu":  # packed fc1 (D -> H, gate first)
        from fastvit.layers.glu import GluMlp

        return GluMlp(d, hidden, act_layer=act, gate_impl="auto")
    from fastvit.layers.bias_free import SwiGLU  # fc1_g, fc1_x (D -> H each), AIMv2's without bias

    return SwiGLU(d, hidden, act_layer=act, bias=cfg.proj_bias, gate_impl="auto")


def _ms(seconds) -> str:
    return "raised" if seconds is None else f"{seconds * 1e3:.4f} ms"


def _candidates(op: str) -> str:
    from fastvit.layers.auto import OPS
    from fastvit.layers.glu import LINEAR_SWIGLU_CANDIDATES
    from fastvit.layers.norm import RMS_NORM_CANDIDATES, RMS_NORM_FORK_CANDIDATES
    from fastvit.layers.rope_attention import ROPE_ATTENTION_CANDIDATES
    from fastvit.layers.varlen import VARLEN_CANDIDATES

    table = {**OPS, "rms_norm": RMS_NORM_CANDIDATES, "rms_norm_fork": RMS_NORM_FORK_CANDIDATES,
             "linear_swiglu": LINEAR_SWIGLU_CANDIDATES, "rope_attention": ROPE_ATTENTION_CANDIDATES,
             "varlen_attention": VARLEN_CANDIDATES}
    return ", ".join(f"{c.name} ({c.kind})" for c in table[op])


def auto_report(model: str, batch: int, dtype: str | None, device: str) -> list[str]:
    """The lines ``fastvit info`` prints about ``auto`` for ``model`` at ``batch`` images."""
    import torch

    from fastvit.auto_report_families import family_of
    from fastvit.factory import get_config

    from fastvit.dispatch.cache import cache_dir
    from fastvit.dispatch.dispatcher import get_dispatcher

    cfg = get_config(model)
    family = family_of(model)
    if family == "vit":
        tokens = f"{cfg.seq_len} tokens"
        lines_unfused = [f"runs as PyTorch ops in {model} whatever the implementation:"]
        lines_unfused += [f"  {line}" for line in unfused_parts(cfg)]
    else:
        from fastvit.auto_report_families import eva_ops, family_tokens, naflex_ops

        count, how = family_tokens(model, cfg)
        tokens, lines_unfused = f"{count} tokens ({how})", []
    dtype = dtype or ("bf16" if device == "cuda" else "fp32")
    torch_dtype = getattr(torch, DTYPES[dtype])
    dispatcher = get_dispatcher()
    policy = dispatcher.policy()
    lines = [f"auto (FASTVIT_DISPATCH={policy}; a kernel must agree with PyTorch (at most 2x its error against a float64 "
             f"reference) and be {dispatcher.margin:.0%} faster; cache {cache_dir()}):",
             "  a plain torch.compile(model) runs PyTorch's ops for every call not bound before it "
             "(fastvit.prepare(model, example) binds them; fastvit.compile does it itself)"]
    unprepared = [r for r in dispatcher.choices() if r["source"] == "unprepared"]
    if unprepared:
        lines.append(f"  in this process, compiled code ran PyTorch's ops for {len(unprepared)} unprepared call(s):")
        lines.extend(f"    {r['op']} {r['key']} ({r['mode']})" for r in unprepared)
    if not dispatcher.on_cuda((torch.empty(0, device=device),)):
        lines.append(f"auto on {device} for {model}, batch {batch}, {dtype}, {tokens}: torch -- every op runs PyTorch's implementation "
                     "(torch for norms and GEMMs, sdpa for attention); the kernels and the timing run on CUDA only")
        if family == "vit":
            norms = ("rms_norm", "rms_norm_fork") if cfg.norm_layer == "rmsnorm" else ("layer_norm", "layer_norm_fork")
            fc1 = ("linear_swiglu",) if cfg.mlp_layer in ("swiglu", "swiglu_unpacked") else ("linear_gelu",)
            ops = (*norms, *fc1, "linear_residual", "attention_packed")
        else:
            ops = eva_ops(cfg) if family == "eva" else naflex_ops(cfg)
        for op in ops:
            lines.append(f"  {op:<17} candidates on CUDA: {_candidates(op)}")
        return lines + lines_unfused
    if family != "vit":
        return lines + _family_on_cuda(model, cfg, family, batch, dtype, torch_dtype, device, tokens, dispatcher)
    calls = model_calls(cfg, batch, torch_dtype, device)
    gpu = dispatcher.device_name(calls[0][2])
    lines.append(f"auto on {gpu} for {model}, batch {batch}, {dtype}, {tokens} (inference):")
    with torch.no_grad():
        for label, layer, args in calls:
            before = dispatcher.mark()
            layer(*args)
            for rec in dispatcher.choices(before):
                lines.extend(_format(label, rec))
    return lines + lines_unfused


def _family_on_cuda(model, cfg, family, batch, dtype, torch_dtype, device, tokens, dispatcher) -> list[str]:
    """An eva / naflexvit model of one block runs one forward; each dispatched call it made, as chosen."""
    import torch

    from fastvit.auto_report_families import family_calls

    net, x = family_calls(model, cfg, batch, torch_dtype, device)
    lines = [f"auto on {dispatcher.device_name((x,))} for {model}, batch {batch}, {dtype}, {tokens} (inference, "
             "one block's calls; every block makes the same):"]
    before = dispatcher.mark()
    with torch.no_grad():
        net(x)
    for rec in dispatcher.choices(before):
        lines.extend(_format(rec["op"], rec))
    return lines


def unfused_parts(cfg) -> list[str]:
    """What of ``cfg``'s model runs as PyTorch ops whichever implementation is chosen (the fused
    path's limits for this model), one line each; the block's norms, GEMMs and attention are the
    dispatched ops above."""
    out = ["patch embedding: a PyTorch convolution (cuDNN)" + (", after the ResNetV2 stem's convolutions and "
           "GroupNorms" if cfg.hybrid_layers is not None else ""),
           "qkv projection: nn.Linear (cuBLAS, bias in its epilogue)"]
    if cfg.mlp_layer in ("swiglu", "swiglu_unpacked"):
        out.append("SwiGLU MLP: the gate (fc1's two GEMMs, SiLU(gate) * value) is the dispatched linear_swiglu op, "
                   "whose backward recomputes the two GEMMs in PyTorch; fc2 + residual is the residual GEMM")
    elif cfg.act_layer not in ("gelu", "gelu_tanh", "quick_gelu"):
        out.append(f"MLP activation {cfg.act_layer}: fc1 is a plain GEMM, the activation its own op")
    if cfg.qk_norm:
        out.append("qk-norm: q_norm / k_norm are the dispatched LayerNorm over the packed qkv's per-head views; "
                   "attention then takes q, k, v unpacked")
    if cfg.global_pool == "map":
        out.append("attention-pool head: PyTorch ops (q / kv / proj Linear, SDPA, LayerNorm, MLP), once per image")
    if cfg.attn_drop_rate > 0:
        out.append("attention dropout (training): SDPA (the Triton kernel has no dropout)")
    if cfg.drop_rate > 0:
        out.append("element-wise dropout on the branches (training): the residual GEMMs fall back to separate ops")
    if cfg.distilled or cfg.representation_size:
        out.append("distillation / pre-logits heads: nn.Linear")
    return out


def _format(label: str, rec: dict) -> list[str]:
    times = ", ".join(f"{name} {_ms(t)}" for name, t in rec["times"].items())
    head = f"  {label:<20} {rec['op']:<17} -> {rec['chosen']:<15} [{rec['source']}]" + (f" {times}" if times else "")
    out = [head, f"    key {rec['key']}; candidates: {_candidates(rec['op'])}"]
    out.extend(f"    {name}: {why}" for name, why in rec["reasons"].items())
    out.extend(f"    {name}: agrees with PyTorch (error {e['error']:.3g}, allowed {e['allowed']:.3g})"
               for name, e in rec.get("errors", {}).items() if e.get("ok"))
    return out
