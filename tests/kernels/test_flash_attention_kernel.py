"""Triton attention (forward and backward) against the fp64 reference.

Parity follows the flash-attention rule: the kernel's max error against
``attention_ref(upcast=True)`` (fp64) may be at most 2x (outputs) or 3x
(gradients) the error of eager PyTorch in the same dtype
(``attention_ref(upcast=False)``), plus 1e-5. Every kernel output (out, lse,
delta, dq, dk, dv) is NaN-poisoned before the launch, so an element the kernel
fails to write fails the test.

On CPU the kernels run in the Triton interpreter, which is slow: the default
run covers every sequence length, head_dim, batch, head count and dtype at
least once (``COVER``); the full grid is marked ``slow`` (``-m slow``). On CUDA
the full grid runs in bf16 and fp16, with 1025 tokens and head_dim 96 added.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib

import pytest
import torch
from parity import assert_close_vs_ref, poison_

from fastvit import shapes
from fastvit.kernels import flash_attention as attn
from fastvit.aot.cases import cases_of
from fastvit.kernels import tuning
from fastvit.kernels.reference import attention_ref

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
SEQS = (1, 17, 197, 257, 577)
HEAD_DIMS = (32, 64, 72, 80, 128)
BATCHES = (1, 3)
HEADS = (1, 3, 12)
# (B, H, N, D, dtype): each value of the grid at least once, B*H*N^2 small at long N.
COVER = [
    (1, 1, 1, 32, F32),
    (3, 12, 1, 128, BF16),
    (3, 12, 17, 64, F16),
    (1, 3, 17, 80, BF16),
    (1, 3, 197, 80, F32),
    (3, 1, 197, 128, F16),
    (1, 3, 197, 96, F16),
    (1, 1, 257, 64, BF16),
    (3, 1, 257, 32, F32),
    (1, 1, 577, 80, F16),
    (1, 1, 577, 128, F32),
    # head dims 72 and 80 run as 64 + 16 tiles (72 with 8 columns masked), 40 as 32 + 16
    (1, 1, 197, 72, BF16),
    (1, 2, 257, 72, F16),
    (1, 1, 577, 72, F32),
    (1, 1, 257, 80, BF16),
    (1, 2, 33, 40, F16),
    # the giant presets': 88 as 64 + 32 (8 masked), 104 as one 128-wide tile (24 masked)
    (1, 1, 33, 88, BF16),
    (1, 2, 20, 104, F16),
]
FULL = list(itertools.product(BATCHES, HEADS, SEQS, HEAD_DIMS, (F32, F16, BF16)))
# on CUDA, every head dim of the presets (fastvit.shapes) too: a new preset's head dim enters this grid
CUDA_HEAD_DIMS = HEAD_DIMS + tuple(d for d in shapes.head_dims("wide") if d not in HEAD_DIMS)
FULL_CUDA = list(itertools.product(BATCHES, HEADS, SEQS + (1025,), CUDA_HEAD_DIMS, (BF16, F16)))


def _case_id(case) -> str:
    b, h, n, d, dtype = case
    return f"B{b}-H{h}-N{n}-D{d}-{str(dtype).removeprefix('torch.')}"


def _randn(*shape, key, dtype, device, scale=1.0) -> torch.Tensor:
    """Normal values seeded by ``key``, generated on the CPU so every device sees the same inputs."""
    g = torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))
    return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)


def _qkv_do(b, h, n_q, n_kv, d, dtype, device, q_scale=1.0, k_scale=1.0):
    key = (b, h, n_q, n_kv, d, dtype, q_scale, k_scale)
    q = _randn(b, h, n_q, d, key=(key, "q"), dtype=dtype, device=device, scale=q_scale)
    k = _randn(b, h, n_kv, d, key=(key, "k"), dtype=dtype, device=device, scale=k_scale)
    v = _randn(b, h, n_kv, d, key=(key, "v"), dtype=dtype, device=device)
    do = _randn(b, h, n_q, d, key=(key, "do"), dtype=dtype, device=device)
    return q, k, v, do


def _poisoned_like(t: torch.Tensor, dtype=None) -> torch.Tensor:
    return poison_(torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device))


def _run_kernels(q, k, v, do, scale):
    """Forward and backward launchers on NaN-poisoned buffers: (out, lse, dq, dk, dv)."""
    out, lse = attn.attention_fwd(
        q, k, v, scale, out=_poisoned_like(q), lse=_poisoned_like(q[..., 0], torch.float32)
    )
    dq, dk, dv = attn.attention_bwd(
        do, q, k, v, out, lse, scale,
        dq=_poisoned_like(q), dk=_poisoned_like(k), dv=_poisoned_like(v), delta=_poisoned_like(lse),
    )  # fmt: skip
    return out, lse, dq, dk, dv


def _reference(q, k, v, do, scale, upcast):
    """(out, dq, dk, dv) of the PyTorch reference: fp64 if ``upcast``, else in the inputs' dtype."""
    dtype = torch.float64 if upcast else q.dtype
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    out = attention_ref(*leaves, scale=scale, upcast=upcast)
    out.backward(do.to(dtype))
    return (out.detach(), *(t.grad for t in leaves))


def _check_parity(q, k, v, do, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out, lse, dq, dk, dv = _run_kernels(q, k, v, do, scale)
    ref = _reference(q, k, v, do, scale, upcast=True)
    eager = _reference(q, k, v, do, scale, upcast=False)
    for name, got, exp, pt, factor in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), ref, eager, (2, 3, 3, 3)):
        assert got.dtype == q.dtype, name
        assert_close_vs_ref(got, pt, exp, factor=factor, atol=1e-5, name=name)
    lse_ref = torch.logsumexp(scale * q.double() @ k.double().transpose(-2, -1), dim=-1)
    torch.testing.assert_close(lse.double(), lse_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", COVER, ids=_case_id)
def test_parity(case, device):
    b, h, n, d, dtype = case
    _check_parity(*_qkv_do(b, h, n, n, d, dtype, device))


@pytest.mark.slow
@pytest.mark.parametrize("case", FULL, ids=_case_id)
def test_parity_full_grid(case, device):
    b, h, n, d, dtype = case
    _check_parity(*_qkv_do(b, h, n, n, d, dtype, device))


@pytest.mark.cuda
@pytest.mark.parametrize("case", FULL_CUDA, ids=_case_id)
def test_parity_cuda(case):
    b, h, n, d, dtype = case
    _check_parity(*_qkv_do(b, h, n, n, d, dtype, "cuda"))


@pytest.mark.parametrize("n_q, n_kv", [(17, 197), (197, 1), (65, 130)])
def test_parity_unequal_lengths(n_q, n_kv, device):
    _check_parity(*_qkv_do(1, 2, n_q, n_kv, 64, F32, device))


@pytest.mark.parametrize("dtype", [F32, F16, BF16], ids=str)
def test_parity_large_scores(dtype, device):
    """q x 5, k x 3: sharply peaked softmax rows, still within the error budget."""
    _check_parity(*_qkv_do(1, 3, 197, 197, 64, dtype, device, q_scale=5.0, k_scale=3.0))


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_huge_values_stay_finite(dtype, device):
    """Inputs near 1e4 (scores near 1e9 before scaling) give finite outputs and gradients.

    This failed for fp16 (``dk: 896 non-finite elements``) on 2-core AMD EPYC
    machines without AVX-512 and passed on AVX-512 Intel ones. The cause was
    not fp16 accumulation (the interpreter calls ``np.matmul(a, b,
    dtype=float32)``, an fp32 GEMM): OpenBLAS's fp32 GEMM kernel for
    Haswell/Zen sums the inner dimension of ``A @ B`` in another order than
    that of ``(B @ A)^T``. The forward's S = Q K^T and the dK/dV kernel's
    S^T = K Q^T then differed by up to ~640 (fp32 ulp at 6e9 is 512), so
    ``exp2(S^T * scale * log2 e - lse)`` reached 2^100 and dS overflowed.
    ``OPENBLAS_CORETYPE=Haswell`` reproduces it on any x86-64 CPU (see
    :func:`test_interpreter_is_host_independent`). A GPU sums every score over
    the head dimension in one order in all kernels, so its forward and backward
    scores agree; the interpreter now does its products in fp64 (exact for
    16-bit operands) with one rounding to fp32, which agrees on every host.
    """
    q, k, v, do = _qkv_do(1, 2, 130, 130, 64, dtype, device)
    q, k, v = ((t.float().sign() * 1e4 + t.float() * 1e3).to(dtype) for t in (q, k, v))
    for name, t in zip(("out", "lse", "dq", "dk", "dv"), _run_kernels(q, k, v, do, 1 / 8)):
        assert torch.isfinite(t).all(), f"{name}: {(~torch.isfinite(t)).sum().item()} non-finite elements"


def test_interpreter_is_host_independent():
    """The huge-value test passes with numpy's BLAS forced to its AVX2 (Haswell)
    kernel, the one CI's AMD EPYC machines run, whatever CPU runs this test."""
    import os
    import subprocess
    import sys

    if not tuning.interpreting():
        pytest.skip("checks the Triton interpreter")
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell", "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         f"{__file__}::test_huge_values_stay_finite"],
        env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout, result.stdout[-2000:]


def test_head_tiles():
    """Head dims split into power-of-two tiles of >= 16 columns, padding less than one tile would."""
    from fastvit.kernels._attention_tiles import backward_head_tiles, head_tiles

    assert head_tiles(64) == (64, 0) and head_tiles(128) == (128, 0) and head_tiles(8) == (16, 0)
    assert head_tiles(80) == (64, 16) and head_tiles(72) == (64, 16) and head_tiles(96) == (64, 32)
    assert head_tiles(112) == (128, 0) and head_tiles(24) == (32, 0) and head_tiles(48) == (32, 16)
    for d in range(1, 129):
        first, second = head_tiles(d)
        whole = max(16, 1 << (d - 1).bit_length())
        for w in (first, second):
            assert w == 0 or (w >= 16 and w & (w - 1) == 0), (d, first, second)
        assert first + second >= d and first + second <= whole and (second == 0 or first < d), (d, first, second)
    assert backward_head_tiles(80, "sm90") == (64, 16) and backward_head_tiles(80, "sm80") == (128, 0)
    assert backward_head_tiles(64, "sm80") == (64, 0) and backward_head_tiles(72, "default") == (128, 0)
    for bad in (0, 129, 64.0, True):
        with pytest.raises(ValueError, match="head_dim between 1 and 128"):
            head_tiles(bad)


@pytest.mark.parametrize("scale", [-0.3, 0.0, 0.7])
@pytest.mark.parametrize("n", [128, 130])
def test_parity_any_scale(scale, n, device):
    """Scores are scaled inside exp2, with the row max taken before scaling: a
    negative or zero scale must still give softmax(scale * S). 128 keys are two
    full (unmasked) blocks, 130 add a masked tail."""
    _check_parity(*_qkv_do(1, 1, 40, n, 32, F32, device), scale=scale)


def _packed_qkv(b, n, h, d, dtype, device):
    """q, k, v as the (B, H, N, D) views of one (B, N, 3, H, D) projection, as ViT makes them."""
    qkv = _randn(b, n, 3, h, d, key=("packed", b, n, h, d, dtype), dtype=dtype, device=device)
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


def _head_dim_strided(b, n, h, d, dtype, device):
    """q, k, v stored (B, H, D, N): stride(-1) is N, not 1."""
    x = _randn(3, b, h, d, n, key=("strided", b, n, h, d, dtype), dtype=dtype, device=device)
    return x.transpose(-1, -2).unbind(0)


@pytest.mark.parametrize("layout", [_packed_qkv, _head_dim_strided], ids=lambda f: f.__name__.strip("_"))
def test_strided_inputs_match_contiguous(layout, device):
    """Strided q, k, v, out, dO and gradient buffers give bit-identical results to contiguous ones."""
    b, n, h, d, dtype = 2, 70, 3, 64, F16
    q, k, v = layout(b, n, h, d, dtype, device)
    assert not any(t.is_contiguous() for t in (q, k, v))
    do = _randn(b, n, h, d, key="do", dtype=dtype, device=device).transpose(1, 2)

    def strided_buffer():
        return poison_(torch.empty(b, n, h, d, dtype=dtype, device=device)).transpose(1, 2)

    out, lse = attn.attention_fwd(q, k, v, 0.125, out=strided_buffer())
    buffers = dict(dq=strided_buffer(), dk=strided_buffer(), dv=strided_buffer())
    grads = attn.attention_bwd(do, q, k, v, out, lse, 0.125, **buffers)
    dense = [t.contiguous() for t in (q, k, v, do)]
    out_c, lse_c = attn.attention_fwd(*dense[:3], 0.125, out=_poisoned_like(dense[0]))
    grads_c = attn.attention_bwd(dense[3], *dense[:3], out_c, lse_c, 0.125)
    assert torch.equal(out, out_c) and torch.equal(lse, lse_c)
    for got, exp in zip(grads, grads_c):
        assert torch.equal(got, exp)


def test_expanded_inputs_match_contiguous(device):
    """Stride-0 (expanded) q over the heads and k, v over the batch read the same
    values as their dense copies: identical outputs, and autograd sums the
    gradients over the expanded dims."""
    b, h, n, d = 2, 3, 33, 80
    q1 = _randn(b, 1, n, d, key="exp-q", dtype=F32, device=device)
    kv1 = _randn(2, 1, h, n, d, key="exp-kv", dtype=F32, device=device)
    do = _randn(b, h, n, d, key="exp-do", dtype=F32, device=device)
    leaves = [q1.clone().requires_grad_(), kv1[0].clone().requires_grad_(), kv1[1].clone().requires_grad_()]
    q, k, v = leaves[0].expand(b, h, n, d), leaves[1].expand(b, h, n, d), leaves[2].expand(b, h, n, d)
    assert q.stride(1) == 0 and k.stride(0) == 0
    out = attn.attention(q, k, v)
    out.backward(do)
    dense = [t.detach().contiguous().requires_grad_() for t in (q, k, v)]
    out_c = attn.attention(*dense)
    out_c.backward(do)
    assert torch.equal(out, out_c)
    for leaf, t, dim in zip(leaves, dense, (1, 0, 0)):
        torch.testing.assert_close(leaf.grad, t.grad.sum(dim, keepdim=True), rtol=1e-6, atol=1e-6)


def test_expanded_output_gradient(device):
    """``out.sum().backward()`` hands the backward a stride-0 dO: gradients equal a dense dO's."""
    q, k, v, _ = _qkv_do(1, 2, 20, 20, 72, F16, device)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    attn.attention(*leaves).sum().backward()
    out, lse = attn.attention_fwd(q, k, v, 72**-0.5)
    dense = attn.attention_bwd(torch.ones_like(q), q, k, v, out, lse, 72**-0.5)
    for leaf, g in zip(leaves, dense):
        assert torch.equal(leaf.grad, g)


@pytest.mark.parametrize(
    "shape_q, n_kv", [((0, 2, 5, 16), 5), ((2, 0, 5, 16), 5), ((2, 2, 0, 16), 5), ((2, 2, 0, 16), 0)]
)
def test_zero_size_inputs(shape_q, n_kv, device):
    """Empty batch, heads or queries: empty outputs; nothing attends, so dk = dv = 0."""
    b, h, n_q, d = shape_q
    q = torch.randn(shape_q, device=device).requires_grad_()
    k, v = (torch.randn(b, h, n_kv, d, device=device).requires_grad_() for _ in range(2))
    out = attn.attention(q, k, v)
    assert out.shape == shape_q
    out.sum().backward()
    assert q.grad.shape == q.shape
    assert torch.equal(k.grad, torch.zeros_like(k)) and torch.equal(v.grad, torch.zeros_like(v))
    qkv = torch.randn(b, n_q, 3, h, d, device=device).requires_grad_()
    attn.attention_qkvpacked(qkv).sum().backward()
    assert torch.equal(qkv.grad, torch.zeros_like(qkv))


def test_launcher_rejects_bad_buffers(device):
    """Output buffers of the wrong shape or dtype, a strided lse, or an expanded
    (self-overlapping) out or dk are a ValueError, before anything is written."""
    q, k, v, do = _qkv_do(1, 2, 9, 9, 16, F32, device)
    with pytest.raises(ValueError, match=r"expected out of shape \(1, 2, 9, 16\)"):
        attn.attention_fwd(q, k, v, 0.25, out=torch.empty(1, 2, 9, 8, device=device))
    with pytest.raises(ValueError, match="expected out of shape .*float32"):
        attn.attention_fwd(q, k, v, 0.25, out=torch.empty_like(q, dtype=F16))
    with pytest.raises(ValueError, match="without overlapping elements"):
        attn.attention_fwd(q, k, v, 0.25, out=torch.empty(1, 1, 9, 16, device=device).expand(1, 2, 9, 16))
    with pytest.raises(ValueError, match="expected lse contiguous"):
        attn.attention_fwd(q, k, v, 0.25, lse=torch.empty(1, 9, 2, device=device).transpose(1, 2))
    out, lse = attn.attention_fwd(q, k, v, 0.25)
    with pytest.raises(ValueError, match="expected dk without overlapping"):
        dk = torch.empty(1, 2, 9, 1, device=device).expand(1, 2, 9, 16)
        attn.attention_bwd(do, q, k, v, out, lse, 0.25, dk=dk)
    with pytest.raises(ValueError, match="at least one key"):
        attn.attention_fwd(q, k[:, :, :0], v[:, :, :0], 0.25)


def test_packed_qkv_autograd(device):
    """The public op on packed-qkv views: gradient of the packed tensor equals the contiguous run's."""
    b, n, h, d = 2, 40, 3, 32
    qkv = _randn(b, n, 3, h, d, key="autograd", dtype=F32, device=device).requires_grad_()
    do = _randn(b, h, n, d, key="autograd-do", dtype=F32, device=device)
    out = attn.attention(*qkv.permute(2, 0, 3, 1, 4).unbind(0))
    assert out.transpose(1, 2).is_contiguous(), "heads should merge without a copy"
    out.backward(do)
    dense = [t.detach().contiguous().requires_grad_() for t in qkv.permute(2, 0, 3, 1, 4).unbind(0)]
    out_c = attn.attention(*dense)
    out_c.backward(do)
    assert torch.equal(out, out_c)
    assert torch.equal(qkv.grad, torch.stack([t.grad for t in dense]).permute(1, 3, 0, 2, 4))


def test_qkvpacked_op_matches_unpacked(device):
    """attention_qkvpacked: the same out as attention on views of the packed tensor,
    and its packed gradient (written straight into one (B, N, 3, H, D) buffer,
    no stack) equal to the unpacked run's dq, dk, dv, element for element."""
    b, n, h, d = 2, 40, 3, 32
    qkv = _randn(b, n, 3, h, d, key="qkvpacked", dtype=F16, device=device).requires_grad_()
    do = _randn(b, h, n, d, key="qkvpacked-do", dtype=F16, device=device)
    out = attn.attention_qkvpacked(qkv, scale=0.2)
    assert out.transpose(1, 2).is_contiguous(), "heads should merge without a copy"
    (dqkv,) = torch.autograd.grad(out, qkv, do)
    assert dqkv.is_contiguous() and dqkv.shape == qkv.shape
    views = [t.detach().requires_grad_() for t in qkv.detach().permute(2, 0, 3, 1, 4).unbind(0)]
    out_u = attn.attention(*views, scale=0.2)
    grads_u = torch.autograd.grad(out_u, views, do)
    assert torch.equal(out, out_u)
    for i, g in enumerate(grads_u):
        assert torch.equal(dqkv[:, :, i].transpose(1, 2), g), "dq, dk, dv"[4 * i : 4 * i + 2]


def test_qkvpacked_backward_writes_every_element(device):
    """The packed gradient's three slices, as the backward op fills them, start NaN-poisoned."""
    b, n, h, d = 1, 33, 2, 80
    qkv = _randn(b, n, 3, h, d, key="qkv-poison", dtype=F32, device=device)
    do = _randn(b, h, n, d, key="qkv-poison-do", dtype=F32, device=device)
    out, lse = attn.attention_qkvpacked_fwd_op(qkv, 0.1)
    dqkv = poison_(torch.empty_like(qkv))
    attn.attention_bwd(do, *attn._unpack(qkv), out, lse, 0.1, dq=dqkv[:, :, 0].transpose(1, 2),
                            dk=dqkv[:, :, 1].transpose(1, 2), dv=dqkv[:, :, 2].transpose(1, 2))  # fmt: skip
    assert torch.isfinite(dqkv).all()
    assert torch.equal(dqkv, attn.attention_qkvpacked_bwd_op(do, qkv, out, lse, 0.1))


@pytest.mark.parametrize("shape", [(2, 5, 3, 8), (2, 5, 2, 1, 8), (2, 5, 4, 1, 8)])
def test_qkvpacked_rejects_other_shapes(shape, device):
    with pytest.raises(ValueError, match=r"expected qkv of shape \(B, N, 3, H, D\), got " + re.escape(str(shape))):
        attn.attention_qkvpacked(torch.randn(shape, device=device))


def test_backward_is_deterministic(device):
    b, h, n = (8, 12, 577) if device == "cuda" else (2, 3, 130)
    q, k, v, do = _qkv_do(b, h, n, n, 64, F16, device)
    first, second = _run_kernels(q, k, v, do, 0.125), _run_kernels(q, k, v, do, 0.125)
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), first, second):
        assert torch.equal(a, b), f"{name} differs between two runs"


def test_opcheck(device):
    q, k, v, do = _qkv_do(1, 2, 17, 17, 32, F32, device)
    out, lse = attn.attention_fwd_op(q, k, v, 0.3)
    torch.library.opcheck(attn.attention_bwd_op, (do, q, k, v, out, lse, 0.3))
    torch.library.opcheck(attn.attention_fwd_op, (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), 0.3))
    qkv = torch.stack([q, k, v], dim=2).transpose(1, 3).detach()  # (B, N, 3, H, D), not contiguous
    out, lse = attn.attention_qkvpacked_fwd_op(qkv, 0.3)
    torch.library.opcheck(attn.attention_qkvpacked_bwd_op, (do, qkv, out, lse, 0.3))
    torch.library.opcheck(attn.attention_qkvpacked_fwd_op, (qkv.requires_grad_(), 0.3))


def test_compile_fullgraph_matches_eager(device):
    q, k, v, _ = _qkv_do(1, 2, 17, 17, 32, F32, device)

    def loss(q, k, v):
        return attn.attention(q, k, v).square().sum()

    results = []
    for fn in (loss, torch.compile(loss, backend="aot_eager", fullgraph=True)):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        value = fn(*leaves)
        value.backward()
        results.append([value.detach(), *(t.grad for t in leaves)])
    for eager, compiled in zip(*results):
        assert torch.equal(eager, compiled)


@pytest.mark.cuda
def test_tf32_only_on_opt_in(monkeypatch):
    q, k, v, _ = _qkv_do(2, 3, 197, 197, 64, F32, "cuda")
    exact = attn.attention(q, k, v)
    monkeypatch.setenv("FASTVIT_ATTENTION_TF32", "1")
    tf32 = attn.attention(q, k, v)
    assert not torch.equal(exact, tf32)
    torch.testing.assert_close(tf32, exact, atol=1e-2, rtol=1e-2)


def _t(*shape, dtype=F32, device="cpu"):
    return torch.zeros(*shape, dtype=dtype, device=device)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((_t(2, 5, 32), _t(2, 5, 32), _t(2, 5, 32)), ValueError, r"q of shape \(B, H, N, D\), got 3-D"),
        ((_t(1, 2, 5, 32), _t(1, 2, 5, 32, dtype=F16), _t(1, 2, 5, 32)), TypeError, "float16, bfloat16 or float32"),
        ((_t(1, 2, 5, 32, dtype=torch.float64),) * 3, TypeError, "got torch.float64"),
        ((_t(1, 2, 5, 32), _t(1, 2, 5, 32, device="meta"), _t(1, 2, 5, 32)), ValueError, "one device"),
        ((_t(1, 2, 5, 32), _t(2, 2, 5, 32), _t(2, 2, 5, 32)), ValueError, r"k to match q's \(B, H, D\)"),
        ((_t(1, 2, 5, 32), _t(1, 2, 5, 32), _t(1, 2, 5, 64)), ValueError, r"v to match q's \(B, H, D\)"),
        ((_t(1, 2, 5, 32), _t(1, 2, 6, 32), _t(1, 2, 5, 32)), ValueError, "k and v of equal length"),
        ((_t(1, 2, 5, 256),) * 3, ValueError, "head_dim between 1 and 128, got 256"),
        ((_t(1, 2, 5, 32), _t(1, 2, 0, 32), _t(1, 2, 0, 32)), ValueError, "at least one key for 5 queries"),
    ],
    ids=["not-4d", "mixed-dtype", "float64", "mixed-device", "batch", "v-head-dim", "kv-length", "head-dim", "no-keys"],
)
def test_invalid_inputs_raise(args, error, message):
    with pytest.raises(error, match=message):
        attn.attention(*args)


def test_cpu_tensors_without_interpreter_raise(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # fastvit reads it per call (tuning.interpreting)
    with pytest.raises(RuntimeError, match="need CUDA tensors .* got cpu"):
        attn.attention(*(_t(1, 2, 5, 32),) * 3)


# --------------------------------------------------------------------------- ahead-of-time compile

AOT_CASES = cases_of("attention")


def test_aot_cases_cover_every_shipped_config():
    """Every entry of every table, for bf16 and fp16 at head dims 64, 72, 80 and 128 (and bf16 at the
    wide tier's head dims: every other preset's, from fastvit.shapes), except those recorded to spill
    there, which the autotuner prunes (fastvit.kernels.attention_spills). At the core head dims only
    the sm_80 backward spills."""
    from fastvit.aot.attention import WIDE_SHAPES, known_spills

    spilled = known_spills()
    assert all(bytes_ > 16 for bytes_ in spilled.values())
    assert all(arch == "sm80" and kernel != "attention_fwd" for (arch, head_dim, kernel, *_) in spilled if head_dim in (64, 72, 80, 128))
    wide = sorted({shape[0] for shape in WIDE_SHAPES})
    assert {88, 96, 104} <= set(wide)  # CLIP-g, SigLIP giant-opt, CLIP-G at least
    grid = [*itertools.product(("bf16", "fp16"), (64, 72, 80, 128)), *itertools.product(("bf16",), wide)]

    def key(entry):
        meta, launch = tuning.split(entry)
        return meta["BLOCK_M"], meta["BLOCK_N"], launch["num_warps"], launch["num_stages"]

    for arch in ("sm80", "sm90"):
        for kernel, table in attn.CONFIGS.items():
            for dtype, head_dim in grid:
                shipped = {
                    key(e) for e in table[arch] + table["default"]
                    if (arch, head_dim, f"attention_{kernel}", *key(e)) not in spilled
                }  # fmt: skip
                covered = {
                    (c.constexprs["BLOCK_M"], c.constexprs["BLOCK_N"], c.num_warps, c.num_stages)
                    for c in AOT_CASES
                    if c.arch == arch and c.name.startswith(f"attention_{kernel}-{dtype}-d{head_dim}-")
                }
                assert covered == shipped, (arch, kernel, dtype, head_dim)
        assert sum(c.arch == arch and c.name.startswith("attention_bwd_delta-") for c in AOT_CASES) == len(grid)


def test_aot_cases_carry_the_launch_specialization():
    """Hints as a ViT launch gives them: head-dim strides are the constant 1; the
    head stride (= head_dim) divides by 16 at 64 and 80 but not at 72; the
    sequence lengths (197, 257, 577, 730) never do; the tiles are the launcher's."""
    from fastvit.kernels._attention_tiles import backward_head_tiles, head_tiles

    for case in AOT_CASES:
        if case.name.startswith("attention_bwd_delta"):
            continue
        d = case.constexprs["HEAD_DIM"]
        tiles = head_tiles(d) if case.name.startswith("attention_fwd") else backward_head_tiles(d, case.arch)
        assert (case.constexprs["BLOCK_D"], case.constexprs["BLOCK_D2"]) == tiles, case
        assert case.constexprs["sq_d"] == 1 and case.constexprs["sk_d"] == 1 and case.signature["sq_d"] == "constexpr"
        assert ("sq_h" in case.divisible) == (d % 16 == 0), case
        assert "sq_n" in case.divisible and "n_q" not in case.divisible and "n_kv" not in case.divisible
        assert case.constexprs["INTERPRET"] is False and case.constexprs["PRECISION"] == "ieee"
