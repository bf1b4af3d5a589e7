"""Every fused-GEMM op honours the layout of every tensor argument (issue 11, items 1 and 2).

Ops: ``linear_gelu``, ``linear_residual``, ``mlp_residual`` and the TMA
candidate's ``linear_gelu_tma`` / ``linear_residual_tma``. Arguments: x,
weight(s), bias(es), residual, scale. Layouts: strided (a slice of a wider
tensor or a transpose), expanded (stride 0 along a dimension) and zero-size
(M, N or K = 0). Each case runs forward and backward and compares with the
reference on contiguous copies; gradients are taken with respect to the
*base* tensors the views come from, so autograd's handling of the view is
part of what is checked. The output gradient itself is also passed strided
(a transposed consumer) and expanded (``out.sum()``).

Shapes are tiny (interpreter); fp32 with ``input_precision="ieee"``, so
kernel and reference agree to fp32 rounding of a 16..40-term sum.
"""

from __future__ import annotations

import pytest
import torch
from parity import poison_

from fastvit.kernels import linear, linear_tma, mlp, reference

M, K, N = 6, 16, 24  # rows, in_features, out_features
ATOL = RTOL = 2e-5


def _base(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def _layout(t: torch.Tensor, how: str, seed: int):
    """(base leaf, view of t's shape laid out ``how``); the view holds t's values where possible."""
    if how == "contiguous":
        base = t.clone()
        return base, lambda b: b
    if how == "strided":  # every other element of a wider tensor along the last dim, transposed storage for 2-D
        base = torch.stack([t, _base(*t.shape, seed=seed)], dim=-1)  # (..., n, 2)
        return base, lambda b: b[..., 0]
    if how == "transposed":
        base = t.transpose(-1, -2).contiguous() if t.dim() >= 2 else t.clone()
        return base, (lambda b: b.transpose(-1, -2)) if t.dim() >= 2 else (lambda b: b)
    if how == "expanded":  # one row (or one value) repeated: stride 0
        base = t.reshape(-1)[: t.shape[-1]].clone() if t.dim() >= 2 else t[:1].clone()
        return base, lambda b: b.expand(t.shape)
    raise ValueError(how)


def _inputs(op):
    """Named contiguous fp32 inputs of ``op`` at (M, K, N) and their reference function."""
    x, r = _base(M, K, seed=1), _base(M, N, seed=2)  # 2-D: the output gradient reaches the op as passed
    w1, b1 = _base(N, K, seed=3) / K**0.5, 0.5 * _base(N, seed=4)
    scale = torch.tensor([1.25, 0.0, 2.0, 1.25, 0.0, 0.5])  # per row of a (rows, features) x
    if op in ("linear_gelu", "linear_gelu_tma"):
        return dict(x=x, weight=w1, bias=b1)
    if op in ("linear_residual", "linear_residual_tma"):
        return dict(x=x, weight=w1, bias=b1, residual=r, scale=scale)
    w2, b2 = _base(K, N, seed=5) / N**0.5, 0.5 * _base(K, seed=6)
    return dict(x=x, fc1_weight=w1, fc1_bias=b1, fc2_weight=w2, fc2_bias=b2, residual=_base(M, K, seed=7),
                scale=scale)  # fmt: skip


OPS = {
    "linear_gelu": (linear.linear_gelu, lambda x, weight, bias: reference.linear_gelu_ref(x, weight, bias)),
    "linear_residual": (linear.linear_residual, reference.linear_residual_ref),
    "mlp_residual": (mlp.mlp_residual, lambda *a, scale=None: reference.mlp_residual_ref(*a, scale=scale)),
    "linear_gelu_tma": (linear_tma.linear_gelu_tma, lambda x, weight, bias: reference.linear_gelu_ref(x, weight, bias)),
    "linear_residual_tma": (linear_tma.linear_residual_tma, reference.linear_residual_ref),
}


def _cases():
    for op in OPS:
        for arg in _inputs(op):
            if arg == "scale":
                layouts = ("strided", "expanded")
            else:
                layouts = ("strided", "transposed", "expanded")
            for how in layouts:
                yield pytest.param(op, arg, how, id=f"{op}-{arg}-{how}")


def _call(fn, named, scale):
    args = [t for k, t in named.items() if k != "scale"]
    return fn(*args, scale=scale) if scale is not None or "scale" in named else fn(*args)


@pytest.mark.parametrize("op,arg,how", list(_cases()))
def test_argument_layouts(op, arg, how):
    """One argument laid out ``how``, the others contiguous: output and every gradient match."""
    fn, ref_fn = OPS[op]
    named = _inputs(op)
    base, view = _layout(named[arg], how, seed=11)
    bases = {k: (base if k == arg else v.clone()) for k, v in named.items()}
    for k, b in bases.items():
        if k != "scale":
            b.requires_grad_()

    def args_from(bs):
        return {k: (view(b) if k == arg else b) for k, b in bs.items()}

    used = args_from(bases)
    assert (used[arg].is_contiguous()) == (how == "contiguous") or used[arg].dim() == 1 and how == "transposed"
    out = _call(fn, used, used.get("scale"))
    ref_bases = {k: b.detach().double().requires_grad_(k != "scale") for k, b in bases.items()}
    ref_used = args_from(ref_bases)
    ref = _call(ref_fn, {k: v.contiguous() for k, v in ref_used.items()}, ref_used.get("scale"))
    torch.testing.assert_close(out.double(), ref, atol=ATOL, rtol=RTOL)

    # a transposed consumer: the output gradient arrives non-contiguous
    dout = _base(*out.shape[:-2], out.shape[-1], out.shape[-2], seed=12).transpose(-1, -2)
    diff = [k for k in bases if k != "scale"]
    grads = torch.autograd.grad(out, [bases[k] for k in diff], dout)
    ref_grads = torch.autograd.grad(ref, [ref_bases[k] for k in diff], dout.double())
    for k, g, e in zip(diff, grads, ref_grads):
        torch.testing.assert_close(g.double(), e, atol=ATOL, rtol=RTOL, msg=lambda m, k=k: f"d{k}: {m}")


@pytest.mark.parametrize("op", list(OPS))
def test_expanded_output_gradient(op):
    """``out.sum()`` hands the backward a stride-0 gradient."""
    fn, ref_fn = OPS[op]
    named = _inputs(op)
    ours = {k: v.clone().requires_grad_(k != "scale") for k, v in named.items()}
    ref = {k: v.double().requires_grad_(k != "scale") for k, v in named.items()}
    diff = [k for k in named if k != "scale"]
    g = torch.autograd.grad(_call(fn, ours, ours.get("scale")).sum(), [ours[k] for k in diff])
    e = torch.autograd.grad(_call(ref_fn, ref, ref.get("scale")).sum(), [ref[k] for k in diff])
    for k, a, b in zip(diff, g, e):
        torch.testing.assert_close(a.double(), b, atol=ATOL, rtol=RTOL, msg=lambda m, k=k: f"d{k}: {m}")


# (rows, in_features, out_features) with one of them zero
ZERO_SIZES = [(0, K, N), (M, K, 0), (M, 0, N)]


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("rows,k,n", ZERO_SIZES, ids=["M0", "N0", "K0"])
def test_zero_size(op, rows, k, n):
    """Zero rows, outputs or inputs: the right shapes, the bias-only result for K = 0, zero or empty gradients."""
    fn, ref_fn = OPS[op]
    if op == "mlp_residual":
        # zero hidden width (fc1's N, fc2's K) or zero model width (fc1's K, fc2's N)
        named = dict(x=torch.randn(rows, k), fc1_weight=torch.randn(n, k), fc1_bias=torch.randn(n),
                     fc2_weight=torch.randn(k, n), fc2_bias=torch.randn(k), residual=torch.randn(rows, k))  # fmt: skip
    else:
        named = dict(x=torch.randn(rows, k), weight=torch.randn(n, k), bias=torch.randn(n))
        if "residual" in op:
            named["residual"] = torch.randn(rows, n)
    ours = {kk: v.clone().requires_grad_() for kk, v in named.items()}
    ref = {kk: v.double().requires_grad_() for kk, v in named.items()}
    out, want = fn(*ours.values()), ref_fn(*ref.values())
    assert out.shape == want.shape
    torch.testing.assert_close(out.double(), want, atol=ATOL, rtol=RTOL)
    if out.numel():
        grads = torch.autograd.grad(out, list(ours.values()), torch.ones_like(out))
        wants = torch.autograd.grad(want, list(ref.values()), torch.ones_like(want))
        for g, w in zip(grads, wants):
            assert g.shape == w.shape
            torch.testing.assert_close(g.double(), w, atol=ATOL, rtol=RTOL)


def test_scaled_zero_batch():
    """Stochastic depth over an empty batch: scale of shape (0,)."""
    x, w, b = torch.randn(0, 3, K), torch.randn(N, K), torch.randn(N)
    out = linear.linear_residual(x, w, b, torch.randn(0, 3, N), scale=torch.ones(0))
    assert out.shape == (0, 3, N)


# -- issue 11 item 1: the interpreter computes what the GPU computes -------------------------


def test_interpreter_dot_upcast_decision(monkeypatch):
    """Under the interpreter fp16 and bf16 dot operands go to fp32; on a GPU they stay as they are."""
    assert linear.dot_in_fp32(torch.float16) and linear.dot_in_fp32(torch.bfloat16)
    assert not linear.dot_in_fp32(torch.float32)
    monkeypatch.setattr(linear.tuning, "interpreting", lambda: False)
    assert not linear.dot_in_fp32(torch.float16) and not linear.dot_in_fp32(torch.bfloat16)


def _overflowing_fp16(rows, k, n):
    """fp16 x, w whose every product is exact (powers of two) and whose running sums over K pass
    65504 (fp16's max) before coming back to a representable total: x = 128, w's column j has
    k/2 entries +128, k/2 - 1 entries -128 and one 2**(j % 4 + 4), so x @ w^T = 16384 + 128 * 2**(j % 4 + 4)
    (at most 32768) while a partial sum reaches 524288 for k = 64."""
    x = torch.full((rows, k), 128.0)
    w = torch.cat([torch.full((n, k // 2), 128.0), torch.full((n, k // 2 - 1), -128.0), torch.zeros(n, 1)], dim=1)
    w[:, -1] = 2.0 ** (torch.arange(n) % 4 + 4)
    return x.half(), w.half()


@pytest.mark.parametrize("op", ["linear_gelu", "linear_residual", "linear_gelu_tma", "linear_residual_tma"])
def test_fp16_partial_sums_past_fp16_max(op):
    """A GPU accumulates fp16 ``tl.dot`` in fp32, so partial sums beyond 65504 are harmless there.

    Finding (issue 11): the interpreter runs ``tl.dot`` as a numpy matmul, and
    numpy's fp16 matmul accumulates differently on different CPUs -- on a
    2-core AMD EPYC without AVX-512 a sum like this one became inf, on a Xeon
    it did not. The kernels therefore upcast fp16/bf16 dot operands to fp32
    under the interpreter (``linear.dot_in_fp32``; exact for fp16 values), so
    this test asserts the GPU's answer on every host.
    """
    rows, k, n = 5, 64, 16
    x, w = _overflowing_fp16(rows, k, n)
    b = torch.zeros(n, dtype=torch.float16)
    exact = x.double() @ w.double().t()
    assert exact.abs().max() <= 32768 and (x[0].double().cumsum(0) * 128).max() > 65504
    fn = OPS[op][0]
    if "residual" in op:
        r = torch.full((rows, n), -16384.0, dtype=torch.float16)
        out, want = fn(x, w, b, r), exact - 16384
    else:
        out, want = fn(x, w, b), exact  # gelu(h) == h for these large h
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), want, atol=0, rtol=1e-3)


def test_fp16_gelu_grad_partial_sums_past_fp16_max():
    """The same for the fused GELU-gradient GEMM of the MLP backward."""
    rows, k, n = 5, 64, 16
    d, w = _overflowing_fp16(rows, k, n)  # d (M, K=D) @ W2 (D, H=n): W2 = w.t()
    pre = torch.full((rows, n), 8.0, dtype=torch.float16)  # gelu'(8) == 1 to fp16 precision
    out = mlp.mlp_residual_bwd_dh(d, w.t(), pre, out=poison_(torch.empty(rows, n, dtype=torch.float16)))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), d.double() @ w.double().t(), atol=0, rtol=1e-3)
