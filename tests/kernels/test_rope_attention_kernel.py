"""The fused rotary attention (forward and backward) against the fp64 reference.

Parity follows the flash-attention rule (tests/parity.py): the kernel's max error against
``rope_attention_ref(upcast=True)`` (fp64) may be at most twice the error of eager PyTorch in the
same dtype (``rope_attention_ref(upcast=False)``: rotate in fp32, cast back, attend), plus a small
atol, for the output and for dq, dk and dv. Every kernel output (out, lse, delta, dq, dk, dv) is
NaN-poisoned before the launch, so an element the kernel fails to write fails the test.

On the CPU the kernels run in the Triton interpreter: the default run is a few tiny shapes
covering odd lengths, prefix tokens (none, one, five, all), both pair layouts, shared and per-head
tables, head dims 64 and 72 (80 and 128 with ``-m slow``), fp32 and fp16, and one bf16 case (the
interpreter's own bf16 products are wrong; the shared tile helpers run them in fp64 there, see
fastvit.kernels._attention_tiles); the bf16 grid runs on CUDA.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch
from parity import assert_close_vs_ref, poison_

from fastvit.kernels import flash_rope_attention as rope, ops
from fastvit.kernels.reference import rope_attention_ref, rope_rotate_ref

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
ATOL = {F32: 1e-5, F16: 1e-4, BF16: 1e-3}


def _randn(*shape, key, dtype=F32, device="cpu", scale=1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))
    return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)


def _inputs(b, h, n, d, dtype, device, num_prefix=0, per_head=False):
    """q, k, v, dO (B, H, N, D) and fp32 sin / cos tables of random angles."""
    key = (b, h, n, d, dtype, num_prefix, per_head)
    q, k, v, do = (_randn(b, h, n, d, key=(key, name), dtype=dtype, device=device) for name in "qkvo")
    rows = (h, n - num_prefix, d // 2) if per_head else (n - num_prefix, d // 2)
    angle = _randn(*rows, key=(key, "angle"), device=device, scale=3.0)
    return q, k, v, do, angle.sin(), angle.cos()


def _poisoned_like(t: torch.Tensor, dtype=None) -> torch.Tensor:
    return poison_(torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device))


def _run_kernels(q, k, v, do, sin, cos, num_prefix, rotate_half, scale):
    """The forward and backward launchers on NaN-poisoned buffers: (out, lse, dq, dk, dv)."""
    out, lse = rope.rope_attention_fwd(q, k, v, sin, cos, num_prefix, rotate_half, scale, out=_poisoned_like(q),
                                       lse=_poisoned_like(q[..., 0], F32))  # fmt: skip
    dq, dk, dv = rope.rope_attention_bwd(
        do, q, k, v, sin, cos, out, lse, num_prefix, rotate_half, scale,
        dq=_poisoned_like(q), dk=_poisoned_like(k), dv=_poisoned_like(v), delta=_poisoned_like(lse),
    )  # fmt: skip
    return out, lse, dq, dk, dv


def _reference(q, k, v, do, sin, cos, num_prefix, rotate_half, scale, upcast):
    """(out, dq, dk, dv): fp64 with ``upcast``, else eager in the inputs' dtype (rotation in fp32)."""
    dtype = torch.float64 if upcast else q.dtype
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    out = rope_attention_ref(*leaves, sin, cos, num_prefix, rotate_half, scale, upcast=upcast)
    out.backward(do.to(dtype))
    return (out.detach(), *(t.grad for t in leaves))


def _check_parity(q, k, v, do, sin, cos, num_prefix=0, rotate_half=False, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    got = _run_kernels(q, k, v, do, sin, cos, num_prefix, rotate_half, scale)
    ref = _reference(q, k, v, do, sin, cos, num_prefix, rotate_half, scale, upcast=True)
    eager = _reference(q, k, v, do, sin, cos, num_prefix, rotate_half, scale, upcast=False)
    out, lse, *grads = got
    for name, g, exp, pt in zip(("out", "dq", "dk", "dv"), (out, *grads), ref, eager):
        assert g.dtype == q.dtype, name
        assert_close_vs_ref(g, pt, exp, factor=2.0, atol=ATOL[q.dtype], name=name)
    qr, kr = (rope_rotate_ref(t.double(), sin.double(), cos.double(), num_prefix, rotate_half) for t in (q, k))
    lse_ref = torch.logsumexp(scale * qr @ kr.transpose(-2, -1), dim=-1)
    # the kernel's scores are of q, k rotated then rounded to their dtype: lse is off by that rounding
    torch.testing.assert_close(lse.double(), lse_ref, rtol=1e-5, atol={F32: 1e-5, F16: 1e-3, BF16: 1e-2}[q.dtype])


# (B, H, N, D, num_prefix, rotate_half, per-head tables, dtype)
COVER = [
    (1, 2, 13, 64, 1, False, False, F32),  # a class token, EVA's interleaved pairs
    (1, 2, 21, 64, 5, True, True, F16),  # class + 4 registers, DINOv3's halves, per-head tables
    (2, 1, 17, 72, 0, False, True, F32),  # no prefix; 36 pairs in a 64-wide half tile
    (1, 3, 21, 72, 5, True, False, F16),
    (1, 1, 70, 64, 1, False, False, F16),  # two query and key blocks, the last partial
    (1, 2, 19, 64, 1, False, True, BF16),  # bf16 through the tile helpers' interpreter path (fp64 products)
]
SLOW = [
    (1, 2, 197, 80, 1, False, False, F32),
    (2, 2, 201, 80, 5, True, True, F16),
    (1, 1, 133, 128, 1, True, False, F16),
    (1, 2, 65, 88, 1, False, True, F32),
    (1, 1, 40, 2, 1, False, False, F32),  # one pair
]
CUDA = [(2, 12, n, d, p, rh, ph, dt) for n, p in ((197, 1), (201, 5), (257, 1)) for d in (64, 72, 80, 88)
        for rh in (False, True) for ph in (False, True) for dt in (BF16, F16)]  # fmt: skip


def _id(case) -> str:
    b, h, n, d, p, rh, ph, dtype = case
    return f"B{b}-H{h}-N{n}-D{d}-P{p}-{'half' if rh else 'pairs'}{'-heads' if ph else ''}-{str(dtype)[6:]}"


def _parity(case, device):
    b, h, n, d, p, rh, ph, dtype = case
    q, k, v, do, sin, cos = _inputs(b, h, n, d, dtype, device, p, ph)
    _check_parity(q, k, v, do, sin, cos, p, rh)


@pytest.mark.parametrize("case", COVER, ids=_id)
def test_parity(case, device):
    _parity(case, device)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW, ids=_id)
def test_parity_slow(case, device):
    _parity(case, device)


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA, ids=_id)
def test_parity_cuda(case):
    _parity(case, "cuda")


def _forced_cases():
    """(pass, entry) for every distinct entry of the three kernels' tables, "default" included."""
    seen, cases = set(), []
    for pass_name, table in rope.CONFIGS.items():
        for entry in (e for entries in table.values() for e in entries):
            key = (pass_name, *sorted(entry.items()))
            if key not in seen:
                seen.add(key)
                label = f"{pass_name}-m{entry['BLOCK_M']}n{entry['BLOCK_N']}w{entry['num_warps']}s{entry['num_stages']}"
                cases.append(pytest.param(pass_name, entry, id=label))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("pass_name, entry", _forced_cases())
def test_every_shipped_config_computes_the_op(pass_name, entry, device):
    """Each table entry forced alone (the other kernels on their defaults): several query and key
    blocks, the last partial, 5 prefix tokens, per-head tables, under the same rule."""
    import triton

    from fastvit.gpucheck.configs import forced
    from fastvit.kernels import tuning

    def config(e):
        meta, launch = tuning.split(e)
        return triton.Config(meta, **launch)

    tuners = {name: kernel for name, kernel in rope.KERNELS.items() if name in rope.CONFIGS}
    others = [(tuners[p], config(rope.CONFIGS[p]["default"][0])) for p in tuners if p != pass_name]
    with forced(tuners[pass_name], config(entry), others):
        _parity((1, 1, 133, 64, 5, True, True, F16), device)
        assert tuners[pass_name].best_config.kwargs == tuning.split(entry)[0]


def test_every_token_a_prefix_and_a_negative_scale(device):
    """num_prefix = N (an empty table: nothing rotates) is plain attention; a negative scale works."""
    q, k, v, do, sin, cos = _inputs(1, 2, 9, 64, F32, device, num_prefix=9)
    assert sin.shape == (0, 32)
    _check_parity(q, k, v, do, sin, cos, 9, False)
    q, k, v, do, sin, cos = _inputs(1, 2, 9, 64, F32, device, num_prefix=2)
    _check_parity(q, k, v, do, sin, cos, 2, True, scale=-0.2)


def test_packed_views_and_gradients_through_the_public_function(device):
    """q, k, v strided views of one packed (B, N, 3, H, D) projection, a stride-0 output gradient
    (``out.sum()``): the public function's gradients match the reference's."""
    b, h, n, d = 2, 3, 11, 64
    qkv = _randn(b, n, 3, h, d, key="packed", device=device)
    _, _, _, _, sin, cos = _inputs(1, h, n, d, F32, device, num_prefix=1, per_head=True)
    grads = []
    for fn in (lambda *t: rope.rope_attention(*t, sin, cos, num_prefix=1),
               lambda *t: rope_attention_ref(*t, sin, cos, 1, upcast=False)):  # fmt: skip
        leaf = qkv.clone().requires_grad_()
        q, k, v = (leaf.select(2, i).transpose(1, 2) for i in range(3))
        out = fn(q, k, v)
        out.sum().backward()
        grads.append((out.detach(), leaf.grad))
    assert grads[0][0].shape == (b, h, n, d) and grads[0][0].transpose(1, 2).is_contiguous()
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_rotation_is_applied():
    """The op differs from attention without rotation (the test above would pass a no-op otherwise)."""
    from fastvit.kernels.reference import attention_ref

    q, k, v, _, sin, cos = _inputs(1, 1, 9, 64, F32, "cpu", num_prefix=1)
    rotated = rope.rope_attention(q, k, v, sin, cos, num_prefix=1)
    assert (rotated - attention_ref(q, k, v, upcast=False)).abs().max() > 1e-2


def test_opcheck():
    q, k, v, do, sin, cos = _inputs(1, 2, 7, 16, F32, "cpu", num_prefix=1, per_head=True)
    out, lse = rope.rope_attention_fwd_op(q, k, v, sin, cos, 1, True, 0.3)
    torch.library.opcheck(rope.rope_attention_bwd_op, (do, q, k, v, sin, cos, out, lse, 1, True, 0.3))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    torch.library.opcheck(rope.rope_attention_fwd_op, (*leaves, sin, cos, 1, True, 0.3))


def test_compile_fullgraph_matches_eager():
    """The opaque custom ops trace under torch.compile(fullgraph=True); forward and gradients agree."""
    q, k, v, _, sin, cos = _inputs(1, 2, 7, 16, F32, "cpu", num_prefix=1)

    def loss(q, k, v):
        return rope.rope_attention(q, k, v, sin, cos, num_prefix=1, rotate_half=True).square().sum()

    results = []
    for fn in (loss, torch.compile(loss, backend="aot_eager", fullgraph=True)):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        value = fn(*leaves)
        value.backward()
        results.append([value.detach(), *(t.grad for t in leaves)])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


# -- refused calls: supports() says why, the function raises naming the expectation -------------

def _call(d=64, n=9, num_prefix=1, table=None, dtype=F32, table_dtype=F32, grad_table=False):
    q = torch.zeros(1, 2, n, d, dtype=dtype)
    table = (n - num_prefix, d // 2) if table is None else table
    sin = torch.zeros(table, dtype=table_dtype).requires_grad_(grad_table)
    return rope.rope_attention(q, q, q, sin, torch.ones(table), num_prefix=num_prefix)  # cos always fp32


REFUSED = [
    (dict(head_dim=63, seq_len=9, num_prefix=1), "head_dim 63 is odd", lambda: _call(d=63, table=(8, 31)), ValueError),
    (dict(head_dim=130, seq_len=9), "head_dim 130", lambda: _call(d=130), ValueError),
    (dict(head_dim=64, seq_len=9, num_prefix=1, table_shape=(9, 32)), "table_shape (9, 32) is not (8, 32)",
     lambda: _call(table=(9, 32)), ValueError),
    (dict(head_dim=64, seq_len=9, num_prefix=1, heads=2, table_shape=(3, 8, 32)), "(2, 8, 32)",
     lambda: _call(table=(3, 8, 32)), ValueError),
    (dict(head_dim=64, seq_len=9, num_prefix=10), "num_prefix 10 is not between 0 and 9",
     lambda: _call(num_prefix=10, table=(0, 32)), ValueError),
    (dict(head_dim=64, dtype=torch.float64), "float64", lambda: _call(dtype=torch.float64), TypeError),
    (dict(head_dim=64, table_dtype=F16), "table_dtype float16", lambda: _call(table_dtype=F16), TypeError),
    (dict(head_dim=64, tables_require_grad=True), "rotary tables require grad", lambda: _call(grad_table=True),
     ValueError),
]  # fmt: skip


@pytest.mark.parametrize("call, words, run, error", REFUSED, ids=[r[1] for r in REFUSED])
def test_refused_calls(call, words, run, error):
    reason = ops.supports("rope_attention", device="cpu", interpret=True, **{"dtype": F32, **call})
    assert reason is not None and words in reason, reason
    with pytest.raises(error, match="rope_attention: .*" + words.replace("(", r"\(").replace(")", r"\)")):
        run()


def test_accepted_calls_and_tables_without_grad():
    call = dict(device="cpu", interpret=True, dtype=F16, head_dim=64, seq_len=201, num_prefix=5)
    assert ops.supports("rope_attention", **call, table_shape=(196, 32)) is None
    assert ops.supports("rope_attention", **call, heads=12, table_shape=(12, 196, 32)) is None
    assert ops.supports("rope_attention", **call, table_shape=(7, 196, 32)) is None  # heads not given
    assert "on cpu" in ops.supports("rope_attention", **{**call, "interpret": False})
    # tables that require grad are fine where no gradient is recorded
    q, k, v, _, sin, cos = _inputs(1, 2, 9, 64, F32, "cpu", num_prefix=1)
    with torch.no_grad():
        out = rope.rope_attention(q, k, v, sin.requires_grad_(), cos, num_prefix=1)
    assert torch.isfinite(out).all()
