"""The packed variable-length attention kernels (forward and backward) against the fp64 reference.

Parity follows the flash-attention rule: the kernel's max error against
``varlen_attention_ref(upcast=True)`` (fp64) is at most 2x the error of eager PyTorch in the
same dtype (``varlen_attention_ref(upcast=False)``) plus a small atol, for the output and for
dq, dk, dv. Every kernel output (out, lse, delta, dq, dk, dv) is NaN-poisoned before the launch,
so a row no program writes fails. Lengths are odd, with one-token and empty sequences, a sequence
longer than one 64-row block, and 7 sequences; tiny shapes, the interpreter on CPU.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch
from parity import assert_close_vs_ref, poison_

import fastvit.kernels as kernels
from fastvit.kernels import ops
from fastvit.kernels import varlen_attention_op as va
from fastvit.kernels.reference import varlen_attention_ref

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
ATOL = {F32: 1e-5, F16: 1e-4, BF16: 1e-2}  # bf16: CUDA only (the interpreter's bf16 products differ)

# (lengths, heads, head_dim, dtype): odd lengths, a one-token and an empty sequence, a sequence
# longer than a 64-row block (a full and a partial key block), many sequences; 64 and 72 (64 + 16 tiles)
CASES = [
    ((5, 1, 0, 70, 3), 2, 72, F32),
    ((3, 7, 1, 9, 2, 11, 5), 3, 64, F16),
    ((0, 13, 1), 1, 64, F32),
    ((66, 1, 0, 17), 2, 72, F16),
    pytest.param((5, 1, 0, 70, 3), 2, 72, BF16, marks=pytest.mark.cuda),
    pytest.param((3, 7, 1, 9, 2, 11, 5), 3, 64, BF16, marks=pytest.mark.cuda),
]


def _id(case) -> str:
    values = case.values if hasattr(case, "values") else case
    lengths, h, d, dtype = values
    return f"L{'-'.join(map(str, lengths))}-H{h}-D{d}-{str(dtype).removeprefix('torch.')}"


def _cu(lengths, device) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lengths, dtype=torch.int64).cumsum(0).tolist()], dtype=torch.int32,
                        device=device)  # fmt: skip


def _randn(*shape, key, dtype, device):
    g = torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))
    return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)


def _inputs(lengths, heads, head_dim, dtype, device):
    total = sum(lengths)
    key = (tuple(lengths), heads, head_dim, dtype)
    q, k, v, do = (_randn(total, heads, head_dim, key=(key, n), dtype=dtype, device=device) for n in "qkvo")
    return q, k, v, do, _cu(lengths, device)


def _poisoned(shape, dtype, device):
    return poison_(torch.empty(shape, dtype=dtype, device=device))


def _run_kernels(q, k, v, do, cu, max_seqlen, scale):
    """Forward and backward launchers on NaN-poisoned buffers: (out, lse, dq, dk, dv)."""
    t, h, _ = q.shape
    out, lse = va.varlen_attention_fwd(q, k, v, cu, max_seqlen, scale, out=_poisoned(q.shape, q.dtype, q.device),
                                       lse=_poisoned((h, t), F32, q.device))  # fmt: skip
    dq, dk, dv = va.varlen_attention_bwd(
        do, q, k, v, out, lse, cu, max_seqlen, scale, dq=_poisoned(q.shape, q.dtype, q.device),
        dk=_poisoned(k.shape, k.dtype, k.device), dv=_poisoned(v.shape, v.dtype, v.device),
        delta=_poisoned((h, t), F32, q.device),
    )  # fmt: skip
    return out, lse, dq, dk, dv


def _reference(q, k, v, do, cu, scale, upcast):
    dtype = torch.float64 if upcast else q.dtype
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    out = varlen_attention_ref(*leaves, cu, scale=scale, upcast=upcast)
    out.backward(do.to(dtype))
    return (out.detach(), *(t.grad for t in leaves))


@pytest.mark.parametrize("lengths, heads, head_dim, dtype", CASES, ids=[_id(c) for c in CASES])
def test_parity_with_the_reference(lengths, heads, head_dim, dtype, device):
    q, k, v, do, cu = _inputs(lengths, heads, head_dim, dtype, device)
    scale = 1.0 / math.sqrt(head_dim)
    out, lse, dq, dk, dv = _run_kernels(q, k, v, do, cu, max(lengths), scale)
    ref = _reference(q, k, v, do, cu, scale, upcast=True)
    eager = _reference(q, k, v, do, cu, scale, upcast=False)
    for name, got, exp, pt in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), ref, eager):
        assert got.dtype == dtype and got.shape == q.shape, name
        assert_close_vs_ref(got, pt, exp, factor=2.0, atol=ATOL[dtype], name=name)
    # the log-sum-exp of each row over its own sequence's keys
    for s, (lo, hi) in enumerate(zip(cu.tolist(), cu.tolist()[1:])):
        scores = torch.einsum("qhd,khd->hqk", q[lo:hi].double(), k[lo:hi].double()) * scale
        torch.testing.assert_close(lse[:, lo:hi].double(), torch.logsumexp(scores, -1), atol=1e-4, rtol=1e-5)


def test_each_sequence_equals_it_run_alone(device):
    """Packed, every sequence's output and gradients are bitwise those of the sequence alone:
    no program reads across sequences, and blocks start at each sequence's first row."""
    lengths = (5, 1, 0, 70, 3)
    q, k, v, do, cu = _inputs(lengths, 2, 72, F32, device)
    scale = 0.125
    packed = _run_kernels(q, k, v, do, cu, 70, scale)
    bounds = cu.tolist()
    for lo, hi in zip(bounds, bounds[1:]):
        if hi == lo:
            continue
        one = _cu([hi - lo], device)
        alone = _run_kernels(q[lo:hi], k[lo:hi], v[lo:hi], do[lo:hi], one, hi - lo, scale)
        for name, p, a in zip(("out", "lse", "dq", "dk", "dv"), packed, alone):
            got = p[:, lo:hi] if name == "lse" else p[lo:hi]
            assert torch.equal(got, a), (name, lo, hi)


def test_public_function_autograd_strided_views_and_scale(device):
    """The public op on (T, H, D) views of a packed (T, 3, H, D) qkv, with a negative scale and a
    max_seqlen larger than needed, equals the launchers on contiguous copies; gradients flow to qkv."""
    lengths = (9, 0, 1, 20)
    total, heads, head_dim = sum(lengths), 2, 64
    qkv = _randn(total, 3, heads, head_dim, key="qkv", dtype=F32, device=device).requires_grad_()
    do = _randn(total, heads, head_dim, key="do", dtype=F32, device=device)
    cu = _cu(lengths, device)
    q, k, v = qkv.unbind(1)
    out = kernels.varlen_attention(q, k, v, cu, 33, scale=-0.2)
    (dqkv,) = torch.autograd.grad(out, qkv, do)
    exp_out, _, dq, dk, dv = _run_kernels(q.detach().contiguous(), k.detach().contiguous(), v.detach().contiguous(),
                                          do, cu, 20, -0.2)  # fmt: skip
    assert torch.equal(out, exp_out)
    assert torch.equal(dqkv, torch.stack([dq, dk, dv], 1))
    ref = varlen_attention_ref(q, k, v, cu, scale=-0.2)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_default_scale_and_empty_inputs(device):
    q, k, v, do, cu = _inputs((4, 3), 1, 16, F32, device)
    torch.testing.assert_close(kernels.varlen_attention(q, k, v, cu, 4).double(), varlen_attention_ref(q, k, v, cu),
                               atol=1e-5, rtol=1e-5)  # fmt: skip
    for cu_empty in ([0, 0], [0, 0, 0]):
        empty = torch.zeros(0, 2, 16, device=device, requires_grad=True)
        out = kernels.varlen_attention(empty, empty, empty, torch.tensor(cu_empty, dtype=torch.int32, device=device), 0)
        assert out.shape == (0, 2, 16)
        (grad,) = torch.autograd.grad(out.sum(), empty, allow_unused=True)
        assert grad is None or grad.shape == (0, 2, 16)


BAD_OFFSETS = [
    ([1, 4, 7], "cu_seqlens"),  # not starting at 0
    ([0, 5, 3, 7], "cu_seqlens"),  # decreasing
    ([0, 4, 6], "cu_seqlens"),  # not ending at T = 7
    ([0, 4, 9], "cu_seqlens"),  # past T
]


@pytest.mark.parametrize("bounds, words", BAD_OFFSETS, ids=["start", "decreasing", "short", "long"])
def test_bad_offsets_raise_value_error(bounds, words, device):
    q = torch.randn(7, 1, 16, device=device)
    with pytest.raises(ValueError, match=words):
        kernels.varlen_attention(q, q, q, torch.tensor(bounds, dtype=torch.int32, device=device), 7)


def test_bad_arguments_raise(device):
    q = torch.randn(7, 1, 16, device=device)
    cu = torch.tensor([0, 3, 7], dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="cu_seqlens a 1-D int32"):
        kernels.varlen_attention(q, q, q, cu.long(), 4)
    with pytest.raises(ValueError, match="cu_seqlens a 1-D int32"):
        kernels.varlen_attention(q, q, q, cu[None], 4)
    with pytest.raises(ValueError, match="S \\+ 1 >= 2 offsets"):
        kernels.varlen_attention(q[:0], q[:0], q[:0], cu[:1], 0)
    with pytest.raises(TypeError, match="cu_seqlens a tensor"):
        kernels.varlen_attention(q, q, q, [0, 3, 7], 4)
    with pytest.raises(ValueError, match=r"max_seqlen >= the longest sequence \(4\)"):
        kernels.varlen_attention(q, q, q, cu, 3)
    with pytest.raises(TypeError, match="max_seqlen an int"):
        kernels.varlen_attention(q, q, q, cu, 4.0)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        kernels.varlen_attention(q.double(), q.double(), q.double(), cu, 4)
    with pytest.raises(ValueError, match="head_dim between 1 and 128"):
        big = torch.randn(7, 1, 129, device=device)
        kernels.varlen_attention(big, big, big, cu, 4)
    with pytest.raises(ValueError, match=r"shape \(T, H, D\)"):
        kernels.varlen_attention(q[None], q[None], q[None], cu, 4)
    with pytest.raises(ValueError, match="one shape"):
        kernels.varlen_attention(q, q[:6], q, cu, 4)


def test_declaration_answers_what_the_kernel_takes():
    decl = ops.declaration("varlen_attention")
    assert decl.module == va.__name__ and kernels.varlen_attention is va.varlen_attention
    common = dict(device="cuda", dtype=F16, head_dim=72)
    assert decl.supports_fn(**common) is None
    assert "cu_seqlens_dtype int64" in decl.supports_fn(**common, cu_seqlens_dtype=torch.int64)
    assert "2-D" in decl.supports_fn(**common, cu_seqlens_dim=2)
    assert "head_dim 129" in decl.supports_fn(**{**common, "head_dim": 129})
    assert "on cpu" in decl.supports_fn(**{**common, "device": "cpu"}, interpret=False)
    assert decl.auto_dtypes == ops.HALF


def test_opcheck(device):
    """The registered op's schema, fake and autograd registrations agree with the kernel."""
    q, k, v, _, cu = _inputs((3, 0, 5), 1, 16, F32, device)
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), cu, 5, 0.25)
    torch.library.opcheck(va.varlen_attention_fwd_op, args, test_utils=("test_schema", "test_faketensor",
                                                                         "test_autograd_registration"))  # fmt: skip
