"""Fused LayerNorm / add+LayerNorm kernels against the fp64 reference.

Each parity case compares three things: the fused kernel, eager PyTorch in the
same dtype (``upcast=False``) and the fp64 reference (``upcast=True``); the
kernel's error may be at most 2x eager's plus ``atol``. Kernel outputs, saved
statistics, ``dx`` and the dW/dB partial-sum buffer are NaN-poisoned before
each launch, so an element the kernel fails to write fails the test.

On CPU the kernels run in the Triton interpreter, which is slow, so the default
run covers every row count and hidden size once per (op, dtype); the full grid
is marked ``slow`` (``-m slow``). On CUDA the full grid runs in bf16 and fp16.
"""

from __future__ import annotations

import zlib

import pytest
import torch
from parity import assert_close_vs_ref, poison_

from fastvit import shapes
from fastvit.kernels import norm as ln
from fastvit.aot import norm as norm_aot
from fastvit.kernels import tuning
from fastvit.kernels.reference import add_layer_norm_ref, layer_norm_ref

EPS = 1e-6
ATOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
ROWS = (1, 197, 4 * 197 + 3)
HIDDEN = (192, 768, 1000, 1280)
# Every row count and hidden size once, plus leading dims and the largest width.
COVER = [(1, 1280), (197, 1000), (4 * 197 + 3, 768), (197, 192), (2, 197, 192), (3, 4096)]
FULL = [(m, n) for m in ROWS for n in HIDDEN]
OPS = ("layer_norm", "add_layer_norm")
# on CUDA, every preset width (fastvit.shapes) too: a new preset's width enters that grid
PRESET_WIDTHS = [(197, n) for n in shapes.widths("wide") if n not in HIDDEN]


def _generator(*key) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def _make_inputs(op, shape, dtype, device, weight_dtype=None):
    """Seeded inputs and upstream gradients for one case."""
    g = _generator(op, shape, dtype, weight_dtype)
    n = shape[-1]
    weight_dtype = weight_dtype or dtype

    def randn(*size, dt=dtype, scale=1.0, shift=0.0):
        return (torch.randn(*size, generator=g) * scale + shift).to(device=device, dtype=dt)

    t = dict(x=randn(*shape), weight=randn(n, dt=weight_dtype, scale=0.5, shift=1.0),
             bias=randn(n, dt=weight_dtype, scale=0.5), dout=randn(*shape))
    if op == "add_layer_norm":
        t.update(y=randn(*shape), ds=randn(*shape))
    return t


def _reference(op, t, upcast):
    """Forward outputs and input gradients of the reference; fp64 leaves when ``upcast``."""
    names = ["x", "y", "weight", "bias"] if op == "add_layer_norm" else ["x", "weight", "bias"]
    cast = (lambda v: v.double()) if upcast else (lambda v: v)
    leaves = {k: cast(t[k]).detach().requires_grad_() for k in names}
    if op == "add_layer_norm":
        s, out = add_layer_norm_ref(leaves["x"], leaves["y"], leaves["weight"], leaves["bias"], EPS, upcast=upcast)
        outs, grads_out = {"s": s, "out": out}, (cast(t["ds"]), cast(t["dout"]))
    else:
        out = layer_norm_ref(leaves["x"], leaves["weight"], leaves["bias"], EPS, upcast=upcast)
        outs, grads_out = {"out": out}, (cast(t["dout"]),)
    grads = torch.autograd.grad(tuple(outs.values()), tuple(leaves.values()), grads_out)
    outs.update({f"d{k}": gr for k, gr in zip(names, grads)})
    return {k: v.detach() for k, v in outs.items()}


def _fused(op, t):
    """Forward and backward launchers on NaN-poisoned output buffers."""
    x, w, b = t["x"], t["weight"], t["bias"]
    m, n = x.numel() // x.shape[-1], x.shape[-1]
    add = op == "add_layer_norm"

    def poisoned(shape, dtype):
        return poison_(torch.empty(shape, dtype=dtype, device=x.device))

    s, out, mean, rstd = ln.layer_norm_fwd(
        x, w, b, EPS, t.get("y"),
        s=poisoned(x.shape, x.dtype) if add else None, out=poisoned(x.shape, x.dtype),
        mean=poisoned((m,), torch.float32), rstd=poisoned((m,), torch.float32),
    )
    programs, _ = ln.bwd_num_programs(m, n, x.device)
    dx, dw, db = ln.layer_norm_bwd(
        t["dout"], s if add else x, w, mean, rstd, t.get("ds"),
        dx=poisoned(x.shape, x.dtype), partial=poisoned((2, programs, n), torch.float32),
    )
    res = {"out": out, "dx": dx, "dweight": dw, "dbias": db, "mean": mean, "rstd": rstd}
    if add:
        res.update(s=s, dy=dx)
    return res


def _check_parity(op, shape, dtype, device, weight_dtype=None):
    t = _make_inputs(op, shape, dtype, device, weight_dtype)
    got = _fused(op, t)
    ref = _reference(op, t, upcast=True)
    eager = _reference(op, t, upcast=False)
    for name in ref:
        assert got[name].dtype == eager[name].dtype, f"{name}: dtype {got[name].dtype} != eager {eager[name].dtype}"
        assert_close_vs_ref(got[name], eager[name], ref[name], factor=2, atol=ATOL[dtype], name=name)

    # The saved statistics are fp32 and describe exactly the normalized tensor (s for the add variant).
    normalized = (ref["s"] if op == "add_layer_norm" else t["x"]).to(dtype).double().reshape(-1, shape[-1])
    var, mean = torch.var_mean(normalized, dim=1, unbiased=False)
    assert got["mean"].dtype == got["rstd"].dtype == torch.float32
    torch.testing.assert_close(got["mean"].double(), mean, rtol=1e-5, atol=1e-6, msg=lambda m: f"mean: {m}")
    torch.testing.assert_close(got["rstd"].double(), (var + EPS).rsqrt(), rtol=1e-5, atol=0, msg=lambda m: f"rstd: {m}")


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("shape", COVER, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_parity(op, dtype, shape):
    _check_parity(op, shape, dtype, "cpu")


@pytest.mark.parametrize("op", OPS)
def test_parity_fp32_weights_with_fp16_inputs(op):
    _check_parity(op, (197, 768), torch.float16, "cpu", weight_dtype=torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [s for s in FULL if s not in COVER], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_parity_sweep(op, dtype, shape):
    _check_parity(op, shape, dtype, "cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("weight_dtype", [None, torch.float32], ids=["same", "fp32w"])
@pytest.mark.parametrize("shape", FULL + [(8, 197, 768), (3, 4096)] + PRESET_WIDTHS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_parity_cuda(op, dtype, shape, weight_dtype):
    _check_parity(op, shape, dtype, "cuda", weight_dtype)


def _strided_input(layout):
    """A (2, 197, 384) fp32 leaf that is a strided view, not a contiguous tensor."""
    if layout == "row_slice":  # leading dims do not merge: copied
        return torch.randn(2, 198, 384)[:, 1:].requires_grad_()
    if layout == "padded_rows":  # rows of a wider buffer: read in place with its row stride
        return torch.randn(2, 197, 512)[..., :384].requires_grad_()
    return torch.randn(2, 384, 197).transpose(1, 2).requires_grad_()  # last dim strided: copied


@pytest.mark.parametrize("layout", ["row_slice", "padded_rows", "transposed"])
def test_public_functions_on_strided_inputs(layout):
    torch.manual_seed(0)
    x, y = _strided_input(layout), _strided_input(layout)
    w, b = (1 + 0.5 * torch.randn(384)).requires_grad_(), (0.5 * torch.randn(384)).requires_grad_()
    dout, ds = torch.randn(2, 197, 384), torch.randn(2, 197, 384)
    assert not x.is_contiguous()
    assert (ln._as_rows(x, 384).data_ptr() == x.data_ptr()) == (layout == "padded_rows")
    s, out = ln.add_layer_norm(x, y, w, b)
    out2 = ln.layer_norm(x, w, b)
    got = [s, out, out2, *torch.autograd.grad((s, out, out2), (x, y, w, b), (ds, dout, dout))]
    assert s.is_contiguous() and out.is_contiguous() and out2.is_contiguous()

    def ref(upcast):
        cast = (lambda v: v.double()) if upcast else (lambda v: v)
        leaves = [cast(t).detach().requires_grad_() for t in (x, y, w, b)]
        s, out = add_layer_norm_ref(*leaves, EPS, upcast=upcast)
        out2 = layer_norm_ref(leaves[0], leaves[2], leaves[3], EPS, upcast=upcast)
        return [s, out, out2, *torch.autograd.grad((s, out, out2), leaves, tuple(map(cast, (ds, dout, dout))))]

    names = ["s", "out", "out_ln", "dx", "dy", "dweight", "dbias"]
    for name, g, e, r in zip(names, got, ref(False), ref(True)):
        assert_close_vs_ref(g, e, r, factor=2, atol=ATOL[torch.float32], name=name)


@pytest.mark.parametrize("op", OPS)
def test_zero_rows(op):
    t = _make_inputs(op, (0, 768), torch.float32, "cpu")
    got = _fused(op, t)
    assert got["out"].shape == (0, 768) and got["mean"].shape == (0,)
    assert torch.equal(got["dweight"], torch.zeros(768)) and torch.equal(got["dbias"], torch.zeros(768))


# --------------------------------------------------------------------------- determinism and partitioning


@pytest.mark.parametrize("op", OPS)
def test_backward_is_bitwise_deterministic(op, device):
    # On CUDA each of the 4-per-SM programs loops over many rows; on CPU 7 programs share 394 rows.
    shape, dtype = ((64, 197, 768), torch.bfloat16) if device == "cuda" else ((2, 197, 384), torch.float32)
    t = _make_inputs(op, shape, dtype, device)
    first, second = _fused(op, t), _fused(op, t)
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs between two runs"


@pytest.mark.parametrize("n", [192, 384, 768, 1000, 1280, 4096])
def test_backward_partition_covers_rows_once(n):
    block_m, _ = ln.block_sizes(n)
    for m in [1, 2, 7, 197, 788, 791, 10_000]:
        programs, per_program = ln.bwd_num_programs(m, n, torch.device("cpu"))
        assert per_program % block_m == 0
        assert (programs - 1) * per_program < m <= programs * per_program, (m, programs, per_program)


# --------------------------------------------------------------------------- fp32 in, half out


def check_out_dtype(out_dtype, device):
    """fp32 x normalized straight into ``out_dtype`` (a block norm under autocast):
    against eager (fp32 LayerNorm, then the cast the next GEMM would make) and the
    fp64 reference; x's gradient stays fp32."""
    t = _make_inputs("layer_norm", (197, 768), torch.float32, device)
    x, w, b, dout = t["x"], t["weight"], t["bias"], t["dout"].to(out_dtype)
    out, mean, rstd = ln.layer_norm_fwd_op(x, w, b, EPS, out_dtype)
    buf = poison_(torch.empty(x.shape, dtype=out_dtype, device=device))
    _, launched, _, _ = ln.layer_norm_fwd(x, w, b, EPS, out=buf, out_dtype=out_dtype)
    assert out.dtype == out_dtype and torch.equal(launched, out)
    ref = layer_norm_ref(x, w, b, EPS)
    eager = layer_norm_ref(x, w, b, EPS, upcast=False).to(out_dtype)
    assert_close_vs_ref(out, eager, ref, factor=2, atol=ATOL[out_dtype], name="out")
    leaves = [v.detach().requires_grad_() for v in (x, w, b)]
    grads = torch.autograd.grad(ln.layer_norm(*leaves, EPS, out_dtype=out_dtype), leaves, dout)
    assert [g.dtype for g in grads] == [torch.float32] * 3
    eager_leaves = [v.detach().requires_grad_() for v in (x, w, b)]
    eager_grads = torch.autograd.grad(layer_norm_ref(*eager_leaves, EPS, upcast=False).to(out_dtype), eager_leaves, dout)
    ref_leaves = [v.detach().double().requires_grad_() for v in (x, w, b)]
    ref_grads = torch.autograd.grad(layer_norm_ref(*ref_leaves, EPS), ref_leaves, dout.double())
    for name, got, e, r in zip(("dx", "dweight", "dbias"), grads, eager_grads, ref_grads):
        assert_close_vs_ref(got, e, r, factor=2, atol=ATOL[torch.float32], name=name)


def test_fp32_input_to_fp16_output(device):
    check_out_dtype(torch.float16, device)


@pytest.mark.cuda
def test_fp32_input_to_bf16_output_cuda():
    # On CPU the interpreter's fp32 -> bf16 cast truncates instead of rounding to nearest.
    check_out_dtype(torch.bfloat16, "cuda")


def test_out_dtype_equal_to_inputs_is_the_plain_op():
    x, w, b = torch.randn(3, 192), 1 + torch.randn(192), torch.randn(192)
    assert torch.equal(ln.layer_norm(x, w, b, out_dtype=torch.float32), ln.layer_norm(x, w, b))


# --------------------------------------------------------------------------- registration


def _op_args(name):
    torch.manual_seed(0)
    x, y, dout, ds = (torch.randn(2, 3, 192) for _ in range(4))
    w, b = 1 + torch.randn(192), torch.randn(192)
    _, mean, rstd = ln.layer_norm_fwd_op(x, w, b, EPS)
    if name == "layer_norm_fwd":
        return (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), EPS, None)
    if name == "layer_norm_fwd_to_fp16":
        return (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), EPS, torch.float16)
    if name == "add_layer_norm_fwd":
        return (x.requires_grad_(), y.requires_grad_(), w.requires_grad_(), b.requires_grad_(), EPS)
    if name == "layer_norm_bwd":
        return (dout, x, w, mean, rstd)
    return (dout, ds, x, w, mean, rstd)


@pytest.mark.parametrize("name", ["layer_norm_fwd", "layer_norm_fwd_to_fp16", "layer_norm_bwd", "add_layer_norm_fwd", "add_layer_norm_bwd"])
def test_opcheck(name):
    op = name.removesuffix("_to_fp16")
    torch.library.opcheck(getattr(torch.ops.fastvit, op).default, _op_args(name))


def test_torch_compile_fullgraph():
    def block(x, y, w, b):
        s, h = ln.add_layer_norm(x, y, w, b)
        return s, ln.layer_norm(h, w, b)

    torch.manual_seed(0)
    inputs = [torch.randn(2, 5, 192), torch.randn(2, 5, 192), 1 + torch.randn(192), torch.randn(192)]
    grads_out = (torch.randn(2, 5, 192), torch.randn(2, 5, 192))
    results = []
    for fn in (block, torch.compile(block, fullgraph=True, backend="aot_eager")):
        leaves = [t.clone().requires_grad_() for t in inputs]
        outs = fn(*leaves)
        results.append([*outs, *torch.autograd.grad(outs, leaves, grads_out)])
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- input validation


def _bad_call(case):
    x, w, b = torch.randn(4, 192), torch.ones(192), torch.zeros(192)
    return {
        "x_not_tensor": lambda: ln.layer_norm(x.tolist(), w, b),
        "x_0dim": lambda: ln.layer_norm(torch.tensor(1.0), w, b),
        "x_int": lambda: ln.layer_norm(x.int(), w, b),
        "x_fp64": lambda: ln.layer_norm(x.double(), w.double(), b.double()),
        "x_too_wide": lambda: ln.layer_norm(torch.randn(2, 4097), torch.ones(4097), torch.zeros(4097)),
        "weight_shape": lambda: ln.layer_norm(x, torch.ones(193), b),
        "bias_shape": lambda: ln.layer_norm(x, w, torch.zeros(1, 192)),
        "weight_not_tensor": lambda: ln.layer_norm(x, 1.0, b),
        "weight_dtype": lambda: ln.layer_norm(x, w.bfloat16(), b.bfloat16()),
        "bias_dtype_mismatch": lambda: ln.layer_norm(x.half(), w.half(), b),
        "weight_device": lambda: ln.layer_norm(x, w.to("meta"), b),
        "y_shape": lambda: ln.add_layer_norm(x, x[:2], w, b),
        "y_dtype": lambda: ln.add_layer_norm(x, x.half(), w, b),
        "y_device": lambda: ln.add_layer_norm(x, x.to("meta"), w, b),
        "out_buffer": lambda: ln.layer_norm_fwd(x, w, b, EPS, out=torch.empty(4, 193)),
        "out_dtype": lambda: ln.layer_norm(x, w, b, out_dtype=torch.float64),
        "out_buffer_dtype": lambda: ln.layer_norm_fwd(x, w, b, EPS, out=torch.empty(4, 192), out_dtype=torch.float16),
    }[case]


@pytest.mark.parametrize(
    "case, error, message",
    [
        ("x_not_tensor", TypeError, "x: expected a tensor with at least 1 dim, got list"),
        ("x_0dim", TypeError, "got a 0-dim tensor"),
        ("x_int", TypeError, "x: expected float32, float16 or bfloat16, got torch.int32"),
        ("x_fp64", TypeError, "got torch.float64"),
        ("x_too_wide", ValueError, "hidden size .* in 0..4096, got 4097"),
        ("weight_shape", ValueError, r"weight: expected shape \(192,\) .* got \(193,\)"),
        ("bias_shape", ValueError, r"bias: expected shape \(192,\) .* got \(1, 192\)"),
        ("weight_not_tensor", TypeError, "weight: expected a tensor .* got float"),
        ("weight_dtype", TypeError, "weight: expected torch.float32 .* got torch.bfloat16"),
        ("bias_dtype_mismatch", TypeError, "bias: expected weight's dtype torch.float16, got torch.float32"),
        ("weight_device", ValueError, "weight: expected device cpu like x, got meta"),
        ("y_shape", ValueError, r"y: expected shape \(4, 192\) like x, got \(2, 192\)"),
        ("y_dtype", TypeError, "y: expected a torch.float32 tensor like x, got torch.float16"),
        ("y_device", ValueError, "y: expected device cpu like x, got meta"),
        ("out_buffer", ValueError, r"output buffer: expected contiguous torch.float32 of shape \(4, 192\)"),
        ("out_dtype", TypeError, "out_dtype: expected None, torch.float32, torch.float16 or torch.bfloat16, got torch.float64"),
        ("out_buffer_dtype", ValueError, "output buffer: expected contiguous torch.float16 .* got torch.float32"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else "",
)
def test_invalid_inputs_raise(case, error, message):
    with pytest.raises(error, match=message):
        _bad_call(case)()


def test_cpu_tensor_without_interpreter_raises(monkeypatch):
    monkeypatch.setattr(tuning, "interpreting", lambda: False)
    with pytest.raises(ValueError, match="expected a CUDA tensor .* got device cpu"):
        ln.layer_norm(torch.randn(4, 192), torch.ones(192), torch.zeros(192))


# --------------------------------------------------------------------------- layouts of every tensor argument


def _layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    """``t``'s values (as a leaf requiring grad, or a view of one) in another memory layout."""
    if kind == "contiguous":
        return t.clone().requires_grad_()
    if kind == "strided":  # every other element of a wider buffer (last dim not unit-stride)
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide.requires_grad_()[..., ::2]
    if kind == "expanded":  # one value (one row for a matrix) broadcast with stride 0
        base = t[..., :1].clone() if t.dim() == 1 else t[:1].clone()
        return base.requires_grad_().expand(t.shape)
    raise ValueError(kind)


LAYOUT_CASES = [
    ("weight", "strided"), ("weight", "expanded"), ("bias", "strided"), ("bias", "expanded"),
    ("x", "strided"), ("x", "expanded"), ("y", "strided"), ("y", "expanded"), ("all", "strided"), ("all", "expanded"),
]  # fmt: skip


@pytest.mark.parametrize("arg, kind", LAYOUT_CASES, ids=lambda v: v)
def test_every_tensor_argument_may_be_strided_or_expanded(arg, kind):
    """Issue 11 item 2: a strided or stride-0 weight/bias/input/residual gives the
    reference's values and gradients (the kernels honour row strides and copy the rest)."""
    torch.manual_seed(0)
    n, m = 48, 6
    base = dict(x=torch.randn(m, n), y=torch.randn(m, n), weight=1 + 0.5 * torch.randn(n), bias=0.5 * torch.randn(n))
    dout, ds = torch.randn(m, n), torch.randn(m, n)

    def run(impl):
        t = {k: _layout(v, kind if arg in (k, "all") else "contiguous") for k, v in base.items()}
        if impl == "fused":
            s, out = ln.add_layer_norm(t["x"], t["y"], t["weight"], t["bias"], EPS)
            out2 = ln.layer_norm(t["x"], t["weight"], t["bias"], EPS)
        else:
            s, out = add_layer_norm_ref(t["x"], t["y"], t["weight"], t["bias"], EPS, upcast=False)
            out2 = layer_norm_ref(t["x"], t["weight"], t["bias"], EPS, upcast=False)
        leaves = [v._base if v._base is not None else v for v in t.values()]
        return [s, out, out2, *torch.autograd.grad((s, out, out2), leaves, (ds, dout, dout))]

    fused, eager = run("fused"), run("eager")
    for name, got, want in zip(["s", "out", "out_ln", "dx", "dy", "dweight", "dbias"], fused, eager):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda msg: f"{arg} {kind}, {name}: {msg}")


@pytest.mark.parametrize("shape", [(3, 0), (0, 0), (2, 0, 5)], ids=str)
def test_zero_size_tensors(shape):
    """Zero rows, or a zero-width hidden dim: the outputs and gradients torch gives (empty, zeros)."""
    n = shape[-1]
    x, y = torch.randn(shape, requires_grad=True), torch.randn(shape, requires_grad=True)
    w, b = torch.ones(n, requires_grad=True), torch.zeros(n, requires_grad=True)
    s, out = ln.add_layer_norm(x, y, w, b)
    out2 = ln.layer_norm(x, w, b)
    assert s.shape == out.shape == out2.shape == x.shape
    grads = torch.autograd.grad((s.sum() + out.sum() + out2.sum()), (x, y, w, b))
    assert [g.shape for g in grads] == [x.shape, y.shape, w.shape, b.shape]
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads[2:])
    _, mean, rstd = ln.layer_norm_fwd_op(x.detach(), w.detach(), b.detach(), EPS)
    _, ref_mean, ref_rstd = torch.ops.aten.native_layer_norm(x.detach(), (n,), w.detach(), b.detach(), EPS)
    if mean.numel():  # torch: mean 0, rstd NaN for an empty row
        assert torch.equal(mean, ref_mean.flatten()) and torch.isnan(rstd).all() and torch.isnan(ref_rstd).all()


# --------------------------------------------------------------------------- non-finite and huge values


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("scale", [1e30, 1e36])
def test_variance_overflow_propagates_nan_like_torch(dtype, scale):
    """Issue 11 item 7: at |x| ~ 1e30 the fp32 variance overflows. torch returns NaN;
    the kernel used to return the bias (finite and wrong). Now NaN, where torch has it."""
    torch.manual_seed(0)
    x = (torch.randn(4, 64) * scale).to(dtype)
    w, b = torch.ones(64, dtype=dtype), torch.full((64,), 0.5, dtype=dtype)
    got = ln.layer_norm(x, w, b)
    want = torch.nn.functional.layer_norm(x, (64,), w, b, EPS)
    assert not torch.isfinite(want).any()  # what the fix follows
    assert torch.equal(torch.isnan(got), torch.isnan(want)), got
    s, got_add = ln.add_layer_norm(x, torch.zeros_like(x), w, b)
    assert torch.equal(torch.isnan(got_add), torch.isnan(want))


def test_inf_and_nan_inputs_give_nan_rows_like_torch():
    x = torch.randn(5, 32)
    x[1, 3], x[3, 0] = float("inf"), float("nan")
    w, b = torch.ones(32), torch.zeros(32)
    got, want = ln.layer_norm(x, w, b), torch.nn.functional.layer_norm(x, (32,), w, b, EPS)
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.isnan(got[[1, 3]]).all()
    torch.testing.assert_close(got[[0, 2, 4]], want[[0, 2, 4]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale, shift", [(1e15, 0.0), (1e17, 1e18), (1.0, 1e6), (1e-20, 0.0)])
def test_finite_but_huge_or_tiny_inputs_match_the_reference(scale, shift):
    """Where fp32 can hold the variance the two-pass (mean, then centred variance)
    result matches fp64 (a one-pass E[x^2] - E[x]^2 loses everything at shift 1e6)."""
    torch.manual_seed(1)
    x = torch.randn(6, 96, dtype=torch.float64) * scale + shift
    w, b = 1 + 0.5 * torch.randn(96, dtype=torch.float64), 0.5 * torch.randn(96, dtype=torch.float64)
    got = ln.layer_norm(x.float(), w.float(), b.float(), EPS)
    eager = layer_norm_ref(x.float(), w.float(), b.float(), EPS, upcast=False)
    ref = layer_norm_ref(x.float().double(), w.float().double(), b.float().double(), EPS)
    assert torch.isfinite(got).all()
    assert_close_vs_ref(got, eager, ref, factor=2, atol=1e-4, name=f"out at scale {scale:g}, shift {shift:g}")


# --------------------------------------------------------------------------- ahead-of-time compile

AOT_CASES = norm_aot.aot_cases()


class _LaunchRecorder:
    """Stands in for an autotuned kernel: records what the launcher passes, launches nothing."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **constexprs):
            self.calls.append((dict(zip(self.kernel.arg_names, args)), constexprs))

        return launch


def _type(v):
    if isinstance(v, torch.Tensor):
        return "*" + {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[v.dtype]
    return "fp32" if isinstance(v, float) else "i32"


def _model_launches(monkeypatch):
    """(kernel name, args, constexprs) of each LayerNorm launch a preset model makes, per
    preset width, dtype and kernel, as the launchers pass them on a GPU (ROW_TILE of a GPU)."""
    import fastvit

    widths = sorted({fastvit.get_config(name).embed_dim for name in fastvit.list_models()} | {1152})
    fwd, bwd = _LaunchRecorder(ln._layer_norm_fwd_kernel.fn), _LaunchRecorder(ln._layer_norm_bwd_kernel.fn)
    monkeypatch.setattr(ln, "_layer_norm_fwd_kernel", fwd)
    monkeypatch.setattr(ln, "_layer_norm_bwd_kernel", bwd)
    gpu_sizes = ln.block_sizes
    monkeypatch.setattr(ln, "block_sizes", lambda n, row_tile=ln.GPU_ROW_TILE: gpu_sizes(n, row_tile))
    launches = []
    rows = 64 * 197 + 1  # a batch-dependent row count (not divisible by 16): the general binary
    for n in widths:
        for dtype in (torch.bfloat16, torch.float16):
            x, w = torch.empty(rows, n, dtype=dtype), torch.empty(n, dtype=dtype)
            stats = torch.empty(rows)
            for name, call in (
                ("layer_norm_fwd", lambda: ln.layer_norm_fwd(x, w, w, EPS)),
                ("add_layer_norm_fwd", lambda: ln.layer_norm_fwd(x, w, w, EPS, x)),
                ("layer_norm_fwd-fp32-in", lambda: ln.layer_norm_fwd(x.float(), w.float(), w.float(), EPS, out_dtype=dtype)),
                ("layer_norm_bwd", lambda: ln.layer_norm_bwd(x, x, w, stats, stats)),
                ("add_layer_norm_bwd", lambda: ln.layer_norm_bwd(x, x, w, stats, stats, x)),
                # fp32 stream, half norm output (autocast): the plain backward, and the fork's with the residual's grad
                ("layer_norm_bwd-fp32-in", lambda: ln.layer_norm_bwd(x, x.float(), w.float(), stats, stats)),
                ("add_layer_norm_bwd-fp32-in", lambda: ln.layer_norm_bwd(x, x.float(), w.float(), stats, stats, x.float())),
            ):
                recorder = bwd if "_bwd" in name else fwd
                call()
                args, constexprs = recorder.calls.pop()
                launches.append((name, n, args, constexprs))
    return launches


def test_aot_cases_compile_every_launch_the_models_make(monkeypatch):
    """For every preset width (and 1152), dtype and kernel, and every shipped config of
    each architecture: an AOT case with the launch's argument types, constexprs and
    divisibility (pointers, and the ints Triton marks: the row strides and N when they
    divide by 16; the batch-dependent row counts left unmarked)."""
    from fastvit.aot import divisible_args

    index = {}
    for c in AOT_CASES:
        key = (c.arch, c.fn, tuple(sorted(c.signature.items())), tuple(sorted(c.constexprs.items())), c.divisible,
               c.num_warps, c.num_stages)  # fmt: skip
        index[key] = c
    launches = _model_launches(monkeypatch)
    assert len(launches) == len({n for _, n, _, _ in launches}) * 2 * 7  # widths x dtypes x kernels
    missing = []
    for name, n, args, constexprs in launches:
        signature = {k: _type(v) for k, v in args.items()}
        # Triton makes an integer argument equal to 1 a constant (rows_inner of every non-qk-norm layout)
        ones = {k: 1 for k, v in args.items() if type(v) is int and v == 1}
        signature |= dict.fromkeys(ones, "constexpr")
        constexprs = {**constexprs, **ones}
        values = {k: v for k, v in args.items() if isinstance(v, int) and k not in ("M", "rows_per_program")}
        divisible = divisible_args(signature, values)
        assert ("N" in divisible) == (n % 16 == 0) and ("stride_x" in divisible) == (n % 16 == 0)
        fn = norm_aot._layer_norm_bwd_kernel if "_bwd" in name else norm_aot._layer_norm_fwd_kernel
        table = ln.BWD_CONFIGS if "_bwd" in name else ln.FWD_CONFIGS
        for arch in ("sm80", "sm90"):
            for entry in table[arch] + table["default"]:
                meta, launch = tuning.split(entry)
                full = {**{k: "constexpr" for k in {**constexprs, **meta}}, **signature}
                key = (arch, fn, tuple(sorted(full.items())), tuple(sorted({**constexprs, **meta}.items())), divisible,
                       launch["num_warps"], launch["num_stages"])  # fmt: skip
                if key not in index:
                    missing.append((arch, name, n, signature.get("X"), entry))
    assert not missing, missing[:5]


def test_aot_cases_check_vector_loads_and_pipelined_copies():
    for c in AOT_CASES:  # every preset width divides by 16
        if "_qk-" in c.name:  # qk-norm's head-dim rows (72 does not divide by 16): compile, registers, spills only
            continue
        if c.fn is norm_aot._layer_norm_bwd_kernel:
            assert c.expect_ptx == ("cp.async.cg.shared.global",), c
        else:
            assert c.forbid_ptx or c.expect_ptx == ("ld.global.v4",), c
        if c.constexprs["BLOCK_N"] >= 1024:  # ViT-B and wider: no scalar loads at all
            assert c.forbid_ptx, c
    core = {(c.name.split("-N")[0], c.arch) for c in AOT_CASES if c.tier == "core" and "_qk-" not in c.name}
    # both archs: LayerNorm's four kernels in both dtypes plus fp32-in (fwd, both bwd) in both dtypes;
    # RMSNorm's three (fwd, bwd, the fork's bwd) in bf16, each also fp32-in
    assert len(core) == 2 * (4 * 2 + 3 * 2 + 3 + 3)
