"""Kernel benchmarks (CUDA only): fastvit's Triton ops against PyTorch's at ViT shapes.

- attention, forward and forward+backward: sequence 197 (ViT-B/16 at 224),
  257 (ViT-L/14 at 224), 577 (ViT-B/16 at 384), 1025 (ViT-B/16 at 512) with
  head_dim 64 (12 heads) and 80 (16 heads, as ViT-H/14), about 256 x 197
  tokens per call; fastvit's kernel vs SDPA forced to its flash, efficient and
  cuDNN backends (``torch.nn.attention.sdpa_kernel``), and flash-attn /
  xformers where installed. FLOPs: 4·B·H·N²·D forward, 3.5x that for
  forward+backward (five matmuls against two, the FlashAttention convention).
- layer_norm and add_layer_norm over 256 x 197 rows of width 768 and 1024:
  GB/s of the minimal traffic (LayerNorm: read x, write y; backward: read x
  and dy, write dx; add+LayerNorm: read x, y, write s, y; backward: read
  s, dy, ds, write dx) vs F.layer_norm and its torch.compile; norm_junction: a
  block's norm at its residual junction, forward+backward, ``layer_norm_fork``
  (the residual's gradient added in the LayerNorm backward) vs torch's
  LayerNorm with autograd's separate add (6 passes of minimal traffic).
- linear_gelu (K=768 -> N=3072, ViT-B's fc1) and linear_residual (3072 -> 768,
  fc2) at M = 256 x 197: TFLOP/s (2·M·N·K forward, 3x with the input and
  weight gradients) vs the unfused torch ops and their torch.compile; "triton"
  is the pointer kernel, "tma" the Hopper TMA candidate (sm_90+).
- residual_norm: the seam between two GEMMs, from fc2's input to the next
  block's normalized input, ``s = r + x @ W^T + b; n = LN(s)`` at fc2's shape.
  Two fusions compete with torch and torch.compile: "triton-epilogue" (what
  the fused block does: linear_residual, then layer_norm) and
  "cublas+add-norm" (cuBLAS GEMM with bias, then add_layer_norm). TFLOP/s of
  the GEMM's 2·M·N·K (3x with gradients), so the seam's cost shows as a drop.

- rope_attention, forward and forward+backward, at the core rotary presets' shapes (DINOv3-B/L: 261
  tokens, 5 unrotated, half pairs; EVA-02-B: 257 tokens, 1 unrotated, interleaved pairs): the fused
  kernel (q and k rotated as their tiles load) vs timm's way, rotate q and k in PyTorch then SDPA
  ("sdpa-rotate"), and its torch.compile. FLOPs as attention's (the rotation's are not counted).
- attention_probs: the softmax maps rebuilt from the forward's log-sum-exp
  (what ``fastvit analyze`` draws) against torch's softmax(q k^T * scale), bf16
  inputs, fp32 maps; GB/s of the maps written.

- varlen_attention: packed images of mixed sizes (50 images of 128-512 px a side at patch 16,
  head dims 64 and 72), forward and forward+backward: fastvit's packed kernel vs SDPA per image
  ("torch"), pad-to-longest + one masked SDPA call ("sdpa-padded") and PyTorch's
  ``torch.nn.attention.varlen`` ("torch_varlen", CUDA). FLOPs count real tokens only:
  4·H·D·sum(n_i²) forward, 3.5x that for forward+backward.

The cases (shapes, dtypes, providers) are declared in ``kernel_cases.py`` beside
this file, one parametrisation per benchmark function; tests/kernels/test_ops.py
proves every op of :data:`fastvit.kernels.ops.OPS` is benchmarked here.
Speed-ups are against "sdpa-flash" (attention) and "torch" (the others). Every
record's parity is against the fp32 reference of :mod:`fastvit.kernels.reference`
on a slice of the output. ``-m slow`` adds fp16 attention.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

from kernel_cases import bench_cases

from fastvit import bench, shapes
from fastvit.kernels import ops, reference

if not ops.triton_installed():
    pytest.skip(ops.TRITON_MISSING, allow_module_level=True)

# FASTVIT_KERNEL_BENCH_SMOKE=1 runs the same cases on the CPU at toy sizes, the
# Triton kernels through the interpreter: a check that the harness works
# (tests/test_bench.py), never a measurement.
SMOKE = os.environ.get("FASTVIT_KERNEL_BENCH_SMOKE") == "1"
pytestmark = [] if SMOKE else pytest.mark.cuda

DEVICE = "cpu" if SMOKE else "cuda"
TOKENS = 197 if SMOKE else 256 * 197  # a ViT-B/16 batch of 256 at 224
# heads per head dim: ViT-Ti and ViT-H/14 (smoke) / ViT-B, ViT-H/14 and every preset head dim (fastvit.shapes)
HEADS = {64: 3, 80: 4} if SMOKE else {**shapes.qk_norm_layouts("wide"), 64: 12, 80: 16}
BUFFERS = 3  # rotating input buffers
EPS = 1e-6


def _cases(bench_name: str) -> tuple[list[str], list]:
    """``parametrize`` arguments of ``test_<bench_name>``: its cases in kernel_cases.py."""
    cases = bench_cases(bench_name)
    argnames = [name for name, _ in cases[0].params]
    assert all([name for name, _ in c.params] == argnames for c in cases), bench_name
    return argnames, [pytest.param(*c.values.values(), id=c.id, marks=pytest.mark.slow if c.slow else ()) for c in cases]


def _skip_unless_installed(package: str):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")


def _run(benchmark, references, kernel_rounds, *, op, provider, mode, dtype, shape, fn, inputs, grad_of, compiled=False, **figures):
    """Time ``fn`` (forward) or forward+backward over the rotating ``inputs`` and record it.

    ``inputs``: tuples whose last element is the output gradient (a tensor, or
    a tuple for several outputs); ``grad_of``: indices of the inputs to
    differentiate. ``figures``: flop_per_iter / bytes_per_iter / check.
    """
    if mode == "fwd":

        def step(*args):
            with torch.no_grad():
                return fn(*args[:-1])

    else:

        def step(*args):
            out = fn(*args[:-1])
            outs = out if isinstance(out, tuple) else (out,)
            grads = args[-1] if isinstance(args[-1], tuple) else (args[-1],)
            torch.autograd.grad(outs, [args[i] for i in grad_of], grads)
            return tuple(o.detach() for o in outs) if isinstance(out, tuple) else out.detach()

    if compiled:
        torch._dynamo.reset()
    rounds, warmup = kernel_rounds
    try:
        record = bench.run_kernel_case(
            op=op, provider=provider, mode=mode, dtype=dtype, shape=shape, step=step, inputs=inputs,
            device=DEVICE, rounds=rounds, warmup=warmup, compiled=compiled, measure=bench.pedantic_measure(benchmark), **figures,
        )
    finally:
        if compiled:
            torch._dynamo.reset()
    benchmark.group = f"{op} {','.join(f'{k}={v}' for k, v in shape.items())} {dtype} {mode}"
    references.attach(benchmark, record)


def _rand(*shape, dtype, grad=False):
    return torch.randn(*shape, device=DEVICE, dtype=dtype).requires_grad_(grad)


# -- attention ----------------------------------------------------------------------------

_SDPA_BACKENDS = {"sdpa-flash": "FLASH_ATTENTION", "sdpa-efficient": "EFFICIENT_ATTENTION", "sdpa-cudnn": "CUDNN_ATTENTION"}


def _attention_fn(provider: str):
    if provider == "triton":
        from fastvit.kernels import attention

        return lambda q, k, v: attention(q, k, v)
    if provider in _SDPA_BACKENDS:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, _SDPA_BACKENDS[provider], None)
        if backend is None:
            pytest.skip(f"this torch has no SDPBackend.{_SDPA_BACKENDS[provider]}")

        def sdpa(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v)

        return sdpa
    _skip_unless_installed(provider)
    from fastvit.layers import get_attention_backend

    backend_fn = get_attention_backend(provider)  # (B, H, N, D) in and out, as the model calls it
    return lambda q, k, v: backend_fn(q, k, v)


@pytest.mark.parametrize(*_cases("attention"))
def test_attention(benchmark, references, kernel_rounds, seq, head_dim, dtype, mode, provider):
    fn = _attention_fn(provider)
    heads = HEADS[head_dim]
    batch = max(1, round(TOKENS / seq))
    dt = bench.torch_dtype(dtype)
    grad = mode != "fwd"
    inputs = [tuple(_rand(batch, heads, seq, head_dim, dtype=dt, grad=grad) for _ in range(3)) + (_rand(batch, heads, seq, head_dim, dtype=dt),)
              for _ in range(BUFFERS)]  # fmt: skip
    q, k, v, _ = inputs[0]
    if provider in _SDPA_BACKENDS:  # a forced SDPA backend raises when it cannot take the call
        try:
            with torch.no_grad():
                fn(q, k, v)
        except RuntimeError as e:
            pytest.skip(f"{provider} cannot run this shape/dtype: {str(e).splitlines()[0] if str(e) else e}")
    ref = reference.attention_ref(q[:1].detach().float(), k[:1].detach().float(), v[:1].detach().float(), upcast=False)
    fwd = 4 * batch * heads * seq * seq * head_dim
    _run(
        benchmark, references, kernel_rounds, op="attention", provider=provider, mode=mode, dtype=dtype,
        shape=dict(batch=batch, heads=heads, seq=seq, head_dim=head_dim), fn=fn, inputs=inputs, grad_of=(0, 1, 2),
        flop_per_iter=fwd if mode == "fwd" else 3.5 * fwd, check=lambda out: bench.parity(out[:1], ref),
    )


# -- rotary attention ---------------------------------------------------------------------------


def _rope_fn(provider: str, num_prefix: int, rotate_half: bool):
    if provider == "triton":
        from fastvit.kernels import rope_attention

        return lambda q, k, v, sin, cos: rope_attention(q, k, v, sin, cos, num_prefix=num_prefix, rotate_half=rotate_half)

    def rotate_then_sdpa(q, k, v, sin, cos):  # timm's way: rotate in fp32, cast back, attend
        q = reference.rope_rotate_ref(q, sin, cos, num_prefix, rotate_half).to(v.dtype)
        k = reference.rope_rotate_ref(k, sin, cos, num_prefix, rotate_half).to(v.dtype)
        return F.scaled_dot_product_attention(q, k, v)

    return torch.compile(rotate_then_sdpa) if provider == "torch.compile" else rotate_then_sdpa


@pytest.mark.parametrize(*_cases("rope_attention"))
def test_rope_attention(benchmark, references, kernel_rounds, preset, dtype, mode, provider):
    """Rotary attention at a rotary preset's shape (its heads, head dim, tokens, prefix and pair
    layout): the fused kernel against rotate-then-SDPA and its torch.compile. FLOPs as attention's."""
    shape = next(s for s in shapes.rope_shapes("core") if s.preset == preset)
    heads, seq, head_dim = (2 if SMOKE else shape.heads), shape.tokens, shape.head_dim
    batch = max(1, round(TOKENS / seq))
    dt = bench.torch_dtype(dtype)
    grad = mode != "fwd"
    angle = torch.rand(seq - shape.num_prefix, head_dim // 2, device=DEVICE) * 2 * torch.pi
    sin, cos = angle.sin(), angle.cos()
    inputs = [tuple(_rand(batch, heads, seq, head_dim, dtype=dt, grad=grad) for _ in range(3)) + (sin, cos)
              + (_rand(batch, heads, seq, head_dim, dtype=dt),) for _ in range(BUFFERS)]  # fmt: skip
    q, k, v = (t[:1].detach().float() for t in inputs[0][:3])
    ref = reference.rope_attention_ref(q, k, v, sin, cos, shape.num_prefix, shape.rotate_half, upcast=False)
    fwd = 4 * batch * heads * seq * seq * head_dim
    _run(
        benchmark, references, kernel_rounds, op="rope_attention", provider=provider, mode=mode, dtype=dtype,
        shape=dict(batch=batch, heads=heads, seq=seq, head_dim=head_dim, num_prefix=shape.num_prefix,
                   rotate_half=shape.rotate_half),
        fn=_rope_fn(provider, shape.num_prefix, shape.rotate_half), inputs=inputs, grad_of=(0, 1, 2),
        compiled=provider == "torch.compile", flop_per_iter=fwd if mode == "fwd" else 3.5 * fwd,
        check=lambda out: bench.parity(out[:1], ref),
    )


# -- LayerNorm and add + LayerNorm --------------------------------------------------------

def _torch_layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, EPS)


def _torch_add_layer_norm(x, y, w, b):
    s = x + y
    return s, F.layer_norm(s, (s.shape[-1],), w, b, EPS)


def _norm_fn(op: str, provider: str):
    if provider == "triton":
        from fastvit.kernels import add_layer_norm, layer_norm

        if op == "layer_norm":
            return lambda x, w, b: layer_norm(x, w, b, EPS)
        return lambda x, y, w, b: add_layer_norm(x, y, w, b, EPS)
    fn = _torch_layer_norm if op == "layer_norm" else _torch_add_layer_norm
    return torch.compile(fn) if provider == "torch.compile" else fn


@pytest.mark.parametrize(*_cases("layer_norm"))
def test_layer_norm(benchmark, references, kernel_rounds, op, width, mode, provider):
    dt = torch.bfloat16
    grad = mode != "fwd"
    w = (1 + 0.1 * torch.randn(width, device=DEVICE)).to(dt).requires_grad_(grad)
    b = (0.1 * torch.randn(width, device=DEVICE)).to(dt).requires_grad_(grad)
    inputs = []
    for _ in range(BUFFERS):
        acts = (_rand(TOKENS, width, dtype=dt, grad=grad),) if op == "layer_norm" else (_rand(TOKENS, width, dtype=dt, grad=grad), _rand(TOKENS, width, dtype=dt, grad=grad))
        gout = _rand(TOKENS, width, dtype=dt) if op == "layer_norm" else (_rand(TOKENS, width, dtype=dt), _rand(TOKENS, width, dtype=dt))
        inputs.append((*acts, w, b, gout))
    rows = 4096
    first = [t[:rows].detach().float() for t in inputs[0][: 1 if op == "layer_norm" else 2]]
    if op == "layer_norm":
        ref = reference.layer_norm_ref(first[0], w.detach().float(), b.detach().float(), EPS, upcast=False)
        traffic = 2 if mode == "fwd" else 5
    else:
        ref = reference.add_layer_norm_ref(first[0], first[1], w.detach().float(), b.detach().float(), EPS, upcast=False)[1]
        traffic = 4 if mode == "fwd" else 8
    n_acts = len(first)
    _run(
        benchmark, references, kernel_rounds, op=op, provider=provider, mode=mode, dtype="bf16",
        shape=dict(rows=TOKENS, width=width), fn=_norm_fn(op, provider), inputs=inputs,
        grad_of=tuple(range(n_acts + 2)), compiled=provider == "torch.compile",
        bytes_per_iter=traffic * TOKENS * width * dt.itemsize,
        check=lambda out: bench.parity((out if op == "layer_norm" else out[1])[:rows], ref),
    )


def _torch_junction(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, EPS), x


def _junction_fn(provider: str):
    if provider == "triton-fork":
        from fastvit.kernels import layer_norm_fork

        return lambda x, w, b: layer_norm_fork(x, w, b, EPS)
    return torch.compile(_torch_junction) if provider == "torch.compile" else _torch_junction


@pytest.mark.parametrize(*_cases("norm_junction"))
def test_norm_junction(benchmark, references, kernel_rounds, width, provider):
    """A block's norm at its residual junction, forward+backward: ``(LN(x), x)`` with gradients for both.
    GB/s of the minimal traffic: read x, write LN(x); read x, dLN, d_residual, write dx (6 passes)."""
    dt = torch.bfloat16
    w = (1 + 0.1 * torch.randn(width, device=DEVICE)).to(dt).requires_grad_()
    b = (0.1 * torch.randn(width, device=DEVICE)).to(dt).requires_grad_()
    inputs = [(_rand(TOKENS, width, dtype=dt, grad=True), w, b, (_rand(TOKENS, width, dtype=dt), _rand(TOKENS, width, dtype=dt)))
              for _ in range(BUFFERS)]  # fmt: skip
    rows = 4096
    ref = reference.layer_norm_ref(inputs[0][0][:rows].detach().float(), w.detach().float(), b.detach().float(), EPS,
                                   upcast=False)  # fmt: skip
    _run(
        benchmark, references, kernel_rounds, op="layer_norm_junction", provider=provider, mode="fwd+bwd", dtype="bf16",
        shape=dict(rows=TOKENS, width=width), fn=_junction_fn(provider), inputs=inputs, grad_of=(0, 1, 2),
        compiled=provider == "torch.compile", bytes_per_iter=6 * TOKENS * width * dt.itemsize,
        check=lambda out: bench.parity(out[0][:rows], ref),
    )


# -- GEMMs with fused epilogues -----------------------------------------------------------

# provider "tma": the Hopper candidate (fastvit.kernels.linear_tma; sm_90+ only), beside the pointer kernel "triton"
# (K, N): ViT-B's fc1, fc2 (ViT-Ti's in smoke mode)
LINEAR_SHAPES = {"linear_gelu": (192, 768), "linear_residual": (768, 192)} if SMOKE else {"linear_gelu": (768, 3072), "linear_residual": (3072, 768)}


def _torch_linear_gelu(x, w, b):
    return F.gelu(F.linear(x, w, b))


def _torch_linear_residual(x, w, b, r):
    return r + F.linear(x, w, b)


def _linear_fn(op: str, provider: str):
    if provider == "tma":
        if not SMOKE and torch.cuda.get_device_capability()[0] < 9:
            pytest.skip("the TMA GEMM needs sm_90 or newer")
        from fastvit.kernels.linear_tma import linear_gelu_tma, linear_residual_tma

        return (lambda x, w, b: linear_gelu_tma(x, w, b)) if op == "linear_gelu" else (lambda x, w, b, r: linear_residual_tma(x, w, b, r))
    if provider == "triton":
        from fastvit.kernels.linear import linear_gelu, linear_residual

        return (lambda x, w, b: linear_gelu(x, w, b)) if op == "linear_gelu" else (lambda x, w, b, r: linear_residual(x, w, b, r))
    fn = _torch_linear_gelu if op == "linear_gelu" else _torch_linear_residual
    return torch.compile(fn) if provider == "torch.compile" else fn


@pytest.mark.parametrize(*_cases("linear"))
def test_linear(benchmark, references, kernel_rounds, op, mode, provider):
    dt = torch.bfloat16
    grad = mode != "fwd"
    k, n = LINEAR_SHAPES[op]
    m = TOKENS
    w = (torch.randn(n, k, device=DEVICE) * k**-0.5).to(dt).requires_grad_(grad)
    b = (0.1 * torch.randn(n, device=DEVICE)).to(dt).requires_grad_(grad)
    inputs = []
    for _ in range(BUFFERS):
        x = _rand(m, k, dtype=dt, grad=grad)
        extra = (_rand(m, n, dtype=dt, grad=grad),) if op == "linear_residual" else ()
        inputs.append((x, w, b, *extra, _rand(m, n, dtype=dt)))
    rows = 1024
    x0 = inputs[0][0][:rows].detach().float()
    wf, bf = w.detach().float(), b.detach().float()
    if op == "linear_gelu":
        ref = reference.linear_gelu_ref(x0, wf, bf, upcast=False)
    else:
        ref = reference.linear_residual_ref(x0, wf, bf, inputs[0][3][:rows].detach().float(), upcast=False)
    fwd = 2 * m * n * k
    _run(
        benchmark, references, kernel_rounds, op=op, provider=provider, mode=mode, dtype="bf16",
        shape=dict(m=m, k=k, n=n), fn=_linear_fn(op, provider), inputs=inputs,
        grad_of=(0, 1, 2, 3) if op == "linear_residual" else (0, 1, 2), compiled=provider == "torch.compile",
        flop_per_iter=fwd if mode == "fwd" else 3 * fwd, check=lambda out: bench.parity(out[:rows], ref),
    )


# -- the seam between GEMMs: residual add + LayerNorm, two ways ---------------------------

def _torch_residual_norm(x, w, b, r, nw, nb):
    s = r + F.linear(x, w, b)
    return s, F.layer_norm(s, (s.shape[-1],), nw, nb, EPS)


def _residual_norm_fn(provider: str):
    if provider == "triton-epilogue":
        from fastvit.kernels import layer_norm, linear_residual

        def epilogue(x, w, b, r, nw, nb):
            s = linear_residual(x, w, b, r)
            return s, layer_norm(s, nw, nb, EPS)

        return epilogue
    if provider == "cublas+add-norm":
        from fastvit.kernels import add_layer_norm

        return lambda x, w, b, r, nw, nb: add_layer_norm(r, F.linear(x, w, b), nw, nb, EPS)
    return torch.compile(_torch_residual_norm) if provider == "torch.compile" else _torch_residual_norm


@pytest.mark.parametrize(*_cases("residual_norm"))
def test_residual_norm(benchmark, references, kernel_rounds, provider, mode):
    dt = torch.bfloat16
    grad = mode != "fwd"
    k, n = LINEAR_SHAPES["linear_residual"]
    m = TOKENS
    w = (torch.randn(n, k, device=DEVICE) * k**-0.5).to(dt).requires_grad_(grad)
    b = (0.1 * torch.randn(n, device=DEVICE)).to(dt).requires_grad_(grad)
    nw = (1 + 0.1 * torch.randn(n, device=DEVICE)).to(dt).requires_grad_(grad)
    nb = (0.1 * torch.randn(n, device=DEVICE)).to(dt).requires_grad_(grad)
    inputs = [(_rand(m, k, dtype=dt, grad=grad), w, b, _rand(m, n, dtype=dt, grad=grad), nw, nb,
               (_rand(m, n, dtype=dt), _rand(m, n, dtype=dt))) for _ in range(BUFFERS)]  # fmt: skip
    rows = 1024
    x0, r0 = inputs[0][0][:rows].detach().float(), inputs[0][3][:rows].detach().float()
    s_ref = reference.linear_residual_ref(x0, w.detach().float(), b.detach().float(), r0, upcast=False)
    ref = reference.layer_norm_ref(s_ref, nw.detach().float(), nb.detach().float(), EPS, upcast=False)
    fwd = 2 * m * n * k
    _run(
        benchmark, references, kernel_rounds, op="residual_norm", provider=provider, mode=mode, dtype="bf16",
        shape=dict(m=m, k=k, n=n), fn=_residual_norm_fn(provider), inputs=inputs, grad_of=(0, 1, 2, 3, 4, 5),
        compiled=provider == "torch.compile", flop_per_iter=fwd if mode == "fwd" else 3 * fwd,
        check=lambda out: bench.parity(out[1][:rows], ref),
    )


# -- a whole MLP branch: the fused backward (GELU's derivative in fc2's dgrad GEMM) vs two ops --

def _torch_mlp(x, w1, b1, w2, b2, r):
    return r + F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)


def _mlp_fn(provider: str):
    if provider == "triton-mlp":
        from fastvit.kernels import mlp_residual

        return mlp_residual
    if provider == "triton-two-ops":
        from fastvit.kernels import linear_gelu, linear_residual

        return lambda x, w1, b1, w2, b2, r: linear_residual(linear_gelu(x, w1, b1), w2, b2, r)
    return torch.compile(_torch_mlp) if provider == "torch.compile" else _torch_mlp


@pytest.mark.parametrize(*_cases("mlp"))
def test_mlp(benchmark, references, kernel_rounds, provider, mode):
    """fc1 + GELU + fc2 + residual at ViT-B's MLP (ViT-Ti's in smoke mode); 4·M·D·H FLOPs forward, 3x with gradients."""
    dt = torch.bfloat16
    grad = mode != "fwd"
    d, h = LINEAR_SHAPES["linear_gelu"]
    m = TOKENS
    params = [(torch.randn(h, d, device=DEVICE) * d**-0.5).to(dt), (0.1 * torch.randn(h, device=DEVICE)).to(dt),
              (torch.randn(d, h, device=DEVICE) * h**-0.5).to(dt), (0.1 * torch.randn(d, device=DEVICE)).to(dt)]  # fmt: skip
    params = [p.requires_grad_(grad) for p in params]
    inputs = [(_rand(m, d, dtype=dt, grad=grad), *params, _rand(m, d, dtype=dt, grad=grad), _rand(m, d, dtype=dt))
              for _ in range(BUFFERS)]  # fmt: skip
    rows = 1024
    first = [t.detach().float() for t in inputs[0][:6]]
    ref = _torch_mlp(first[0][:rows], *first[1:5], first[5][:rows])
    _run(
        benchmark, references, kernel_rounds, op="mlp", provider=provider, mode=mode, dtype="bf16",
        shape=dict(m=m, d=d, h=h), fn=_mlp_fn(provider), inputs=inputs, grad_of=(0, 1, 2, 3, 4, 5),
        compiled=provider == "torch.compile", flop_per_iter=4 * m * d * h * (1 if mode == "fwd" else 3),
        check=lambda out: bench.parity(out[:rows], ref),
    )


# -- attention maps from the forward's log-sum-exp ----------------------------------------


def _torch_attention_probs(q, k, lse, scale):
    return torch.softmax(torch.matmul(q, k.transpose(-2, -1)).float() * scale, dim=-1)


@pytest.mark.parametrize(*_cases("attention_probs"))
def test_attention_probs(benchmark, references, kernel_rounds, seq, head_dim, provider):
    """The maps of one layer (batch 8, the analysis' scale): written once, fp32, so GB/s of the maps."""
    from fastvit.kernels.flash_attention import attention_fwd

    heads, batch, dt = HEADS[head_dim], 8 if not SMOKE else 1, torch.bfloat16
    scale = head_dim**-0.5
    inputs = []
    for _ in range(BUFFERS):
        q, k, v = (_rand(batch, heads, seq, head_dim, dtype=dt) for _ in range(3))
        inputs.append((q, k, attention_fwd(q, k, v, scale)[1], scale, None))
    if provider == "triton":
        from fastvit.kernels.attention_probs import attention_probs as fn
    else:
        fn = _torch_attention_probs
    q0, k0, lse0 = (t[:1].detach() for t in inputs[0][:3])
    ref = reference.attention_probs_ref(q0.float(), k0.float(), lse0, scale, upcast=False)
    _run(
        benchmark, references, kernel_rounds, op="attention_probs", provider=provider, mode="fwd", dtype="bf16",
        shape=dict(batch=batch, heads=heads, seq=seq, head_dim=head_dim), fn=fn, inputs=inputs, grad_of=(),
        bytes_per_iter=4 * batch * heads * seq * seq, check=lambda out: bench.parity(out[:1], ref),
    )


# -- RMSNorm and SwiGLU's fc1 (AIMv2, EVA-02, DINOv3) -------------------------------------
# Named test_layer_norm_* / test_linear_* so fastvit.gpucheck's kernel groups time them with their kin.


def _rms_norm_fn(provider: str):
    if provider == "triton":
        from fastvit.kernels import rms_norm

        return lambda x, w: rms_norm(x, w, EPS)
    fn = lambda x, w: F.rms_norm(x, (x.shape[-1],), w, EPS)  # noqa: E731
    return torch.compile(fn) if provider == "torch.compile" else fn


@pytest.mark.parametrize(*_cases("layer_norm_rms"))
def test_layer_norm_rms(benchmark, references, kernel_rounds, width, mode, provider):
    """RMSNorm over 256 x 197 rows: GB/s of the minimal traffic (read x, write y; backward read x, dy, write dx)."""
    dt, grad = torch.bfloat16, mode != "fwd"
    w = (1 + 0.1 * torch.randn(width, device=DEVICE)).to(dt).requires_grad_(grad)
    inputs = [(_rand(TOKENS, width, dtype=dt, grad=grad), w, _rand(TOKENS, width, dtype=dt)) for _ in range(BUFFERS)]
    rows = 4096
    ref = reference.rms_norm_ref(inputs[0][0][:rows].detach().float(), w.detach().float(), EPS, upcast=False)
    _run(
        benchmark, references, kernel_rounds, op="rms_norm", provider=provider, mode=mode, dtype="bf16",
        shape=dict(rows=TOKENS, width=width), fn=_rms_norm_fn(provider), inputs=inputs, grad_of=(0, 1),
        compiled=provider == "torch.compile", bytes_per_iter=(2 if mode == "fwd" else 5) * TOKENS * width * dt.itemsize,
        check=lambda out: bench.parity(out[:rows], ref),
    )


# (in_features, hidden): EVA-02 B's SwiGLU fc1 (768 -> 2 x 2048); ViT-Ti-sized in smoke mode
SWIGLU_SHAPE = (192, 512) if SMOKE else (768, 2048)


def _torch_swiglu(x, wg, bg, wx, bx):
    return F.silu(F.linear(x, wg, bg)) * F.linear(x, wx, bx)


def _swiglu_fn(provider: str):
    if provider == "triton":
        from fastvit.kernels import linear_swiglu

        return linear_swiglu
    return torch.compile(_torch_swiglu) if provider == "torch.compile" else _torch_swiglu


@pytest.mark.parametrize(*_cases("linear_swiglu"))
def test_linear_swiglu(benchmark, references, kernel_rounds, mode, provider):
    """silu(x W_g^T + b_g) * (x W_x^T + b_x) at M = 256 x 197: TFLOP/s of the two GEMMs (2 * 2·M·N·K forward,
    3x with gradients); the kernel's backward recomputes both GEMMs, which the figure does not count."""
    dt, grad = torch.bfloat16, mode != "fwd"
    k, n = SWIGLU_SHAPE
    wg, wx = ((torch.randn(n, k, device=DEVICE) * k**-0.5).to(dt).requires_grad_(grad) for _ in range(2))
    bg, bx = ((0.1 * torch.randn(n, device=DEVICE)).to(dt).requires_grad_(grad) for _ in range(2))
    inputs = [(_rand(TOKENS, k, dtype=dt, grad=grad), wg, bg, wx, bx, _rand(TOKENS, n, dtype=dt)) for _ in range(BUFFERS)]
    rows = 1024
    ref = reference.linear_swiglu_ref(*(t.detach().float() for t in (inputs[0][0][:rows], wg, bg, wx, bx)), upcast=False)
    fwd = 2 * 2 * TOKENS * n * k
    _run(
        benchmark, references, kernel_rounds, op="linear_swiglu", provider=provider, mode=mode, dtype="bf16",
        shape=dict(m=TOKENS, k=k, n=n), fn=_swiglu_fn(provider), inputs=inputs, grad_of=(0, 1, 2, 3, 4),
        compiled=provider == "torch.compile", flop_per_iter=fwd if mode == "fwd" else 3 * fwd,
        check=lambda out: bench.parity(out[:rows], ref),
    )


# -- packed variable-length attention (NaFlex) --------------------------------------------

VARLEN_HEADS = {64: 12, 72: 16}


def varlen_mix_lengths(mix: str) -> list[int]:
    """Tokens per image of a mix: "img50" is 50 images of 128-512 px a side at patch 16, seeded
    (3 images of 2-5 patches a side in smoke mode)."""
    if mix != "img50":
        raise ValueError(f"unknown varlen mix {mix!r}")
    g = torch.Generator().manual_seed(26)
    count, low, high = (3, 2, 5) if SMOKE else (50, 8, 32)
    sides = torch.randint(low, high + 1, (count, 2), generator=g)
    return [int(h * w) for h, w in sides]


def _varlen_fn(provider: str):
    from fastvit.layers import varlen

    impl = {"torch": "torch", "sdpa-padded": "padded", "torch_varlen": "torch_varlen", "triton": "triton"}[provider]
    return lambda q, k, v, cu, max_seqlen: varlen.varlen_attention(q, k, v, cu, max_seqlen, impl=impl)


@pytest.mark.parametrize(*_cases("varlen_attention"))
def test_varlen_attention(benchmark, references, kernel_rounds, mix, head_dim, dtype, mode, provider):
    """Packed images of mixed sizes: FLOPs 4·H·D·sum(n_i²) forward (only real tokens), 3.5x with the backward."""
    from fastvit.layers import varlen

    lengths = varlen_mix_lengths(mix)
    heads, dt, grad = VARLEN_HEADS[head_dim], bench.torch_dtype(dtype), mode != "fwd"
    total, longest = sum(lengths), max(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    inputs = [tuple(_rand(total, heads, head_dim, dtype=dt, grad=grad) for _ in range(3)) + (cu, longest)
              + (_rand(total, heads, head_dim, dtype=dt),) for _ in range(BUFFERS)]  # fmt: skip
    q, k, v = inputs[0][:3]
    if provider == "torch_varlen":
        reason = varlen.torch_varlen_reason(q, k, v, cu)
        if reason is not None:
            pytest.skip(reason)
    rows = lengths[0] + lengths[1]  # the first two images
    first = [t[:rows].detach().float() for t in (q, k, v)]
    ref = reference.varlen_attention_ref(*first, cu[:3], upcast=False)
    fwd = 4 * heads * head_dim * sum(n * n for n in lengths)
    _run(
        benchmark, references, kernel_rounds, op="varlen_attention", provider=provider, mode=mode, dtype=dtype,
        shape=dict(images=len(lengths), tokens=total, longest=longest, heads=heads, head_dim=head_dim),
        fn=_varlen_fn(provider), inputs=inputs, grad_of=(0, 1, 2), flop_per_iter=fwd if mode == "fwd" else 3.5 * fwd,
        check=lambda out: bench.parity(out[:rows], ref),
    )
