"""Rotary attention benchmarks (CUDA only), as an Eva model runs them: q and k rotated inside the
attention kernel against timm's way, selected by ``pytest benchmarks --benchmark-only -k rope``
(with test_kernels.py's ``rope_attention`` cases: the op alone at the presets' native sizes, its
tables given per pair). Here the tables are the model's own (:mod:`fastvit.layers.rope`, timm's
full ``[sin, cos]`` form, cut to pairs for the kernel as :class:`~fastvit.layers.eva_block.EvaAttention`
does), timm's rotation is its eager op sequence (``rope_prefix``), and DINOv3 runs at 224 (201 tokens),
the size it is mostly used at; records under op ``rotary_attention``.

Providers, forward and forward+backward, bf16 q / k / v with fp32 tables (a model under autocast):

- "triton": :func:`fastvit.kernels.rope_attention` (q and k rotated as the kernel loads them, the
  inverse rotation applied to dq and dk in its backward; no rotated q or k in memory);
- "sdpa-rotate": timm's eager way, the rotation in PyTorch ops (prefix tokens kept, rotated q and k
  cast back to bf16), then ``F.scaled_dot_product_attention`` (the reference of the speed-ups);
- "torch.compile": the same function under ``torch.compile`` (inductor fuses the rotation's
  element-wise ops into one kernel; the attention stays SDPA).

Shapes (head dim 64, about 256 x 197 tokens per call): DINOv3-B (12 heads) and DINOv3-L (16 heads)
at 224 (N = 1 class + 4 registers + 196 patches, half pairs) and EVA-02-B/14 at 224 (12 heads,
N = 1 + 256, interleaved pairs). FLOPs: the attention's 4 B H N^2 D forward, 3.5x with gradients;
the traffic the fusion saves is counted by :func:`fastvit.bench.rope_traffic_saved` (docs/eva.md).

``FASTVIT_KERNEL_BENCH_SMOKE=1`` runs the cases on the CPU at toy sizes (the fused op through the
interpreter): a check that the harness works, never a measurement.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from fastvit import bench
from fastvit.kernels import ops, reference
from fastvit.layers.rope import RopeCat, RopeDinoV3, rope_pairs, rope_prefix

if not ops.triton_installed():
    pytest.skip(ops.TRITON_MISSING, allow_module_level=True)

SMOKE = os.environ.get("FASTVIT_KERNEL_BENCH_SMOKE") == "1"
pytestmark = [] if SMOKE else pytest.mark.cuda

DEVICE = "cpu" if SMOKE else "cuda"
TOKENS = 21 if SMOKE else 256 * 197
BUFFERS = 3  # rotating input buffers
OP = "rotary_attention"

# name -> (heads, head_dim, patch grid, prefix tokens, rope kind (half pairs for dinov3))
SHAPES = {
    "dinov3_b": (12, 64, (14, 14), 5, "dinov3"),
    "dinov3_l": (16, 64, (14, 14), 5, "dinov3"),
    "eva02_b": (12, 64, (16, 16), 1, "cat"),
}
SMOKE_SHAPES = {"dinov3_b": (2, 16, (4, 4), 5, "dinov3"), "eva02_b": (2, 16, (4, 4), 1, "cat")}
PROVIDERS = ("triton", "sdpa-rotate", "torch.compile")
MODES = ("fwd", "fwd+bwd")


def _table(kind: str, head_dim: int, grid) -> torch.Tensor:
    rope = RopeDinoV3(head_dim, 100.0, grid) if kind == "dinov3" else RopeCat(head_dim, 10000.0, grid)
    return rope().to(DEVICE)


def rotate_sdpa(q, k, v, emb, num_prefix, half):
    """timm's way: rotate in PyTorch (prefix kept, cast back to v's dtype), then SDPA."""
    q = rope_prefix(q, emb, num_prefix, half, v.dtype)
    k = rope_prefix(k, emb, num_prefix, half, v.dtype)
    return F.scaled_dot_product_attention(q, k, v)


def _provider_fn(provider: str, num_prefix: int, half: bool):
    if provider == "triton":
        if "rope_attention" not in ops.OPS:
            pytest.skip("this fastvit declares no rope_attention kernel")
        from fastvit.kernels import rope_attention

        def fused(q, k, v, emb):
            sin, cos = rope_pairs(emb, half)
            return rope_attention(q, k, v, sin, cos, num_prefix=num_prefix, rotate_half=half)

        return fused

    def eager(q, k, v, emb):
        return rotate_sdpa(q, k, v, emb, num_prefix, half)

    return torch.compile(eager) if provider == "torch.compile" else eager


def _params():
    shapes = SMOKE_SHAPES if SMOKE else SHAPES
    return [pytest.param(name, mode, provider, id=f"rope-{name}-{mode}-{provider}")
            for name in shapes for mode in MODES for provider in PROVIDERS]  # fmt: skip


@pytest.mark.parametrize("shape_name, mode, provider", _params())
def test_rope_attention(benchmark, references, kernel_rounds, shape_name, mode, provider):
    heads, head_dim, grid, prefix, kind = (SMOKE_SHAPES if SMOKE else SHAPES)[shape_name]
    half = kind == "dinov3"
    seq = prefix + grid[0] * grid[1]
    batch = max(1, round(TOKENS / seq))
    dt = torch.bfloat16
    grad = mode != "fwd"
    emb = _table(kind, head_dim, grid)
    fn = _provider_fn(provider, prefix, half)

    def rand(g=False):
        return torch.randn(batch, heads, seq, head_dim, device=DEVICE, dtype=dt).requires_grad_(g)

    inputs = [(rand(grad), rand(grad), rand(grad), emb, rand()) for _ in range(BUFFERS)]
    q, k, v = (t[:1].detach().float() for t in inputs[0][:3])
    ref = reference.rope_attention_ref(q, k, v, *rope_pairs(emb, half), prefix, half, upcast=False)

    if mode == "fwd":

        def step(*args):
            with torch.no_grad():
                return fn(*args[:-1])

    else:

        def step(*args):
            out = fn(*args[:-1])
            torch.autograd.grad(out, args[:3], args[-1])
            return out.detach()

    compiled = provider == "torch.compile"
    if compiled:
        torch._dynamo.reset()
    rounds, warmup = kernel_rounds
    fwd = 4 * batch * heads * seq * seq * head_dim
    try:
        record = bench.run_kernel_case(
            op=OP, provider=provider, mode=mode, dtype="bf16", step=step, inputs=inputs, device=DEVICE, rounds=rounds,
            warmup=warmup, compiled=compiled, measure=bench.pedantic_measure(benchmark),
            shape=dict(batch=batch, heads=heads, seq=seq, head_dim=head_dim, prefix=prefix, rope=kind),
            flop_per_iter=fwd if mode == "fwd" else 3.5 * fwd, check=lambda out: bench.parity(out[:1], ref),
        )  # fmt: skip
    finally:
        if compiled:
            torch._dynamo.reset()
    benchmark.group = f"{OP} {shape_name} seq={seq} bf16 {mode}"
    references.attach(benchmark, record)
