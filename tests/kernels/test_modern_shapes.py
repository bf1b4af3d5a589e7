"""Issue 14 on the fused path: quick GELU, LayerScale, head dims 72/80, so400m / ViT-H widths, qk-norm.

Every parity check follows tests/parity.py's rule: the kernel's error against
the fp64 reference is at most twice eager PyTorch's error in the same dtype
(three times for attention gradients, as in test_flash_attention_kernel), plus
``atol + rtol * max|ref|``. Kernel outputs go into NaN-poisoned buffers, so an
element a kernel forgets to write fails. Shapes are interpreter-sized (small
batch, heads and rows); the widest cases are marked ``slow``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from parity import assert_close_vs_ref, poison_
from test_flash_attention_kernel import _check_parity, _qkv_do
from test_linear_kernel import BIAS_ATOL_FACTOR, TOLERANCES, _check_grads, _grads, _upcast, check_linear_gelu
from test_mlp_kernel import _mlp

from fastvit.kernels import linear, linear_tma, mlp, norm, reference
from fastvit.aot import linear as linear_aot, norm as norm_aot
from fastvit.kernels._attention_tiles import head_tiles

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _dtype_id(value):
    return str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else None


# ---------------------------------------------------------------------------
# 1. quick GELU: x * sigmoid(1.702 x)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,rows,hidden", [(F32, 67, 48), (F16, 197, 64), (BF16, 67, 48)], ids=_dtype_id)
def test_linear_gelu_quick(dtype, rows, hidden, device):
    """Forward (gelu and h into poisoned buffers), the elementwise backward kernel and autograd."""
    check_linear_gelu(rows, hidden, dtype, "quick", device)


def test_quick_is_not_the_erf_gelu(device):
    """The epilogue honours ``approximate``: quick GELU differs from erf GELU by ~1e-2 at |h| ~ 1."""
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(9, 32, generator=g), torch.randn(40, 32, generator=g) / 32**0.5, torch.randn(40, generator=g)
    x, w, b = x.to(device), w.to(device), b.to(device)
    quick, exact = linear.linear_gelu(x, w, b, "quick"), linear.linear_gelu(x, w, b, "none")
    h = F.linear(x, w, b)
    torch.testing.assert_close(quick, h * torch.sigmoid(1.702 * h), rtol=1e-5, atol=1e-5)
    assert (quick - exact).abs().max() > 1e-2


@pytest.mark.parametrize("dtype", [F32, F16])
def test_gelu_quick_grad_kernel(dtype):
    """``(d @ W2) * gelu_quick'(h)`` in one GEMM into a poisoned buffer vs autograd of the reference."""
    g = torch.Generator().manual_seed(1)
    rows, dim, hidden = 67, 48, 200  # hidden not a multiple of the tile or of its halves
    d = torch.randn(rows, dim, generator=g).to(dtype)
    w2 = (torch.randn(dim, hidden, generator=g) / dim**0.5).to(dtype)
    h = (2 * torch.randn(rows, hidden, generator=g)).to(dtype)
    out = mlp.mlp_residual_bwd_dh(d, w2, h, "quick", out=poison_(torch.empty(rows, hidden, dtype=dtype)))

    def dh(d, w2, h):
        h = h.detach().requires_grad_()
        (grad,) = torch.autograd.grad(reference.gelu_ref(h, "quick"), h, d @ w2)
        return grad

    atol, rtol = TOLERANCES[dtype]
    assert_close_vs_ref(out, dh(d, w2, h), dh(*_upcast(d, w2, h)), factor=2, atol=atol, rtol=rtol, name="dh")


def test_linear_gelu_tma_quick():
    """The Hopper TMA candidate's quick-GELU epilogue (its own kernel code, under the interpreter)."""
    g = torch.Generator().manual_seed(2)
    x, w, b = torch.randn(70, 32, generator=g), torch.randn(136, 32, generator=g) / 32**0.5, torch.randn(136, generator=g)
    dout = torch.randn(70, 136, generator=g)
    ours = _grads(lambda *t: linear_tma.linear_gelu_tma(*t, approximate="quick"), (x, w, b), dout)
    eager = _grads(lambda *t: reference.linear_gelu_ref(*t, "quick", upcast=False), (x, w, b), dout)
    ref = _grads(lambda *t: reference.linear_gelu_ref(*t, "quick"), _upcast(x, w, b), dout.double())
    atol, rtol = TOLERANCES[F32]
    assert_close_vs_ref(ours[0], eager[0], ref[0], factor=2, atol=atol, rtol=rtol, name="out")
    _check_grads(("dx", "dW", "db"), ours[1:], eager[1:], ref[1:], F32)


# ---------------------------------------------------------------------------
# 2. LayerScale: residual + scale[:, None] * gamma * (x W^T + b), with dgamma
# ---------------------------------------------------------------------------


def _gamma(n, dtype, device, magnitude=1.0, seed=5):
    g = torch.Generator().manual_seed(seed)
    return (magnitude * (0.5 + torch.rand(n, generator=g))).to(device=device, dtype=dtype)


def _check_branch_grads(ours, eager, ref, dtype, names):
    """Gradient parity; dgamma, a sum over every row like db, gets db's absolute slack."""
    atol, rtol = TOLERANCES[dtype]
    for name, o, e, r in zip(names, ours, eager, ref):
        assert o.dtype == e.dtype, name
        if name == "dgamma":
            assert_close_vs_ref(o, e, r, factor=2, atol=BIAS_ATOL_FACTOR * atol, rtol=rtol, name=name)
        else:
            _check_grads((name,), (o,), (e,), (r,), dtype)


# (x dtype, residual dtype, gamma dtype, gamma magnitude, per-sample scale)
GAMMA_CASES = [
    pytest.param(F32, F32, F32, 1.0, False, id="fp32"),
    pytest.param(F16, F16, F16, 1.0, True, id="fp16-scaled"),
    pytest.param(BF16, BF16, BF16, 1.0, False, id="bf16"),
    pytest.param(F16, F32, F32, 1e-5, True, id="fp16-fp32res-fp32gamma-1e-5-scaled"),  # DINOv2's init_values
    pytest.param(BF16, F32, F32, 1.0, True, id="bf16-fp32res-fp32gamma-scaled"),
]


def _residual_inputs(dtype, residual_dtype, device, batch=2, tokens=37, d_in=96, d_out=80, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, d_in, generator=g).to(device=device, dtype=dtype)
    w = (torch.randn(d_out, d_in, generator=g) / d_in**0.5).to(device=device, dtype=dtype)
    b = (0.5 * torch.randn(d_out, generator=g)).to(device=device, dtype=dtype)
    r = torch.randn(batch, tokens, d_out, generator=g).to(device=device, dtype=residual_dtype)
    dout = torch.randn(batch, tokens, d_out, generator=g).to(device=device, dtype=residual_dtype)
    return x, w, b, r, dout


@pytest.mark.parametrize("dtype,residual_dtype,gamma_dtype,magnitude,scaled", GAMMA_CASES)
def test_linear_residual_gamma(dtype, residual_dtype, gamma_dtype, magnitude, scaled, device):
    x, w, b, r, dout = _residual_inputs(dtype, residual_dtype, device)
    gamma = _gamma(w.shape[0], gamma_dtype, device, magnitude)
    scale = torch.tensor([1.25, 0.0], device=device) if scaled else None
    atol, rtol = TOLERANCES[dtype]

    # the launcher into a poisoned buffer
    rows = x.shape[0] * x.shape[1]
    out = linear.linear_residual_fwd(x.reshape(rows, -1), w, b, r.reshape(rows, -1), scale, gamma,
                                     out=poison_(torch.empty(rows, w.shape[0], dtype=residual_dtype, device=device)))
    ref = reference.linear_residual_ref(x, w, b, r, scale, gamma=gamma)
    eager = reference.linear_residual_ref(x, w, b, r, scale, upcast=False, gamma=gamma)
    assert_close_vs_ref(out.reshape(r.shape), eager, ref, factor=2, atol=atol, rtol=rtol, name="out")

    # autograd, gamma's gradient included
    inputs = (x, w, b, r, gamma)
    ours = _grads(lambda x, w, b, r, gm: linear.linear_residual(x, w, b, r, scale=scale, gamma=gm), inputs, dout)
    eager = _grads(lambda x, w, b, r, gm: reference.linear_residual_ref(x, w, b, r, scale, upcast=False, gamma=gm),
                   inputs, dout)  # fmt: skip
    ref = _grads(lambda x, w, b, r, gm: reference.linear_residual_ref(x, w, b, r, scale, gamma=gm), _upcast(*inputs),
                 dout.double())  # fmt: skip
    assert torch.equal(ours[0], out.reshape(r.shape)), "public linear_residual differs from the launcher's output"
    assert ours[0].dtype == residual_dtype and ours[5].dtype == gamma_dtype
    _check_branch_grads(ours[1:], eager[1:], ref[1:], dtype, ("dx", "dW", "db", "d_residual", "dgamma"))
    if scaled:
        assert not ours[1][1].any(), "the dropped sample's input gradient must be exactly zero"


def test_linear_residual_gamma_only_trains_gamma(device):
    """Frozen weights, trainable LayerScale: dgamma alone (the dW GEMM still feeds it)."""
    x, w, b, r, dout = _residual_inputs(F32, F32, device, seed=4)
    gamma = _gamma(w.shape[0], F32, device).requires_grad_()
    out = linear.linear_residual(x, w, b, r, gamma=gamma)
    (dgamma,) = torch.autograd.grad(out, gamma, dout)
    expected = ((F.linear(x.double(), w.double(), b.double())) * dout.double()).sum((0, 1))
    torch.testing.assert_close(dgamma.double(), expected, rtol=1e-5, atol=1e-5)


def test_linear_residual_tma_gamma():
    x, w, b, r, dout = _residual_inputs(F32, F32, "cpu", batch=2, tokens=35, d_in=32, d_out=136, seed=6)
    gamma, scale = _gamma(136, F32, "cpu"), torch.tensor([0.0, 2.0])
    inputs = (x, w, b, r, gamma)
    ours = _grads(lambda x, w, b, r, gm: linear_tma.linear_residual_tma(x, w, b, r, scale=scale, gamma=gm), inputs,
                  dout)  # fmt: skip
    eager = _grads(lambda x, w, b, r, gm: reference.linear_residual_ref(x, w, b, r, scale, upcast=False, gamma=gm),
                   inputs, dout)  # fmt: skip
    ref = _grads(lambda x, w, b, r, gm: reference.linear_residual_ref(x, w, b, r, scale, gamma=gm), _upcast(*inputs),
                 dout.double())  # fmt: skip
    atol, rtol = TOLERANCES[F32]
    assert_close_vs_ref(ours[0], eager[0], ref[0], factor=2, atol=atol, rtol=rtol, name="out")
    _check_branch_grads(ours[1:], eager[1:], ref[1:], F32, ("dx", "dW", "db", "d_residual", "dgamma"))


@pytest.mark.parametrize(
    "dtype,approximate,residual_dtype",
    [(F32, "quick", None), (F16, "quick", F32), (BF16, "none", None), (F16, "tanh", None)],
    ids=lambda v: _dtype_id(v) or str(v),
)
def test_mlp_residual_gamma(dtype, approximate, residual_dtype):
    """The whole branch with LayerScale: fc1 / fc2 / gamma gradients, the fused dh GEMM only."""
    inputs, dout = _mlp(68, 48, dtype, seed=7, residual_dtype=residual_dtype, batch=2)
    gamma = _gamma(48, torch.float32 if residual_dtype else dtype, "cpu", seed=8)
    scale = torch.tensor([0.0, 1.25])
    args = (*inputs, gamma)

    def fused(x, w1, b1, w2, b2, r, gm):
        return mlp.mlp_residual(x, w1, b1, w2, b2, r, approximate=approximate, scale=scale, gamma=gm)

    def ref_fn(upcast):
        return lambda x, w1, b1, w2, b2, r, gm: reference.mlp_residual_ref(x, w1, b1, w2, b2, r, approximate, scale,
                                                                     upcast=upcast, gamma=gm)  # fmt: skip

    ours, eager = _grads(fused, args, dout), _grads(ref_fn(False), args, dout)
    ref = _grads(ref_fn(True), _upcast(*args), dout.double())
    atol, rtol = TOLERANCES[dtype]
    assert_close_vs_ref(ours[0], eager[0], ref[0], factor=2, atol=atol, rtol=rtol, name="out")
    _check_branch_grads(ours[1:], eager[1:], ref[1:], dtype, ("dx", "dW", "db", "dW", "db", "d_residual", "dgamma"))
    assert not ours[1][0].any(), "the dropped sample's input gradient must be exactly zero"


BAD_GAMMA = {
    "shape": (lambda x, w, b, r: linear.linear_residual(x, w, b, r, gamma=torch.ones(3)), ValueError,
              r"gamma must have shape \(out_features,\) = \(80,\)"),
    "dtype": (lambda x, w, b, r: linear.linear_residual(x, w, b, r, gamma=torch.ones(80, dtype=torch.float64)),
              TypeError, "gamma must have x's dtype"),
    "type": (lambda x, w, b, r: linear.linear_residual(x, w, b, r, gamma=[1.0] * 80), TypeError,
             "gamma must be a torch.Tensor or None"),
    "mlp shape": (lambda x, w, b, r: mlp.mlp_residual(x, torch.ones(64, 96), torch.ones(64), torch.ones(80, 64),
                                                      torch.ones(80), r, gamma=torch.ones(64)), ValueError,
                  r"mlp_residual: gamma must have shape"),
    "approximate": (lambda x, w, b, r: mlp.mlp_residual(x, torch.ones(64, 96), torch.ones(64), torch.ones(80, 64),
                                                        torch.ones(80), r, approximate="quick_gelu"), ValueError,
                    r"approximate must be one of \('none', 'tanh', 'quick'\), got 'quick_gelu'"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_GAMMA))
def test_bad_gamma_and_approximate_raise(name):
    x, w, b, r, _ = _residual_inputs(F32, F32, "cpu")
    call, error, match = BAD_GAMMA[name]
    with pytest.raises(error, match=match):
        call(x, w, b, r)


def test_opcheck_gamma():
    x, w, b, r, _ = _residual_inputs(F32, F32, "cpu", batch=3, tokens=2, d_in=32, d_out=48)
    x, r = x.reshape(6, 32), r.reshape(6, 48)
    x, w, b, r = (t.requires_grad_() for t in (x, w, b, r))
    gamma = _gamma(48, F32, "cpu").requires_grad_()
    scale = torch.tensor([0.0, 1.25, 2.0])
    torch.library.opcheck(torch.ops.fastvit.linear_residual_fwd.default, (x, w, b, r, scale, gamma, False))
    torch.library.opcheck(torch.ops.fastvit.linear_residual_tma_fwd.default, (x, w, b, r, None, gamma, False))
    w1, b1 = (torch.randn(64, 32) / 8).requires_grad_(), torch.randn(64).requires_grad_()
    w2 = (torch.randn(48, 64) / 8).requires_grad_()
    torch.library.opcheck(torch.ops.fastvit.mlp_residual_fwd.default,
                          (x, w1, b1, w2, b, r, scale, gamma, "quick", True, False))  # fmt: skip


# ---------------------------------------------------------------------------
# 3. Attention at head dims 72 and 80: 64 + 16 tiles, not padded to 128
# ---------------------------------------------------------------------------

ATTENTION_CASES = [
    pytest.param((1, 1, n, d, dtype), id=f"N{n}-D{d}-{_dtype_id(dtype)}",
                 marks=pytest.mark.slow if n == 577 else ())
    for d in (72, 80) for n in (197, 257, 577) for dtype in (F16, BF16)
]  # fmt: skip


@pytest.mark.parametrize("case", ATTENTION_CASES)
def test_attention_head_dims_72_80(case, device):
    """Forward, lse and dq/dk/dv into poisoned buffers at ViT lengths (so400m: 72, ViT-H/CLIP-H: 80)."""
    b, h, n, d, dtype = case
    _check_parity(*_qkv_do(b, h, n, n, d, dtype, device))


@pytest.mark.parametrize("head_dim", [72, 80])
def test_head_dims_72_80_run_split_not_padded(head_dim):
    """The forward tiles the head dim as 64 + 16 (96 columns computed, not 128), and the layer's
    routing gives these head dims to the Triton kernel on CUDA (SDPA only for other reasons)."""
    from fastvit.kernels import flash_attention as attn
    from types import SimpleNamespace

    from fastvit.layers.auto import _triton_supports
    from fastvit.layers.attention import triton_unsupported

    assert head_tiles(head_dim) == (64, 16)
    q = torch.empty(1, 1, 4, head_dim)
    meta = attn._input_constexprs(q, allow_tf32=False)
    assert (meta["BLOCK_D"], meta["BLOCK_D2"], meta["HEAD_DIM"]) == (64, 16, head_dim)
    for dtype in (F16, BF16):
        assert triton_unsupported("cuda", dtype, head_dim) is None
        q = SimpleNamespace(device=torch.device("cuda"), dtype=dtype, shape=(1, 1, 197, head_dim))
        assert _triton_supports(q) is None  # auto times the kernel for them


# ---------------------------------------------------------------------------
# 4. GEMM widths: SigLIP so400m (1152 / 4304), ViT-H (1280 / 5120), K not a multiple of the block
# ---------------------------------------------------------------------------


def _wide(d_in, d_out, rows, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, d_in, generator=g).to(dtype)
    w = (torch.randn(d_out, d_in, generator=g) / d_in**0.5).to(dtype)
    b, r = torch.randn(d_out, generator=g).to(dtype), torch.randn(rows, d_out, generator=g).to(dtype)
    return x, w, b, r, torch.randn(rows, d_out, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=_dtype_id)
def test_k_4304_not_a_multiple_of_the_block(dtype):
    """so400m's fc2 reduction K = 4304 (= 64 * 67 + 16: the last K block is a quarter full), with
    LayerScale, into a poisoned buffer; a narrow N keeps the interpreter quick."""
    x, w, b, r, dout = _wide(4304, 64, 3, dtype, seed=11)
    gamma = _gamma(64, dtype, "cpu", seed=12)
    assert 4304 % linear.GEMM_CONFIGS["default"][0]["BLOCK_K"] != 0 and 4304 % 32 != 0
    out = linear.linear_residual_fwd(x, w, b, r, None, gamma, out=poison_(torch.empty_like(r)))
    atol, rtol = TOLERANCES[dtype]
    ref = reference.linear_residual_ref(x, w, b, r, gamma=gamma)
    eager = reference.linear_residual_ref(x, w, b, r, upcast=False, gamma=gamma)
    assert_close_vs_ref(out, eager, ref, factor=2, atol=atol, rtol=rtol, name="out")
    inputs = (x, w, b, r, gamma)
    ours = _grads(lambda x, w, b, r, gm: linear.linear_residual(x, w, b, r, gamma=gm), inputs, dout)
    eager = _grads(lambda x, w, b, r, gm: reference.linear_residual_ref(x, w, b, r, upcast=False, gamma=gm), inputs,
                   dout)  # fmt: skip
    ref = _grads(lambda x, w, b, r, gm: reference.linear_residual_ref(x, w, b, r, gamma=gm), _upcast(*inputs),
                 dout.double())  # fmt: skip
    _check_branch_grads(ours[1:], eager[1:], ref[1:], dtype, ("dx", "dW", "db", "d_residual", "dgamma"))


@pytest.mark.parametrize(
    "d_in,d_out",
    [pytest.param(1152, 4304, id="so400m-fc1"), pytest.param(1280, 5120, id="vitH-fc1", marks=pytest.mark.slow),
     pytest.param(5120, 1280, id="vitH-fc2", marks=pytest.mark.slow)],
)  # fmt: skip
def test_wide_gemms_quick_gelu(d_in, d_out):
    """fc1 at so400m / ViT-H width with quick GELU (4304 % 64 != 0: a ragged last column tile), 2 rows."""
    x, w, b, _, dout = _wide(d_in, d_out, 2, F32, seed=13)
    out, pre = linear.linear_gelu_fwd(x, w, b, "quick", save_pre=True, out=poison_(torch.empty(2, d_out)),
                                      pre=poison_(torch.empty(2, d_out)))  # fmt: skip
    atol, rtol = TOLERANCES[F32]
    ref = reference.linear_gelu_ref(x, w, b, "quick")
    assert_close_vs_ref(out, reference.linear_gelu_ref(x, w, b, "quick", upcast=False), ref, factor=2, atol=atol,
                        rtol=rtol, name="out")  # fmt: skip
    assert_close_vs_ref(pre, F.linear(x, w, b), F.linear(*_upcast(x, w, b)), factor=2, atol=atol, rtol=rtol,
                        name="pre")  # fmt: skip


def test_aot_covers_the_modern_widths():
    """The compiled launch shapes include so400m and ViT-H; 4304 is hinted divisible by 16, not 32."""

    assert (1152, 4304) in linear_aot.LAUNCH_SHAPES.values()
    assert (1280, 5120) in linear_aot.LAUNCH_SHAPES.values()
    values = linear_aot.launch_values("fc2", 197, 1152, 4304)
    units, divisible = linear_aot.launch_specialization(values)
    assert values["K"] == 4304 and "K" in divisible and 4304 % 32 != 0
    names = {c.name for c in linear_aot.aot_cases() if c.tier == "core"}
    for arch_tile in ("128x128x32", "128x128x64"):  # each arch's first tile
        for dtype in ("bf16", "fp16"):
            assert f"linear_gelu_quick-{dtype}-{arch_tile}" in names
            assert f"linear_residual_gamma_scaled_fp32res-{dtype}-{arch_tile}" in names
    gamma_cases = [c for c in linear_aot.aot_cases() if c.constexprs.get("HAS_GAMMA")]
    assert gamma_cases and all(c.signature["GAMMA"] == "*fp32" for c in gamma_cases)


# ---------------------------------------------------------------------------
# 5. qk-norm: LayerNorm over the (B, N, H, head_dim) q / k slices of a packed qkv, in place
# ---------------------------------------------------------------------------

QK_ATOL = {F32: 1e-4, F16: 1e-2, BF16: 5e-2}


@pytest.mark.parametrize("head_dim", [64, 72, 80])
@pytest.mark.parametrize("dtype", [F16, BF16], ids=_dtype_id)
def test_qk_norm_on_packed_qkv_views(head_dim, dtype):
    b, n, h = 2, 9, 3
    g = torch.Generator().manual_seed(head_dim)
    qkv = torch.randn(b, n, 3, h, head_dim, generator=g).to(dtype)
    w = (1 + 0.5 * torch.randn(head_dim, generator=g)).to(dtype)
    bias = (0.5 * torch.randn(head_dim, generator=g)).to(dtype)
    dout = torch.randn(b, n, h, head_dim, generator=g).to(dtype)
    for index in (0, 1):  # q, k
        view = qkv[:, :, index]
        base, rows_inner, stride_outer, stride_inner = norm._as_two_level_rows(view, head_dim)
        assert base.data_ptr() == view.data_ptr(), "the strided view must be read in place, not copied"
        assert (rows_inner, stride_outer, stride_inner) == (h, 3 * h * head_dim, head_dim)

        # launchers into poisoned buffers
        rows = b * n * h
        _, out, mean, rstd = norm.layer_norm_fwd(
            view, w, bias, 1e-6, out=poison_(torch.empty(view.shape, dtype=dtype)),
            mean=poison_(torch.empty(rows)), rstd=poison_(torch.empty(rows)),
        )  # fmt: skip
        ref = reference.layer_norm_ref(view, w, bias)
        eager = reference.layer_norm_ref(view, w, bias, upcast=False)
        assert_close_vs_ref(out, eager, ref, factor=2, atol=QK_ATOL[dtype], name="out")
        dx, dw, db = norm.layer_norm_bwd(dout, view, w, mean, rstd,
                                                dx=poison_(torch.empty(view.shape, dtype=dtype)))  # fmt: skip

        # autograd through the public op, gradients reaching the packed qkv
        def grads(fn, leaves):
            leaves = [t.detach().requires_grad_() for t in leaves]
            y = fn(leaves[0][:, :, index], *leaves[1:])
            return torch.autograd.grad(y, leaves, dout.to(y.dtype))

        ours = grads(lambda v, w, bb: norm.layer_norm(v, w, bb), (qkv, w, bias))
        pt = grads(lambda v, w, bb: reference.layer_norm_ref(v, w, bb, upcast=False), (qkv, w, bias))
        exp = grads(lambda v, w, bb: reference.layer_norm_ref(v, w, bb), _upcast(qkv, w, bias))
        assert torch.equal(ours[0][:, :, index], dx) and not ours[0][:, :, 1 - index].any()
        for name, o, e, r, slack in zip(("dqkv", "dweight", "dbias"), (ours[0], dw, db), pt, exp, (1, 10, 10)):
            assert_close_vs_ref(o, e, r, factor=2, atol=slack * QK_ATOL[dtype], name=name)


def test_two_level_rows_fall_back_to_a_copy_when_needed():
    """Layouts that do not fold into two row strides are copied to contiguous rows (still correct)."""
    x = torch.randn(2, 4, 3, 5, 16)
    for view, inner in ((x[:, :, 0], 5), (x.permute(2, 0, 3, 1, 4)[0], 1), (x[:, :, :, 0], 1), (x.reshape(-1, 16), 1)):
        base, rows_inner, stride_outer, stride_inner = norm._as_two_level_rows(view, 16)
        assert rows_inner == inner
        rows = math.prod(view.shape[:-1])
        storage = base.untyped_storage()
        flat = base.new_empty(0).set_(storage, base.storage_offset(), (storage.nbytes() // 4 - base.storage_offset(),))
        got = torch.stack([flat[(r // rows_inner) * stride_outer + (r % rows_inner) * stride_inner:][:16]
                           for r in range(rows)])  # fmt: skip
        torch.testing.assert_close(got, view.reshape(rows, 16), rtol=0, atol=0)


def test_aot_covers_qk_norm_launches():
    """qk-norm's LayerNorm launches compile for sm_80 and sm_90 with rows_inner = heads a runtime integer
    and the divisibility of the real strides (N = 72 unhinted, 64 and 80 hinted)."""
    cases = [c for c in norm_aot.aot_cases() if "_qk-" in c.name]
    assert {(c.name, c.arch) for c in cases} == {
        (f"{k}_qk-bf16-hd{d}", arch) for k in ("layer_norm_fwd", "layer_norm_bwd") for d in (64, 72, 80)
        for arch in ("sm80", "sm90")
    }  # fmt: skip
    for c in cases:
        head_dim = int(c.name.split("hd")[1])
        assert c.signature["rows_inner"] == "i32" and "rows_inner" not in c.constexprs
        assert ("N" in c.divisible) == (head_dim % 16 == 0) and "stride_x" in c.divisible


@pytest.mark.parametrize("head_dim", [64, 72, 80])
def test_qk_norm_launch_specializes_as_its_aot_case(head_dim, monkeypatch):
    """The arguments a qk-norm launch passes (recorded, nothing runs) give exactly the divisibility the
    compiled qk case declares, forward and backward, at the model's head count."""
    from test_norm_kernel import _LaunchRecorder, _type

    from fastvit.aot import divisible_args
    from fastvit.aot.norm import QK_NORM_HEADS

    heads = QK_NORM_HEADS[head_dim]
    fwd, bwd = _LaunchRecorder(norm._layer_norm_fwd_kernel), _LaunchRecorder(norm._layer_norm_bwd_kernel)
    monkeypatch.setattr(norm, "_layer_norm_fwd_kernel", fwd)
    monkeypatch.setattr(norm, "_layer_norm_bwd_kernel", bwd)
    qkv = torch.empty(2, 197, 3, heads, head_dim, dtype=BF16)
    w, stats = torch.empty(head_dim, dtype=BF16), torch.empty(2 * 197 * heads)
    norm.layer_norm_fwd(qkv[:, :, 0], w, w, 1e-6)
    norm.layer_norm_bwd(torch.empty(2, 197, heads, head_dim, dtype=BF16), qkv[:, :, 1], w, stats, stats)
    cases = {(c.name.split("_qk")[0], c.arch): c for c in norm_aot.aot_cases() if c.name.endswith(f"_qk-bf16-hd{head_dim}")}
    for name, recorder in (("layer_norm_fwd", fwd), ("layer_norm_bwd", bwd)):
        args, _ = recorder.calls.pop()
        assert args["rows_inner"] == heads and args["stride_x"] == 3 * heads * head_dim
        signature = {k: _type(v) for k, v in args.items()}
        values = {k: v for k, v in args.items() if isinstance(v, int) and k not in ("M", "rows_per_program")}
        for arch in ("sm80", "sm90"):
            case = cases[(name, arch)]
            assert set(case.divisible) == set(divisible_args(signature, values)), (name, arch)
            assert all(case.signature[k] == t for k, t in signature.items()), (name, arch)
