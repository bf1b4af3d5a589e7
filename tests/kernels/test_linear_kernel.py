"""Tests for the epilogue-fused GEMMs in :mod:`fastvit.kernels.linear`.

Parity cases build one ViT MLP half at a time: fc1 (D -> 4D, bias + GELU) or
fc2 (4D -> D, bias + residual), with ``rows`` tokens. Each compares the kernel
with eager PyTorch in the same dtype and with the fp64 reference
(:mod:`fastvit.kernels.reference`): the kernel's error must stay within twice
eager's, plus ``atol + rtol * max|ref|``. Kernel outputs are written into
NaN-poisoned buffers, so an element a kernel forgets to store fails.

On CPU the kernels run through the Triton interpreter, which is slow: the
default run covers each row count, hidden size and dtype at least once; the
full sweep is marked ``slow`` (deselected by default; run with ``-m slow``);
bf16 and fp16 sweeps on a GPU are marked ``cuda``.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from parity import assert_close_vs_ref, poison_

from fastvit import shapes
from fastvit.kernels import linear, linear_bwd, reference
from fastvit.aot import linear as linear_aot

# dtype -> (atol, rtol) on outputs and dx; dW gets 10 x atol, db 5 x atol.
# fp32 runs with input_precision="ieee": kernel and eager both round only in
# their fp32 sums (~sqrt(K) * 6e-8 relative), so twice eager's error covers
# the kernel's different summation order, and atol/rtol 1e-5 leave slack for
# elements where eager happens to be nearly exact.
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 3e-3),
    torch.bfloat16: (1e-2, 3e-3),
}
WEIGHT_ATOL_FACTOR = 10
BIAS_ATOL_FACTOR = 5

ROWS = (1, 197, 4 * 197 + 3)
HIDDEN = (192, 768, 1000, 1280)


def _mlp_half(kind, rows, hidden, dtype, device, seed):
    """Seeded inputs for fc1 (D -> 4D) or fc2 (4D -> D): x, weight, bias, residual, dout."""
    d_in, d_out = (hidden, 4 * hidden) if kind == "fc1" else (4 * hidden, hidden)
    g = torch.Generator().manual_seed(seed)
    tensors = (
        torch.randn(rows, d_in, generator=g),
        torch.randn(d_out, d_in, generator=g) / d_in**0.5,  # nn.Linear-like scale: outputs O(1)
        0.5 * torch.randn(d_out, generator=g),
        torch.randn(rows, d_out, generator=g),
        torch.randn(rows, d_out, generator=g),
    )
    return tuple(t.to(device=device, dtype=dtype) for t in tensors)


def _grads(fn, inputs, dout):
    """Output and gradients of ``fn(*inputs)`` w.r.t. every input, given ``dout``."""
    inputs = [t.detach().requires_grad_() for t in inputs]
    out = fn(*inputs)
    return (out.detach(), *torch.autograd.grad(out, inputs, dout))


def _upcast(*tensors):
    return tuple(t.double() for t in tensors)


def _check_grads(names, ours, eager, ref, dtype):
    atol, rtol = TOLERANCES[dtype]
    factors = {"dx": 1, "dW": WEIGHT_ATOL_FACTOR, "db": BIAS_ATOL_FACTOR, "d_residual": 1}
    for name, o, e, r in zip(names, ours, eager, ref):
        assert_close_vs_ref(o, e, r, factor=2, atol=factors[name] * atol, rtol=rtol, name=name)


def check_linear_gelu(rows, hidden, dtype, approximate, device, seed=0):
    x, w, b, _, dout = _mlp_half("fc1", rows, hidden, dtype, device, seed)
    atol, rtol = TOLERANCES[dtype]

    # Forward kernel, writing gelu(h) and h into poisoned buffers.
    out = poison_(torch.empty(rows, w.shape[0], dtype=dtype, device=device))
    pre = poison_(torch.empty_like(out))
    linear.linear_gelu_fwd(x, w, b, approximate, save_pre=True, out=out, pre=pre)
    ref = reference.linear_gelu_ref(x, w, b, approximate, upcast=True)
    out_pt = reference.linear_gelu_ref(x, w, b, approximate, upcast=False)
    assert_close_vs_ref(out, out_pt, ref, factor=2, atol=atol, rtol=rtol, name="out")
    h_pt, h_ref = F.linear(x, w, b), F.linear(*_upcast(x, w, b))
    assert_close_vs_ref(pre, h_pt, h_ref, factor=2, atol=atol, rtol=rtol, name="pre")

    # GELU backward kernel into a poisoned buffer: dh = dout * gelu'(h).
    dh = linear_bwd.linear_gelu_bwd(dout, pre, approximate, out=poison_(torch.empty_like(pre)))
    _, dh_pt = _grads(lambda h: reference.gelu_ref(h, approximate), (h_pt,), dout)
    _, dh_ref = _grads(lambda h: reference.gelu_ref(h, approximate), (h_ref,), dout.double())
    assert_close_vs_ref(dh, dh_pt, dh_ref, factor=2, atol=atol, rtol=rtol, name="dh")

    # The public function end to end, through the registered autograd.
    ours = _grads(lambda *t: linear.linear_gelu(*t, approximate=approximate), (x, w, b), dout)
    eager = _grads(lambda *t: reference.linear_gelu_ref(*t, approximate, upcast=False), (x, w, b), dout)
    ref = _grads(lambda *t: reference.linear_gelu_ref(*t, approximate), _upcast(x, w, b), dout.double())
    assert torch.equal(ours[0], out), "public linear_gelu differs from the launcher's output"
    _check_grads(("dx", "dW", "db"), ours[1:], eager[1:], ref[1:], dtype)


def check_linear_residual(rows, hidden, dtype, device, seed=0):
    x, w, b, r, dout = _mlp_half("fc2", rows, hidden, dtype, device, seed)
    atol, rtol = TOLERANCES[dtype]

    out = linear.linear_residual_fwd(x, w, b, r, out=poison_(torch.empty_like(r)))
    ref = reference.linear_residual_ref(x, w, b, r, upcast=True)
    out_pt = reference.linear_residual_ref(x, w, b, r, upcast=False)
    assert_close_vs_ref(out, out_pt, ref, factor=2, atol=atol, rtol=rtol, name="out")

    ours = _grads(linear.linear_residual, (x, w, b, r), dout)
    eager = _grads(lambda *t: reference.linear_residual_ref(*t, upcast=False), (x, w, b, r), dout)
    ref = _grads(reference.linear_residual_ref, _upcast(x, w, b, r), dout.double())
    assert torch.equal(ours[0], out), "public linear_residual differs from the launcher's output"
    _check_grads(("dx", "dW", "db", "d_residual"), ours[1:], eager[1:], ref[1:], dtype)


# (dtype, rows, hidden): every row count, hidden size and dtype at least once,
# sized for the interpreter, where one row costs as much as BLOCK_M rows and
# CPU fp16 matmuls in the eager reference are slow too. Each runs fc1 and fc2;
# hidden 1280 runs in test_linear_gelu_forward_large.
DEFAULT_CASES = [
    (torch.float32, 1, 768),
    (torch.float16, 1, 1000),
    (torch.float16, 197, 192),
    (torch.bfloat16, 197, 192),  # the interpreter's bf16 path (dot operands in fp32)
    (torch.float32, 197, 1000),  # K and N not multiples of any block
    (torch.float16, 4 * 197 + 3, 192),
]
TANH_CASES = [(torch.float16, 197, 192), (torch.float32, 4 * 197 + 3, 192)]


def _sweep(skip):
    return [
        pytest.param(dtype, rows, hidden, marks=pytest.mark.slow)
        for dtype, rows, hidden in itertools.product((torch.float32, torch.float16), ROWS, HIDDEN)
        if (dtype, rows, hidden) not in skip
    ]


# on CUDA, the core presets' widths (fastvit.shapes) too
CUDA_HIDDEN = HIDDEN + tuple(w for w in shapes.widths("core") if w not in HIDDEN)
CUDA_CASES = [
    pytest.param(dtype, rows, hidden, marks=pytest.mark.cuda)
    for dtype, rows, hidden in itertools.product((torch.bfloat16, torch.float16), ROWS, CUDA_HIDDEN)
]


def _case_id(value):
    return str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else None


# Interpreter-sized tests take the conftest ``device`` fixture: "cpu" through
# the interpreter, "cuda" where a GPU is present.


@pytest.mark.parametrize("dtype,rows,hidden", DEFAULT_CASES + _sweep(DEFAULT_CASES), ids=_case_id)
def test_linear_gelu(dtype, rows, hidden, device):
    check_linear_gelu(rows, hidden, dtype, "none", device)


@pytest.mark.parametrize("dtype,rows,hidden", DEFAULT_CASES + _sweep(DEFAULT_CASES), ids=_case_id)
def test_linear_residual(dtype, rows, hidden, device):
    check_linear_residual(rows, hidden, dtype, device)


@pytest.mark.parametrize("dtype,rows,hidden", TANH_CASES + _sweep(TANH_CASES), ids=_case_id)
def test_linear_gelu_tanh(dtype, rows, hidden, device):
    check_linear_gelu(rows, hidden, dtype, "tanh", device)


def test_linear_gelu_forward_large(device):
    """The largest fc1 (791 x 1280 -> 5120), forward only: the interpreter takes ~20 s."""
    rows, hidden, dtype = 4 * 197 + 3, 1280, torch.float32
    x, w, b, _, _ = _mlp_half("fc1", rows, hidden, dtype, device, seed=1)
    out, _ = linear.linear_gelu_fwd(x, w, b, out=poison_(x.new_empty(rows, 4 * hidden)))
    ref = reference.linear_gelu_ref(x, w, b)
    out_pt = reference.linear_gelu_ref(x, w, b, upcast=False)
    assert_close_vs_ref(out, out_pt, ref, factor=2, atol=TOLERANCES[dtype][0], rtol=TOLERANCES[dtype][1])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype,rows,hidden", CUDA_CASES, ids=_case_id)
def test_parity_cuda(dtype, rows, hidden, approximate):
    check_linear_gelu(rows, hidden, dtype, approximate, "cuda")
    check_linear_residual(rows, hidden, dtype, "cuda")


@pytest.mark.cuda
def test_tf32_opt_in_cuda():
    x, w, b, r, _ = _mlp_half("fc2", 197, 768, torch.float32, "cuda", seed=2)
    ref = reference.linear_residual_ref(x, w, b, r)
    exact = linear.linear_residual(x, w, b, r)
    tf32 = linear.linear_residual(x, w, b, r, allow_tf32=True)
    assert (exact.double() - ref).abs().max() < 1e-4
    assert (tf32.double() - ref).abs().max() < 5e-2


def _randn(*shape, g, device):
    return torch.randn(*shape, generator=g).to(device)


def test_leading_dims_and_strides(device):
    """(B, N, D) and 4-D inputs, non-contiguous x, weight and bias, and deterministic gradients."""
    g = torch.Generator().manual_seed(3)
    x = _randn(2, 48, 7, g=g, device=device).transpose(1, 2)  # (2, 7, 48)
    w1 = _randn(48, 96, g=g, device=device).t() / 48**0.5  # (96, 48), column-major
    b1 = _randn(192, g=g, device=device)[::2]
    w2, b2 = _randn(48, 96, g=g, device=device) / 96**0.5, _randn(48, g=g, device=device)
    dout = _randn(2, 7, 48, g=g, device=device)

    def mlp(block, x, w1, b1, w2, b2):
        return block[1](block[0](x, w1, b1, "tanh"), w2, b2, x)

    fused = (linear.linear_gelu, linear.linear_residual)
    ref = (reference.linear_gelu_ref, reference.linear_residual_ref)
    ours = _grads(lambda *t: mlp(fused, *t), (x, w1, b1, w2, b2), dout)
    again = _grads(lambda *t: mlp(fused, *t), (x, w1, b1, w2, b2), dout)
    expected = _grads(lambda *t: mlp(ref, *t), _upcast(x, w1, b1, w2, b2), dout.double())
    assert ours[0].shape == (2, 7, 48)
    for name, o, a, e in zip(("out", "dx", "dw1", "db1", "dw2", "db2"), ours, again, expected):
        assert torch.equal(o, a), f"{name} changed between two identical runs"
        assert_close_vs_ref(o, e.float(), e, factor=2, atol=1e-5, rtol=1e-5, name=name)

    x4 = _randn(2, 3, 5, 48, g=g, device=device)
    r4 = _randn(2, 3, 5, 96, g=g, device=device)
    out4 = linear.linear_residual(x4, w1, b1, r4)
    assert out4.shape == (2, 3, 5, 96)
    torch.testing.assert_close(out4, reference.linear_residual_ref(x4, w1, b1, r4, upcast=False))


# x dtype -> residual dtype for the training-path test: autocast's fp32 residual
# stream (fp16 x; bf16 runs on CUDA) and a plain fp32 model.
SCALED_CASES = [
    pytest.param(torch.float16, torch.float32, id="fp16-x-fp32-residual"),
    pytest.param(torch.float32, torch.float32, id="fp32"),
    pytest.param(torch.bfloat16, torch.float32, id="bf16-x-fp32-residual", marks=pytest.mark.cuda),
    pytest.param(torch.bfloat16, torch.bfloat16, id="bf16", marks=pytest.mark.cuda),
]


@pytest.mark.parametrize("dtype,residual_dtype", SCALED_CASES)
def test_linear_residual_training_path(dtype, residual_dtype, device):
    """Stochastic depth as a per-sample scale, with a wider residual stream.

    fc2 of ViT-Ti over 3 samples of 67 tokens; sample 1 is dropped (scale 0),
    the others kept (1/keep). Output and gradients against eager (GEMM in
    ``dtype``, then scale and add in the residual's dtype) and the fp64 reference.
    """
    batch, tokens, hidden = 3, 67, 192
    g = torch.Generator().manual_seed(6)
    x = torch.randn(batch, tokens, 4 * hidden, generator=g).to(device, dtype)
    w = (torch.randn(hidden, 4 * hidden, generator=g) / (4 * hidden) ** 0.5).to(device, dtype)
    b = (0.5 * torch.randn(hidden, generator=g)).to(device, dtype)
    r = torch.randn(batch, tokens, hidden, generator=g).to(device, residual_dtype)
    dout = torch.randn(batch, tokens, hidden, generator=g).to(device, residual_dtype)
    scale = torch.tensor([1 / 0.9, 0.0, 1 / 0.9], device=device)
    atol, rtol = TOLERANCES[dtype]

    out = linear.linear_residual_fwd(
        x.view(-1, 4 * hidden), w, b, r.view(-1, hidden), scale, out=poison_(torch.empty_like(r.view(-1, hidden)))
    )
    assert out.dtype == residual_dtype
    ref = reference.linear_residual_ref(x, w, b, r, scale)
    out_pt = reference.linear_residual_ref(x, w, b, r, scale, upcast=False)
    assert out_pt.dtype == residual_dtype
    assert_close_vs_ref(out.view(r.shape), out_pt, ref, factor=2, atol=atol, rtol=rtol, name="out")

    def fused(x, w, b, r):
        return linear.linear_residual(x, w, b, r, scale=scale)

    ours = _grads(fused, (x, w, b, r), dout)
    eager = _grads(lambda *t: reference.linear_residual_ref(*t, scale, upcast=False), (x, w, b, r), dout)
    ref = _grads(lambda *t: reference.linear_residual_ref(*t, scale), _upcast(x, w, b, r), dout.double())
    assert torch.equal(ours[0].view(-1, hidden), out), "public linear_residual differs from the launcher's output"
    assert [t.dtype for t in ours[1:]] == [dtype, dtype, dtype, residual_dtype]
    assert not ours[1][1].any(), "the dropped sample's input gradient must be exactly zero"
    _check_grads(("dx", "dW", "db", "d_residual"), ours[1:], eager[1:], ref[1:], dtype)


def test_empty_inputs(device):
    w = torch.randn(32, 16, device=device, requires_grad=True)
    b = torch.randn(32, device=device, requires_grad=True)
    x = torch.randn(0, 5, 16, device=device, requires_grad=True)
    out = linear.linear_gelu(x, w, b)
    out.sum().backward()
    assert out.shape == (0, 5, 32) and x.grad.shape == x.shape
    assert not w.grad.any() and not b.grad.any()
    bias = torch.randn(4, device=device)
    k0 = torch.randn(3, 0, device=device), torch.randn(4, 0, device=device)
    out = linear.linear_residual(*k0, bias, torch.zeros(3, 4, device=device))
    torch.testing.assert_close(out, bias.expand(3, 4))


def test_cpu_tensors_without_interpreter_raise(monkeypatch):
    monkeypatch.setattr(linear.tuning, "interpreting", lambda: False)
    with pytest.raises(ValueError, match="x must be a CUDA tensor .* got device cpu"):
        linear.linear_gelu(torch.randn(4, 8), torch.randn(16, 8), torch.randn(16))


def test_inference_saves_no_pre_activation(device):
    x, w, b = (torch.randn(*shape, device=device) for shape in ((5, 32), (64, 32), (64,)))
    with torch.no_grad():
        out, pre = torch.ops.fastvit.linear_gelu_fwd(x, w, b, "none", False, False)
    assert pre.numel() == 0
    torch.testing.assert_close(out, reference.linear_gelu_ref(x, w, b, upcast=False))
    out, pre = torch.ops.fastvit.linear_gelu_fwd(x.requires_grad_(), w, b, "none", False, False)
    with pytest.raises(RuntimeError, match="save_pre=False"):
        out.sum().backward()


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, device):
    g = torch.Generator().manual_seed(4)
    x, w, b, r = (_randn(*shape, g=g, device=device) for shape in ((6, 32), (48, 32), (48,), (6, 48)))
    x, w, b, r = (t.requires_grad_(requires_grad) for t in (x, w / 32**0.5, b, r))
    for approximate in ("none", "tanh"):
        torch.library.opcheck(torch.ops.fastvit.linear_gelu_fwd.default, (x, w, b, approximate, requires_grad, False))
    torch.library.opcheck(torch.ops.fastvit.linear_residual_fwd.default, (x, w, b, r, None, None, False))
    scale = torch.tensor([0.0, 1.25, 1.25], device=device)  # 3 samples of 2 rows
    torch.library.opcheck(torch.ops.fastvit.linear_residual_fwd.default, (x, w, b, r, scale, None, False))
    grad, pre = _randn(6, 48, g=g, device=device), _randn(6, 48, g=g, device=device)
    torch.library.opcheck(torch.ops.fastvit.linear_gelu_bwd.default, (grad, pre, "none"))


def test_torch_compile_fullgraph(device):
    """An MLP block (fc1 + GELU, fc2 + residual) under torch.compile, forward and backward."""

    def block(x, w1, b1, w2, b2):
        return linear.linear_residual(linear.linear_gelu(x, w1, b1), w2, b2, x)

    g = torch.Generator().manual_seed(5)
    shapes = ((2, 5, 32), (64, 32), (64,), (32, 64), (32,))
    x, w1, b1, w2, b2 = (_randn(*shape, g=g, device=device) for shape in shapes)
    args = (x, w1 / 32**0.5, b1, w2 / 8, b2)
    dout = _randn(2, 5, 32, g=g, device=device)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    for got, want in zip(_grads(compiled, args, dout), _grads(block, args, dout)):
        torch.testing.assert_close(got, want)


# name -> (call(x, w, b, r), expected error, message pattern); x (4, 8), w (16, 8), b (16,), r (4, 16)
BAD_CALLS = {
    "int x": (lambda x, w, b, r: linear.linear_gelu(x.long(), w.long(), b.long()),
              TypeError, "float16, bfloat16 or float32, got torch.int64"),
    "float64 x": (lambda x, w, b, r: linear.linear_gelu(x.double(), w.double(), b.double()),
                  TypeError, "got torch.float64"),
    "weight dtype": (lambda x, w, b, r: linear.linear_gelu(x, w.half(), b), TypeError, "weight must have x's dtype"),
    "bias not a tensor": (lambda x, w, b, r: linear.linear_gelu(x, w, None), TypeError, "bias must be a torch.Tensor"),
    "in_features": (lambda x, w, b, r: linear.linear_gelu(x[:, :7], w, b), ValueError, "in_features 8"),
    "weight 1-D": (lambda x, w, b, r: linear.linear_gelu(x, w[0], b), ValueError, "weight must be 2-D"),
    "bias shape": (lambda x, w, b, r: linear.linear_gelu(x, w, b[:3]),
                   ValueError, r"bias must have shape \(out_features,\) = \(16,\)"),
    "device": (lambda x, w, b, r: linear.linear_gelu(x, w.to("meta"), b), ValueError, "weight must be on x's device"),
    "approximate": (lambda x, w, b, r: linear.linear_gelu(x, w, b, approximate="fast"),
                    ValueError, "approximate must be one of .*, got 'fast'"),
    "residual shape": (lambda x, w, b, r: linear.linear_residual(x, w, b, r[:, :8]),
                       ValueError, r"output's shape \(4, 16\), got \(4, 8\)"),
    "residual dtype": (lambda x, w, b, r: linear.linear_residual(x, w, b, r.half()),
                       TypeError, r"residual must have x's dtype \(torch.float32\) or torch.float32, got torch.float16"),
    "residual narrower": (lambda x, w, b, r: linear.linear_residual(x.half(), w.half(), b.half(), r.bfloat16()),
                          TypeError, "or torch.float32, got torch.bfloat16"),
    "scale shape": (lambda x, w, b, r: linear.linear_residual(x, w, b, r, scale=torch.ones_like(r)),
                    ValueError, r"scale must have shape \(x.shape\[0\],\) .* got scale \(4, 16\)"),
    "scale 1-D x": (lambda x, w, b, r: linear.linear_residual(x[0], w, b, r[0], scale=torch.ones_like(r[0, :1])),
                    ValueError, r"x of shape \(batch, ..., in_features\)"),
    "scale int": (lambda x, w, b, r: linear.linear_residual(x, w, b, r, scale=torch.ones(4, dtype=torch.long)),
                  TypeError, "scale must be a floating-point tensor"),
    "scale list": (lambda x, w, b, r: linear.linear_residual(x, w, b, r, scale=[1.0] * 4),
                   TypeError, "scale must be a torch.Tensor or None"),
    "scale grad": (lambda x, w, b, r: linear.linear_residual(x, w, b, r, scale=torch.ones(4, requires_grad=True)),
                   ValueError, r"scale receives no gradient; pass scale.detach\(\)"),
    "residual missing": (lambda x, w, b, r: linear.linear_residual(x, w, b, None),
                         TypeError, "residual must be a torch.Tensor"),
    "out buffer": (lambda x, w, b, r: linear.linear_residual_fwd(x, w, b, r, out=r.t()), ValueError, "contiguous"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_validation(name, device):
    call, error, match = BAD_CALLS[name]
    x, w, b, r = (torch.randn(*shape, device=device) for shape in ((4, 8), (16, 8), (16,), (4, 16)))
    with pytest.raises(error, match=match):
        call(x, w, b, r)


AOT_CASES = linear_aot.aot_cases()


def test_configs_fit_the_register_budget():
    """At most 64 fp32 accumulators per thread: more spill in the GELU epilogue (see GEMM_CONFIGS)."""
    for arch, entries in linear.GEMM_CONFIGS.items():
        for e in entries:
            assert e["BLOCK_M"] * e["BLOCK_N"] <= 64 * 32 * e["num_warps"], (arch, e)
            assert e["BLOCK_M"] >= 64 and e["num_warps"] % 4 == 0, (arch, e)  # wgmma on sm90


def test_aot_cases_cover_every_shipped_config():
    for arch in ("sm80", "sm90"):
        shipped = sorted(sorted(e.items()) for e in linear.GEMM_CONFIGS[arch] + linear.GEMM_CONFIGS["default"])
        for epilogue in linear.EPILOGUES:
            for dtype in ("bf16", "fp16"):
                compiled = sorted(
                    sorted({k: c.constexprs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")}.items()
                           | {("num_warps", c.num_warps), ("num_stages", c.num_stages)})
                    for c in AOT_CASES
                    if c.arch == arch and c.name.startswith(f"linear_{epilogue}-{dtype}-")
                )  # fmt: skip
                assert compiled == shipped, (arch, epilogue, dtype)
        kinds = {c.name for c in AOT_CASES if c.arch == arch and c.fn is linear_bwd._linear_gelu_bwd_kernel}
        assert kinds == {f"linear_gelu_bwd_{a}-{d}" for a in ("none", "tanh", "quick") for d in ("bf16", "fp16")}


def test_aot_cases_cover_grad_epilogue_and_tma_configs():
    """The GELU-gradient GEMM at every shipped config; the TMA kernel at every sm_90 config and epilogue."""
    from fastvit.kernels import linear_tma
    from fastvit.aot import linear as linear_aot

    for arch in ("sm80", "sm90"):
        shipped = {tuple(sorted(tuning_split_tile(e))) for e in linear.GEMM_CONFIGS[arch] + linear.GEMM_CONFIGS["default"]}
        for dtype in ("bf16", "fp16"):
            grad = [c for c in AOT_CASES if c.arch == arch and c.name.startswith(f"linear_gelu_grad-{dtype}-")]
            assert {tuple(sorted(case_tile(c))) for c in grad} == shipped, (arch, dtype)
            for c in grad:  # fc2's weight read transposed: unit stride along N
                assert c.constexprs["stride_wn"] == 1 and "stride_wk" not in c.constexprs and not c.constexprs["HAS_BIAS"]
    tma = [c for c in AOT_CASES if c.fn is linear_tma._linear_tma_fwd_kernel]
    assert {c.arch for c in tma} == {"sm90"}
    for label in ("gelu", "gelu_tanh", "gelu_quick", "residual", "residual_scaled_fp32res", "residual_gamma_scaled_fp32res"):
        for dtype in ("bf16", "fp16"):
            got = {tuple(sorted(case_tile(c))) for c in tma if c.name.startswith(f"linear_tma_{label}-{dtype}-")}
            assert got == {tuple(sorted(tuning_split_tile(e))) for e in linear_tma.TMA_CONFIGS["sm90"]}, (label, dtype)
    assert linear_aot.aot_cases() and len({str(c) for c in AOT_CASES}) == len(AOT_CASES), "duplicate case names"


def tuning_split_tile(entry):
    return {k: entry[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")}.items()


def case_tile(case):
    tile = {k: case.constexprs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")}
    return (tile | {"num_warps": case.num_warps, "num_stages": case.num_stages}).items()


@pytest.mark.parametrize("shape", list(linear_aot.LAUNCH_SHAPES))
@pytest.mark.parametrize("rows", [197, 256 * 197])
def test_launch_specialization_follows_the_real_arguments(shape, rows):
    """Divisibility of the compiled launch cases comes from the values the launch passes (Triton's rule).

    4304 = 16 * 269: divisible by 16 (hinted), not by 64 (the kernel's masks
    handle the ragged last tile); M = 197 is not hinted, M = 256 * 197 is.
    """
    from fastvit.aot import linear as linear_aot

    d_in, hidden = linear_aot.LAUNCH_SHAPES[shape]
    for kind in ("fc1", "fc2", "grad"):
        values = linear_aot.launch_values(kind, rows, d_in, hidden)
        units, divisible = linear_aot.launch_specialization(values)
        for name, v in values.items():
            if name in linear_aot._NOT_SPECIALIZED:
                assert name not in units and name not in divisible
            elif v == 1:
                assert name in units and name not in divisible
            else:
                assert (name in divisible) == (v % 16 == 0), (kind, name, v)
        assert ("M" in divisible) == (rows % 16 == 0)
        assert values["N"] == (d_in if kind == "fc2" else hidden)
        assert ("stride_wn" in units) == (kind == "grad") and ("stride_wk" in units) != (kind == "grad")
        # a compiled case has this specialization at each arch's first config
        epilogue = {"fc1": "gelu", "fc2": "residual", "grad": "gelu_grad"}[kind]
        for arch in ("sm80", "sm90"):
            first = dict(tuning_split_tile(linear.GEMM_CONFIGS[arch][0]))
            match = [c for c in AOT_CASES if c.arch == arch and c.fn is linear._linear_fwd_kernel
                     and c.constexprs["EPILOGUE"] == epilogue and set(c.divisible) == set(divisible)
                     and {k for k, v in c.signature.items() if v == "constexpr" and k.startswith("stride")} == set(units)
                     and dict(case_tile(c)) == first]  # fmt: skip
            assert match, (kind, shape, rows, arch)


@pytest.mark.parametrize("kind", ["fc1", pytest.param("fc2", marks=pytest.mark.slow)])
def test_siglip_so400m_widths(kind, device):
    """D = 1152, H = 4304 (4304 % 64 != 0: the last column tile is ragged), forward and gradients, 3 rows."""
    d_in, d_out = (1152, 4304) if kind == "fc1" else (4304, 1152)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, d_in, generator=g).to(device)
    w = (torch.randn(d_out, d_in, generator=g) / d_in**0.5).to(device)
    b, r = torch.randn(d_out, generator=g).to(device), torch.randn(3, d_out, generator=g).to(device)
    dout = torch.randn(3, d_out, generator=g).to(device)
    if kind == "fc1":
        fn, ref_fn, inputs = linear.linear_gelu, reference.linear_gelu_ref, (x, w, b)
        eager_fn = lambda *t: reference.linear_gelu_ref(*t, upcast=False)  # noqa: E731
    else:
        fn, ref_fn, inputs = linear.linear_residual, reference.linear_residual_ref, (x, w, b, r)
        eager_fn = lambda *t: reference.linear_residual_ref(*t, upcast=False)  # noqa: E731
    ours, eager = _grads(fn, inputs, dout), _grads(eager_fn, inputs, dout)
    ref = _grads(ref_fn, _upcast(*inputs), dout.double())
    atol, rtol = TOLERANCES[torch.float32]
    assert_close_vs_ref(ours[0], eager[0], ref[0], factor=2, atol=atol, rtol=rtol, name="out")
    names = ("dx", "dW", "db", "d_residual")[: len(inputs)]
    _check_grads(names, ours[1:], eager[1:], ref[1:], torch.float32)
