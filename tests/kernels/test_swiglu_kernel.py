"""SwiGLU's fc1 in one GEMM (op ``linear_swiglu``) against the fp64 reference.

The kernel's output and every gradient (x, both weights, both biases; the backward recomputes in
PyTorch) are held to the op's declared bound (:class:`fastvit.kernels.ops.Tolerance`, the
flash-attention rule: at most twice PyTorch's error in the same dtype plus a per-dtype floor) at
odd sizes that leave partial tiles on every edge, with and without biases, for the split form
(timm's ``fc1_g`` / ``fc1_x``) and the packed one (the two halves of ``GluMlp``'s ``fc1``).
Output buffers are NaN-poisoned. Tiny shapes: the interpreter runs them.
"""

from __future__ import annotations

import pytest
import torch
from parity import poison_

from fastvit.kernels import ops, swiglu
from fastvit.kernels.reference import linear_swiglu_ref

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TOL = ops.declaration("linear_swiglu").tolerance
NAMES = ("out", "dx", "dweight_g", "dweight_x", "dbias_g", "dbias_x")


def _within(name, got, truth, baseline):
    assert got.shape == truth.shape and got.dtype == baseline.dtype, (name, got.shape, got.dtype, baseline.dtype)
    err = (got.double() - truth.double()).abs().max().item() if got.numel() else 0.0
    base = (baseline.double() - truth.double()).abs().max().item() if got.numel() else 0.0
    bound = TOL.bound(got.dtype, base, truth.abs().max().item() if got.numel() else 0.0)
    assert torch.isfinite(got).all() and err <= bound, f"{name}: error {err:.3e} > bound {bound:.3e} (torch's {base:.3e})"


def _inputs(m, k, n, dtype, bias=True, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(2 * n, k, generator=g) * max(k, 1) ** -0.5
    b = torch.randn(2 * n, generator=g) * 0.5 if bias else None
    dout = torch.randn(m, n, generator=g)
    return [None if t is None else t.to(device=device, dtype=dtype) for t in (x, w, b, dout)]


def _run(fn, x, w, b, dout, packed):
    """fn's output and the gradients of x, W_g, W_x, b_g, b_x; ``packed``: the weights are halves of one tensor."""
    n = dout.shape[-1]
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    x, w, b = leaves
    if packed:
        wg, wx = w[:n], w[n:]
        bg, bx = (b[:n], b[n:]) if b is not None else (None, None)
    else:  # separate tensors, as timm's fc1_g / fc1_x
        wg, wx = (t.detach().clone().requires_grad_() for t in (w[:n], w[n:]))
        bg, bx = (t.detach().clone().requires_grad_() for t in (b[:n], b[n:])) if b is not None else (None, None)
    out = fn(x, wg, bg, wx, bx)
    out.backward(dout)
    if packed:
        grads = (w.grad[:n], w.grad[n:]) + ((b.grad[:n], b.grad[n:]) if b is not None else ())
    else:
        grads = (wg.grad, wx.grad) + ((bg.grad, bx.grad) if b is not None else ())
    return (out.detach(), x.grad, *grads)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m,k,n,bias,packed", [(37, 45, 70, True, False), (5, 19, 33, False, True), (66, 64, 24, True, True)])
def test_forward_and_backward_within_the_flash_rule(m, k, n, bias, packed, dtype, device):
    x, w, b, dout = _inputs(m, k, n, dtype, bias, seed=m, device=device)
    got = _run(swiglu.linear_swiglu, x, w, b, dout, packed)
    base = _run(lambda *a: linear_swiglu_ref(*a, upcast=False), x, w, b, dout, packed)
    truth = _run(linear_swiglu_ref, *(None if t is None else t.double() for t in (x, w, b, dout)), packed)
    assert len(got) == (6 if bias else 4)
    for name, g, t, bl in zip(NAMES, got, truth, base):
        _within(name, g, t, bl)


def test_poisoned_output_leading_dims_and_strides(device):
    """A NaN-filled output buffer is fully written; x with leading dims and a column slice (row stride
    != K), weights read transposed from (K, N) storage: any strides give the reference's result."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 50, generator=g).to(device)[..., 5:42]  # (2, 7, 37), strided rows
    wg, wx = (torch.randn(37, 29, generator=g).to(device).t() * 0.2 for _ in range(2))  # (29, 37), column-major
    bg, bx = (torch.randn(29, generator=g).to(device) for _ in range(2))
    out = poison_(torch.empty(14, 29, device=device))
    got = swiglu.linear_swiglu_fwd(x.reshape(14, 37), wg, wx, bg, bx, out=out)
    assert got is out
    _within("out", out, linear_swiglu_ref(x, wg, bg, wx, bx).reshape(14, 29),
            linear_swiglu_ref(x, wg, bg, wx, bx, upcast=False).reshape(14, 29))
    full = swiglu.linear_swiglu(x, wg, bg, wx, bx)
    assert full.shape == (2, 7, 29)
    torch.testing.assert_close(full, out.reshape(2, 7, 29))


def test_empty_sizes():
    """No rows, no outputs, or no inputs (K = 0: the bias alone is gated)."""
    for m, k, n in ((0, 8, 4), (3, 8, 0), (3, 0, 4)):
        x, w, b, _ = _inputs(m, k, n, torch.float32, seed=1)
        got = swiglu.linear_swiglu(x, w[:n], b[:n], w[n:], b[n:])
        torch.testing.assert_close(got, linear_swiglu_ref(x, w[:n], b[:n], w[n:], b[n:], upcast=False))


def test_bad_arguments_raise_before_launching():
    x, w, b, _ = _inputs(3, 8, 4, torch.float32)
    wg, wx, bg, bx = w[:4], w[4:], b[:4], b[4:]
    cases = [
        ((x, wg, bg, wx, None), ValueError, "both be tensors or both be None"),
        ((x, wg, bg, w, bx), ValueError, "weight_x must have weight_g's shape"),
        ((x, wg, bg, wx.half(), bx), TypeError, "x's dtype"),
        ((x.double(), wg, bg, wx, bx), TypeError, "float16, bfloat16 or float32"),
        ((x, wg[:, :5], bg, wx[:, :5], bx), ValueError, "in_features"),
        ((x, "w", bg, wx, bx), TypeError, "torch.Tensor"),
        ((x, wg, bg[:3], wx, bx), ValueError, "bias"),
    ]
    for args, error, words in cases:
        with pytest.raises(error, match=words):
            swiglu.linear_swiglu(*args)


def test_the_op_passes_opcheck():
    x, w, b, _ = _inputs(6, 16, 8, torch.float32, seed=2)
    args = [t.requires_grad_() for t in (x, w[:8].clone(), w[8:].clone(), b[:8].clone(), b[8:].clone())]
    torch.library.opcheck(swiglu.linear_swiglu_fwd_op, (*args, False))
