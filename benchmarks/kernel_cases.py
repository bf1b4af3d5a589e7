"""The kernel benchmarks' cases (``benchmarks/test_kernels.py``), declared beside them.

One :class:`BenchCase` per ``test_<bench>[<id>]``, keyed by the op of
:data:`fastvit.kernels.ops.OPS` it measures; the library knows nothing of them.
Sizes come from :mod:`fastvit.shapes` (the core presets' widths and head dims)
and the lengths a ViT-B/16, ViT-L/14 and ViT-B/16 at 384 and 512 attend over.
tests/kernels/test_ops.py proves every declared op has cases here and that pytest
collects exactly these.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvit import shapes


@dataclass(frozen=True)
class BenchCase:
    """One case of ``benchmarks/test_kernels.py``: ``test_<bench>[<id>]`` with ``params``.

    ``params`` are the benchmark function's arguments, in order; a case marked
    ``slow`` runs only with ``-m slow``. Providers name the implementation
    timed: fastvit's kernel and PyTorch's baseline ("torch", "sdpa-*", ...).
    """

    op: str
    bench: str
    id: str
    params: tuple[tuple[str, object], ...]
    slow: bool = False

    @property
    def values(self) -> dict:
        return dict(self.params)

    @property
    def test_id(self) -> str:
        """The pytest node name: ``test_<bench>[<id>]``."""
        return f"test_{self.bench}[{self.id}]"

    def __str__(self) -> str:
        return self.id


def bench_case(op: str, bench: str, id: str, /, *, slow: bool = False, **params) -> BenchCase:
    """A :class:`BenchCase` of op ``op``; ``params`` in the benchmark function's order."""
    return BenchCase(op, bench, id, tuple(params.items()), slow)


MODES = ("fwd", "fwd+bwd")
# attention: fastvit's kernel against SDPA forced to each backend, and flash-attn / xformers where installed
ATTENTION_PROVIDERS = ("sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "triton", "flash_attn", "xformers")
ATTENTION_SEQS = (197, 257, 577, 1025)  # ViT-B/16 at 224, ViT-L/14 at 224, ViT-B/16 at 384 and 512
# ViT-S/B/L's 64 and ViT-H/14's 80: the smallest and largest core head dims
BENCH_HEAD_DIMS = (min(shapes.head_dims("core")), max(shapes.head_dims("core")))
# ViT-B's and ViT-L's widths: the two narrowest core widths
BENCH_WIDTHS = shapes.widths("core")[:2]
NORM_PROVIDERS = ("torch", "torch.compile", "triton")


def _attention() -> list:
    """The core head dims at ViT lengths; every other preset head dim (fastvit.shapes) at its model's
    length, bf16, with ``-m slow``."""
    core = [
        bench_case("attention", "attention", f"N{seq}-D{head_dim}-{dtype}-{mode}-{provider}", slow=dtype != "bf16",
                   seq=seq, head_dim=head_dim, dtype=dtype, mode=mode, provider=provider)
        for dtype in ("bf16", "fp16") for head_dim in BENCH_HEAD_DIMS for seq in ATTENTION_SEQS
        for mode in MODES for provider in ATTENTION_PROVIDERS
    ]  # fmt: skip
    wide = [
        bench_case("attention", "attention", f"N{seq}-D{head_dim}-bf16-{mode}-{provider}", slow=True, seq=seq,
                   head_dim=head_dim, dtype="bf16", mode=mode, provider=provider)
        for head_dim, _, seq in shapes.attention_shapes("wide") if head_dim not in BENCH_HEAD_DIMS
        for mode in MODES for provider in ("sdpa-flash", "triton")
    ]  # fmt: skip
    return core + wide


ROPE_PROVIDERS = ("sdpa-rotate", "torch.compile", "triton")


def _rope_attention() -> list:
    """Rotary attention at the core rotary presets' shapes (fastvit.shapes: DINOv3-B/L, EVA-02-B):
    fastvit's kernel against timm's way (rotate q and k in PyTorch, then SDPA) and its torch.compile;
    bf16, fp16 with ``-m slow``."""
    return [
        bench_case("rope_attention", "rope_attention",
                   f"{s.preset}-N{s.tokens}-D{s.head_dim}-{dtype}-{mode}-{provider}", slow=dtype != "bf16",
                   preset=s.preset, dtype=dtype, mode=mode, provider=provider)
        for dtype in ("bf16", "fp16") for s in shapes.rope_shapes("core") for mode in MODES
        for provider in ROPE_PROVIDERS
    ]  # fmt: skip


def _attention_probs() -> list:
    """The maps of one layer, bf16: the kernel against torch's softmax(q k^T * scale)."""
    return [
        bench_case("attention_probs", "attention_probs", f"N{seq}-D{head_dim}-{provider}", seq=seq,
                   head_dim=head_dim, provider=provider)
        for head_dim in BENCH_HEAD_DIMS for seq in (197, 577) for provider in ("torch", "triton")
    ]  # fmt: skip


def _norm(op: str) -> list:
    """The two narrowest core widths; every other preset width (fastvit.shapes) with ``-m slow``."""
    wide = [w for w in shapes.widths("wide") if w not in BENCH_WIDTHS]
    return [bench_case(op, "layer_norm", f"{op}-N{width}-{mode}-{provider}", slow=width not in BENCH_WIDTHS, op=op,
                       width=width, mode=mode, provider=provider)
            for width in (*BENCH_WIDTHS, *wide) for mode in MODES for provider in NORM_PROVIDERS]  # fmt: skip


def _layer_norm() -> list:
    """LayerNorm, and a block's norm at its residual junction, forward+backward: ``(LN(x), x)`` with both
    outputs' gradients summed at ``x`` -- torch's autograd add against ``layer_norm_fork``'s one launch."""
    junction = [bench_case("layer_norm", "norm_junction", f"junction-N{width}-{provider}", width=width, provider=provider)
                for width in BENCH_WIDTHS for provider in ("torch", "torch.compile", "triton-fork")]  # fmt: skip
    return _norm("layer_norm") + junction


def _add_layer_norm() -> list:
    """add + LayerNorm, and the seam it competes at: from fc2's input to the next block's
    normalized input, as linear_residual + layer_norm ("triton-epilogue"), cuBLAS +
    add_layer_norm ("cublas+add-norm"), torch and torch.compile."""
    seam = [bench_case("add_layer_norm", "residual_norm", f"{provider}-{mode}", provider=provider, mode=mode)
            for mode in MODES for provider in ("torch", "torch.compile", "triton-epilogue", "cublas+add-norm")]  # fmt: skip
    return _norm("add_layer_norm") + seam


def _linear(op: str, kernel: str, providers: tuple) -> list:
    """ViT-B's fc1 (768 -> 3072) or fc2 (3072 -> 768, plus the residual add) at 256 x 197 rows."""
    return [bench_case(op + kernel, "linear", f"{op}-{mode}-{provider}", op=op, mode=mode, provider=provider)
            for mode in MODES for provider in providers]  # fmt: skip


def _mlp_residual() -> list:
    """A whole MLP branch: fused (GELU's derivative in fc2's dgrad GEMM) vs two ops, torch, torch.compile."""
    return [bench_case("mlp_residual", "mlp", f"{provider}-{mode}", provider=provider, mode=mode)
            for mode in MODES for provider in ("torch", "torch.compile", "triton-two-ops", "triton-mlp")]  # fmt: skip


def _rms_norm() -> list:
    """RMSNorm (AIMv2's norms) at the two narrowest core widths; the other preset widths with ``-m slow``."""
    wide = [w for w in shapes.widths("wide") if w not in BENCH_WIDTHS]
    return [bench_case("rms_norm", "layer_norm_rms", f"rms_norm-N{width}-{mode}-{provider}", slow=width not in BENCH_WIDTHS,
                       width=width, mode=mode, provider=provider)
            for width in (*BENCH_WIDTHS, *wide) for mode in MODES for provider in NORM_PROVIDERS]  # fmt: skip


def _linear_swiglu() -> list:
    """SwiGLU's fc1 (EVA-02 B: 768 -> 2 x 2048): the fused kernel vs two cuBLAS GEMMs + silu * value, torch.compile."""
    return [bench_case("linear_swiglu", "linear_swiglu", f"linear_swiglu-{mode}-{provider}", mode=mode, provider=provider)
            for mode in MODES for provider in ("torch", "torch.compile", "triton")]  # fmt: skip
# varlen_attention: packed images of mixed sizes (NaFlex). "img50": 50 images of 128-512 px a side at
# patch 16 (8-32 patches a side, seeded), the mix issue 26 names. fastvit's kernel against SDPA per
# image ("torch"), padding to the longest + one masked SDPA call ("sdpa-padded", timm's / HF's way)
# and PyTorch's own varlen flash attention ("torch_varlen", where the installed torch has it).
VARLEN_MIXES = ("img50",)
VARLEN_PROVIDERS = ("torch", "sdpa-padded", "torch_varlen", "triton")
# NaFlexViT-B / SigLIP 2 B (64) and SigLIP 2 so400m (72)
VARLEN_HEAD_DIMS = (64, 72)


def _varlen_attention() -> list:
    """bf16 at head dims 64 and 72, forward and forward+backward; fp16 with ``-m slow``."""
    return [
        bench_case("varlen_attention", "varlen_attention", f"{mix}-D{head_dim}-{dtype}-{mode}-{provider}",
                   slow=dtype != "bf16", mix=mix, head_dim=head_dim, dtype=dtype, mode=mode, provider=provider)
        for dtype in ("bf16", "fp16") for mix in VARLEN_MIXES for head_dim in VARLEN_HEAD_DIMS
        for mode in MODES for provider in VARLEN_PROVIDERS
    ]  # fmt: skip


# op -> its cases (every op of fastvit.kernels.ops.OPS)
CASES = {
    "attention": _attention,
    "rope_attention": _rope_attention,
    "attention_probs": _attention_probs,
    "layer_norm": _layer_norm,
    "add_layer_norm": _add_layer_norm,
    "rms_norm": _rms_norm,
    "linear_gelu": lambda: _linear("linear_gelu", "", ("torch", "torch.compile", "triton")),
    "linear_swiglu": _linear_swiglu,
    "linear_residual": lambda: _linear("linear_residual", "", ("torch", "torch.compile", "triton")),
    "linear_gelu_tma": lambda: _linear("linear_gelu", "_tma", ("tma",)),
    "linear_residual_tma": lambda: _linear("linear_residual", "_tma", ("tma",)),
    "mlp_residual": _mlp_residual,
    "varlen_attention": _varlen_attention,
}


def bench_cases(bench: str | None = None) -> list:
    """Every op's cases, or those of ``test_<bench>``."""
    return [case for cases in CASES.values() for case in cases() if bench in (None, case.bench)]
