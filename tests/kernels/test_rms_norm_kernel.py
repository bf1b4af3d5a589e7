"""RMSNorm (LayerNorm's kernels with IS_RMS, op ``rms_norm``) against the fp64 reference.

Each case holds the kernel to its declaration's bound (:class:`fastvit.kernels.ops.Tolerance`, the
flash-attention rule): its error against ``rms_norm_ref`` in fp64 at most twice PyTorch's own in the
same dtype plus a per-dtype floor. Outputs, rstd, dx and the dW partial sums are NaN-poisoned before
the launches, so an element the kernel fails to write fails. Tiny shapes: the interpreter runs them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from parity import poison_

from fastvit.kernels import norm, ops, rms
from fastvit.kernels.reference import rms_norm_ref

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TOL = ops.declaration("rms_norm").tolerance


def _within(name, got, truth, baseline):
    assert got.shape == truth.shape and got.dtype == baseline.dtype, (name, got.shape, got.dtype)
    err = (got.double() - truth.double()).abs().max().item() if got.numel() else 0.0
    base = (baseline.double() - truth.double()).abs().max().item() if got.numel() else 0.0
    bound = TOL.bound(got.dtype, base, truth.abs().max().item() if got.numel() else 0.0)
    assert torch.isfinite(got).all() and err <= bound, f"{name}: error {err:.3e} > bound {bound:.3e} (torch's {base:.3e})"


def _inputs(shape, dtype, weight_dtype=None, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 2 + 0.3).to(device=device, dtype=dtype)
    w = (1 + 0.5 * torch.randn(shape[-1], generator=g)).to(device=device, dtype=weight_dtype or dtype)
    return x, w, torch.randn(shape, generator=g).to(device=device, dtype=dtype)


def _grads(fn, x, w, dout):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    out = fn(x, w)
    out.backward(dout.to(out.dtype))
    return out.detach(), x.grad, w.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 7), (3, 5, 37), (2, 40, 64)], ids=str)
def test_forward_and_backward_within_the_flash_rule(shape, dtype, device):
    x, w, dout = _inputs(shape, dtype, device=device)
    got = _grads(lambda a, b: rms.rms_norm(a, b, 1e-6), x, w, dout)
    base = _grads(lambda a, b: rms_norm_ref(a, b, 1e-6, upcast=False), x, w, dout)
    truth = _grads(lambda a, b: rms_norm_ref(a, b, 1e-6), x.double(), w.double(), dout.double())
    for name, g, t, b in zip(("out", "dx", "dweight"), got, truth, base):
        _within(name, g, t, b)


def test_poisoned_buffers_are_all_written(device):
    """Launchers with NaN-filled out, rstd, dx and dW partials: every element they return is written."""
    x, w, dout = _inputs((3, 11, 24), torch.float16, torch.float32, seed=1, device=device)
    m = 33
    out, rstd = poison_(torch.empty_like(x)), poison_(torch.empty(m, device=device))
    s, out2, mean, rstd2 = norm.layer_norm_fwd(x, w, None, 1e-5, out=out, rstd=rstd, rms=True)
    assert s is None and mean is None and out2 is out and rstd2 is rstd and torch.isfinite(out).all()
    programs, _ = norm.bwd_num_programs(m, 24, x.device)
    dx, partial = poison_(torch.empty_like(x)), poison_(torch.empty(2, programs, 24, device=device))
    dx2, dweight, dbias = norm.layer_norm_bwd(dout, x, w, None, rstd, dx=dx, partial=partial)
    assert dx2 is dx and dbias is None and dweight.dtype == torch.float32
    truth = _grads(lambda a, b: rms_norm_ref(a, b, 1e-5), x.double(), w.double(), dout.double())
    base = _grads(lambda a, b: rms_norm_ref(a, b, 1e-5, upcast=False), x, w, dout)
    for name, g, t, b in zip(("out", "dx", "dweight"), (out, dx, dweight), truth, base):
        _within(name, g, t, b)
    torch.testing.assert_close(rstd.double(), torch.rsqrt(x.double().pow(2).mean(-1) + 1e-5).flatten(), rtol=1e-5, atol=0)


def test_strided_inputs_fp32_weight_out_dtype_and_eps_none(device):
    """Any strides (a column slice, the per-head slice of a packed qkv), an fp32 weight on half x,
    ``out_dtype``, and eps=None as F.rms_norm reads it (fp32's machine epsilon)."""
    g = torch.Generator().manual_seed(2)
    big = torch.randn(2, 9, 3, 4, 16, generator=g).to(device=device, dtype=torch.bfloat16)
    q = big[:, :, 0]  # (2, 9, 4, 16): two-level rows, read in place
    w = (1 + 0.3 * torch.randn(16, generator=g)).to(device)
    dout = torch.randn(q.shape, generator=g).to(device)
    got = _grads(lambda a, b: rms.rms_norm(a, b, None, out_dtype=torch.float32), q, w, dout)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.bfloat16
    truth = _grads(lambda a, b: rms_norm_ref(a, b, None), q.double(), w.double(), dout.double())
    base = _grads(lambda a, b: F.rms_norm(a.float(), (16,), b, None), q, w, dout)
    _within("out", got[0], truth[0], base[0])
    _within("dweight", got[2], truth[2], base[2])
    _within("dx", got[1], truth[1], base[1])
    cols = torch.randn(6, 50, generator=g).to(device)[:, 3:40]
    torch.testing.assert_close(rms.rms_norm(cols, w.new_ones(37), 1e-6), rms_norm_ref(cols, w.new_ones(37), 1e-6, upcast=False))


def test_empty_rows_and_width():
    for shape in ((0, 8), (4, 0)):
        x = torch.randn(shape, requires_grad=True)
        out = rms.rms_norm(x, torch.ones(shape[-1]), 1e-6)
        out.sum().backward()
        assert out.shape == shape and x.grad.shape == shape


def test_bad_arguments_raise_before_launching():
    x, w = torch.randn(2, 8), torch.ones(8)
    cases = [
        ((torch.tensor(1.0), w), {}, TypeError, "at least 1 dim"),
        ((x.double(), w), {}, TypeError, "float32, float16 or bfloat16"),
        ((x, torch.ones(7)), {}, ValueError, r"shape \(8,\)"),
        ((x, w.half()), {}, TypeError, "weight"),
        ((x, None), {}, TypeError, "weight"),
        ((x, w, True), {}, TypeError, "eps"),
        ((x, w, -1.0), {}, TypeError, "eps"),
        ((x, w), {"out_dtype": torch.int8}, TypeError, "out_dtype"),
        ((torch.randn(2, 4097), torch.ones(4097)), {}, ValueError, "0..4096"),
    ]
    for args, kwargs, error, words in cases:
        with pytest.raises(error, match=words):
            rms.rms_norm(*args, **kwargs)


def test_the_op_passes_opcheck():
    x, w = torch.randn(3, 12, requires_grad=True), torch.randn(12, requires_grad=True)
    torch.library.opcheck(rms.rms_norm_fwd_op, (x, w, 1e-6, None))


@pytest.mark.parametrize("use", ["both", "normed", "residual"])
def test_fork_adds_the_residual_gradient_in_its_backward(use, device):
    """``rms_norm_fork(x) = (RMSNorm(x), x)``: x's gradient is RMSNorm's plus the residual's, whichever
    outputs are used; an fp32 residual stream normalized into bf16 (autocast's block norm) included."""
    x, w, dout = _inputs((2, 9, 40), torch.float32, seed=4, device=device)
    dres = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(device)

    def run(fork, x, w):
        x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
        normed, residual = fork(x, w)
        loss = 0
        if use != "residual":
            loss = loss + (normed.double() * dout.double()).sum()
        if use != "normed":
            loss = loss + (residual.double() * dres.double()).sum()
        loss.backward()
        return normed.detach(), x.grad, w.grad if w.grad is not None else torch.zeros_like(w)

    got = run(lambda a, b: rms.rms_norm_fork(a, b, 1e-6, out_dtype=torch.bfloat16), x, w)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    base = run(lambda a, b: (rms_norm_ref(a, b, 1e-6, upcast=False).bfloat16(), a), x, w)
    truth = run(lambda a, b: (rms_norm_ref(a, b, 1e-6), a), x.double(), w.double())
    for name, g, t, b in zip(("out", "dx", "dweight"), got, truth, base):
        _within(name, g, t, b)
