"""The whole-MLP op :func:`fastvit.kernels.mlp_residual` and its fused GELU-gradient GEMM.

Gradient parity in the flash-attention style (tests/parity.py): every
gradient's error against the fp64 reference is at most twice eager PyTorch's
in the same dtype, plus atol + rtol * max|ref|. Interpreter-sized ViT-Ti-like
MLPs (D = 48..192, H = 4D); the fused backward must not run the separate
GELU-backward kernel.
"""

from __future__ import annotations

import pytest
import torch
from parity import assert_close_vs_ref, poison_
from test_linear_kernel import TOLERANCES, _check_grads, _grads, _upcast

from fastvit.kernels import linear, linear_bwd, mlp, reference


def _mlp(rows, dim, dtype, seed=0, residual_dtype=None, batch=None):
    g = torch.Generator().manual_seed(seed)
    hidden = 4 * dim
    shape = (rows, dim) if batch is None else (batch, rows // batch, dim)
    x = torch.randn(*shape, generator=g).to(dtype)
    w1 = (torch.randn(hidden, dim, generator=g) / dim**0.5).to(dtype)
    b1 = (0.5 * torch.randn(hidden, generator=g)).to(dtype)
    w2 = (torch.randn(dim, hidden, generator=g) / hidden**0.5).to(dtype)
    b2 = (0.5 * torch.randn(dim, generator=g)).to(dtype)
    r = torch.randn(*shape, generator=g).to(residual_dtype or dtype)
    dout = torch.randn(*shape, generator=g).to(residual_dtype or dtype)
    return (x, w1, b1, w2, b2, r), dout


CASES = [
    pytest.param(torch.float32, 67, 48, "none", None, id="fp32-67x48"),
    pytest.param(torch.float16, 197, 48, "none", None, id="fp16-197x48"),
    pytest.param(torch.float16, 67, 64, "tanh", None, id="fp16-67x64-tanh"),
    pytest.param(torch.bfloat16, 67, 48, "none", None, id="bf16-67x48"),
    pytest.param(torch.float16, 134, 48, "none", torch.float32, id="fp16-fp32res-scaled"),
    pytest.param(torch.float32, 197, 192, "none", None, id="fp32-197x192", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("dtype,rows,dim,approximate,residual_dtype", CASES)
def test_mlp_residual_gradients(dtype, rows, dim, approximate, residual_dtype, monkeypatch):
    scaled = residual_dtype is not None
    batch = 2 if scaled else None
    inputs, dout = _mlp(rows, dim, dtype, residual_dtype=residual_dtype, batch=batch)
    scale = torch.tensor([1.25, 0.0]) if scaled else None

    calls = {"gelu_bwd": 0, "gelu_grad": 0}
    real_grad = mlp.mlp_residual_bwd_dh

    def no_gelu_bwd(*a, **k):
        calls["gelu_bwd"] += 1
        raise AssertionError("the fused MLP backward must not run the separate GELU backward")

    def counted(*a, **k):
        calls["gelu_grad"] += 1
        return real_grad(*a, **k)

    monkeypatch.setattr(linear_bwd, "linear_gelu_bwd", no_gelu_bwd)
    monkeypatch.setattr(mlp, "mlp_residual_bwd_dh", counted)

    def fused(*t):
        return mlp.mlp_residual(*t, approximate=approximate, scale=scale)

    ours = _grads(fused, inputs, dout)
    eager = _grads(lambda *t: reference.mlp_residual_ref(*t, approximate, scale, upcast=False), inputs, dout)
    ref = _grads(lambda *t: reference.mlp_residual_ref(*t, approximate, scale), _upcast(*inputs), dout.double())
    assert calls == {"gelu_bwd": 0, "gelu_grad": 1}
    atol, rtol = TOLERANCES[dtype]
    assert ours[0].dtype == (residual_dtype or dtype)
    assert_close_vs_ref(ours[0], eager[0], ref[0], factor=2, atol=atol, rtol=rtol, name="out")
    names = ("dx", "dW", "db", "dW", "db", "d_residual")
    for name, o, e, r in zip(names, ours[1:], eager[1:], ref[1:]):
        assert o.dtype == e.dtype, name
    _check_grads(names[:3], ours[1:4], eager[1:4], ref[1:4], dtype)  # fc1: dx, dW1, db1
    _check_grads(names[3:], ours[4:], eager[4:], ref[4:], dtype)  # fc2: dW2, db2, d_residual
    if scaled:
        assert not ours[1][1].any(), "the dropped sample's input gradient must be exactly zero"


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gelu_grad_kernel(dtype, approximate):
    """``(d @ W2) * gelu'(h)`` into a poisoned buffer vs eager (matmul then GELU's autograd) and fp64."""
    g = torch.Generator().manual_seed(1)
    rows, dim, hidden = 197, 48, 200  # hidden not a multiple of the tile or of its halves
    d = torch.randn(rows, dim, generator=g).to(dtype)
    w2 = (torch.randn(dim, hidden, generator=g) / dim**0.5).to(dtype)
    h = (2 * torch.randn(rows, hidden, generator=g)).to(dtype)
    out = mlp.mlp_residual_bwd_dh(d, w2, h, approximate, out=poison_(torch.empty(rows, hidden, dtype=dtype)))

    def dh(d, w2, h):
        h = h.detach().requires_grad_()
        (grad,) = torch.autograd.grad(torch.nn.functional.gelu(h, approximate=approximate), h, d @ w2)
        return grad

    atol, rtol = TOLERANCES[dtype]
    assert_close_vs_ref(out, dh(d, w2, h), dh(*_upcast(d, w2, h)), factor=2, atol=atol, rtol=rtol, name="dh")


def test_inference_saves_nothing_and_matches_the_two_ops():
    inputs, _ = _mlp(67, 48, torch.float32)
    with torch.no_grad():
        out, a, h = torch.ops.fastvit.mlp_residual_fwd(*inputs, None, None, "none", False, False)
        two = linear.linear_residual(linear.linear_gelu(*inputs[:3]), *inputs[3:])
    assert a.numel() == 0 and h.numel() == 0
    assert torch.equal(out, two)


def test_opcheck():
    inputs, _ = _mlp(6, 16, torch.float32, seed=2)
    inputs = tuple(t.requires_grad_() for t in inputs)
    torch.library.opcheck(torch.ops.fastvit.mlp_residual_fwd.default, (*inputs, None, None, "none", True, False))
    scale = torch.tensor([0.0, 1.25, 2.0])  # 3 samples of 2 rows
    torch.library.opcheck(torch.ops.fastvit.mlp_residual_fwd.default, (*inputs, scale, None, "tanh", True, False))
    d, w2, h = torch.randn(6, 16), torch.randn(16, 64), torch.randn(6, 64)
    torch.library.opcheck(torch.ops.fastvit.mlp_residual_bwd_dh.default, (d, w2, h, "none"))


def test_torch_compile_fullgraph():
    inputs, dout = _mlp(10, 16, torch.float32, seed=3)
    compiled = torch.compile(lambda *t: mlp.mlp_residual(*t), fullgraph=True, backend="aot_eager")
    for got, want in zip(_grads(compiled, inputs, dout), _grads(mlp.mlp_residual, inputs, dout)):
        torch.testing.assert_close(got, want)


BAD = {
    "fc2 in_features": (lambda t: mlp.mlp_residual(t[0], t[1], t[2], t[3][:, :5], t[4], t[5]),
                        ValueError, r"mlp_residual \(fc2\): x's last dimension must equal weight's in_features 5"),
    "fc2 bias": (lambda t: mlp.mlp_residual(*t[:4], t[4][:3], t[5]), ValueError, r"mlp_residual \(fc2\): bias"),
    "fc1 dtype": (lambda t: mlp.mlp_residual(t[0], t[1].half(), *t[2:]), TypeError, r"\(fc1\): weight must have x's dtype"),
    "residual shape": (lambda t: mlp.mlp_residual(*t[:5], t[5][:, :3]), ValueError, "residual must have the output's shape"),
    "approximate": (lambda t: mlp.mlp_residual(*t, approximate="erf"), ValueError, "approximate must be one of"),
    "scale": (lambda t: mlp.mlp_residual(*t, scale=torch.ones(3)), ValueError, r"scale must have shape"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD))
def test_validation(name):
    call, error, match = BAD[name]
    inputs, _ = _mlp(4, 8, torch.float32)
    with pytest.raises(error, match=match):
        call(inputs)
