"""The rotary attention's wiring: full tables -> per-pair tables (exact for every RoPE kind), the
runner each attn_impl resolves to, and auto's choice between the fused op and rotate-then-SDPA (a
fake timer, CPU tensors counted as CUDA ones; the fused op under the interpreter, or its reference
where this checkout has no kernel yet)."""

import functools

import pytest
import torch
import torch.nn.functional as F

from fastvit import dispatch
from fastvit.kernels import ops
from fastvit.kernels.reference import rope_attention_ref, rope_rotate_ref
from fastvit.layers import rope_attention as ra
from fastvit.layers.attention import sdpa_attention
from fastvit.layers.rope import (TABLE_HALF, RopeCat, RopeDinoV3, RopeMixed, apply_rope, pairs_share_angles, rope_pairs,
                                 rope_prefix)


def _ref_op(q, k, v, sin, cos, *, num_prefix=0, rotate_half=False, scale=None):
    return rope_attention_ref(q, k, v, sin, cos, num_prefix, rotate_half, scale, upcast=False)


@pytest.fixture
def fused(monkeypatch):
    """The fused op: the kernel where this checkout declares it, else its reference (same contract)."""
    if ra.OP not in ops.OPS:
        monkeypatch.setitem(ra._FUSED, ra.OP, _ref_op)
        monkeypatch.setattr(ra, "_op_reason", lambda **query: None)
        monkeypatch.setattr(ra, "auto_op_reason", lambda q, rope, num_prefix: None)
    else:
        pytest.importorskip("triton")


def _tables():
    """(kind, table (..., N, 2D), half) for each generator at head dim 16 on a 3x4 grid."""
    torch.manual_seed(0)
    return [
        ("cat", RopeCat(16, 10000.0, (3, 4))(), False),
        ("cat-ref-offset-xy", RopeCat(16, 100.0, (3, 4), ref_feat_shape=(6, 6), grid_offset=1.0, grid_indexing="xy")(), False),
        ("dinov3", RopeDinoV3(16, 100.0, (3, 4))(), True),
        ("mixed", RopeMixed(32, 2, 2, 10.0, (3, 4))().detach(), False),  # (depth, heads, N, 2D)
    ]


@pytest.mark.parametrize("i", range(4))
def test_pairs_share_angles_so_the_conversion_is_exact(i):
    kind, emb, half = _tables()[i]
    assert TABLE_HALF[kind.split("-")[0]] is half
    assert pairs_share_angles(emb, half), kind
    assert not pairs_share_angles(emb, not half), kind  # the other pairing does not: the check can fail
    sin, cos = rope_pairs(emb, half)
    assert sin.shape == emb.shape[:-1] + (emb.shape[-1] // 4,) and sin.is_contiguous()
    # the rotation by the per-pair tables is the rotation by the full table, bit for bit in fp64
    emb = emb.double()
    sin, cos = rope_pairs(emb, half)
    x = torch.randn(2, 2, 3 + 12, 16, dtype=torch.float64)
    table = emb[0] if emb.ndim == 4 else emb  # mixed: block 0 -> (heads, N, 2D)
    sin, cos = rope_pairs(table, half)
    want = rope_prefix(x, table, 3, half, x.dtype)
    got = rope_rotate_ref(x, sin, cos, num_prefix=3, rotate_half=half)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=1e-15)
    assert torch.equal(got[:, :, :3], x[:, :, :3])


def test_resolution_per_impl():
    hd = 16
    runner, reason, disp = ra.resolve_rotary("sdpa", True, hd)
    assert runner.func is ra.rotate_then and runner.args == (sdpa_attention,) and reason is None and not disp
    runner, reason, disp = ra.resolve_rotary("sdpa", False, hd)
    assert runner.func is ra.no_rotation and reason is None
    # a table whose layout differs from the rotation's pairs cannot be fused: rotate, with the reason
    runner, reason, disp = ra.resolve_rotary("auto", True, hd, half=True, table_half=False)
    assert runner.func is ra.rotate_then and "layout" in reason and disp
    runner, reason, _ = ra.resolve_rotary("sdpa", True, hd, half=True, table_half=False)
    assert reason is None  # nothing was asked of the fused op


def test_resolution_fused(fused):
    runner, reason, disp = ra.resolve_rotary("auto", True, 16)
    assert runner is ra.auto_rotary and reason is None and disp
    pytest.importorskip("triton")
    runner, reason, disp = ra.resolve_rotary("triton", True, 16, half=True)
    assert runner.func is ra.fused_rotary and reason is None and not disp
    assert ra.runner_name(runner) == "fused"


def _qkv(b=2, h=2, n=1 + 12, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype) for _ in range(3)]


def test_fused_rotary_falls_back_per_call(fused, monkeypatch):
    """dropout and tables that need their gradient take the fallback; the rest the fused op."""
    calls = []
    monkeypatch.setitem(ra._FUSED, ra.OP, lambda *a, **kw: calls.append("fused") or _ref_op(*a, **kw))
    fallback = functools.partial(ra.rotate_then, sdpa_attention)

    def tracked(*args):
        calls.append("fallback")
        return fallback(*args)

    q, k, v = _qkv()
    emb = RopeCat(16, 10000.0, (3, 4))()
    want = ra.rotate_then(sdpa_attention, q, k, v, emb, 1, False, 0.0, None)
    torch.testing.assert_close(ra.fused_rotary(tracked, q, k, v, emb, 1, False), want, rtol=1e-5, atol=1e-5)
    assert calls == ["fused"]
    torch.manual_seed(0)
    ra.fused_rotary(tracked, q, k, v, emb, 1, False, 0.5)
    learned = emb.clone().requires_grad_()
    ra.fused_rotary(tracked, q, k, v, learned, 1, False)
    with torch.no_grad():
        ra.fused_rotary(tracked, q, k, v, learned, 1, False)
    assert calls == ["fused", "fallback", "fallback", "fused"]
    assert "dropout" in ra.call_reason(emb, 0.1) and "gradient" in ra.call_reason(learned, 0.0)


class Prefer:
    """Calls the candidate once (one that raises loses), then says ``name`` is 10x faster."""

    def __init__(self, name):
        self.name, self.calls = name, []

    def __call__(self, fn, args):
        inner = getattr(fn, "__wrapped__", fn)
        self.calls.append(inner.__name__)
        fn(*args)
        names = {c.fn: c.name for c in ra.ROPE_ATTENTION_CANDIDATES}
        return 0.1 if names.get(inner) == self.name else 1.0


def _dispatcher(tmp_path, prefer, monkeypatch):
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    timer = Prefer(prefer)
    d = dispatch.Dispatcher(timer=timer, cache_dir=tmp_path, on_cuda=lambda args: True, device_name=lambda args: "FakeGPU",
                            versions={"test": "1"})
    return d, timer


@pytest.mark.parametrize("prefer", ["triton", "sdpa-rotate"])
def test_auto_binds_the_faster_right_candidate(fused, tmp_path, monkeypatch, prefer):
    d, timer = _dispatcher(tmp_path, prefer, monkeypatch)
    q, k, v = _qkv(n=4 + 12, dtype=torch.bfloat16)
    emb = RopeDinoV3(16, 100.0, (3, 4))()
    want = rope_attention_ref(q, k, v, *rope_pairs(emb, True), 4, True, None)
    with dispatch.using(d):
        out = ra.auto_rotary(q, k, v, emb, 4, True)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), want.float(), rtol=0, atol=3e-2)
        n = len(timer.calls)
        ra.auto_rotary(q, k, v, emb, 4, True)  # bound: no second measurement
        assert len(timer.calls) == n
        ra.auto_rotary(q.float(), k.float(), v.float(), emb, 4, True)  # fp32: auto does not offer the kernel
    recs = [r for r in d.choices() if r["op"] == ra.OP]
    rec = recs[0]
    assert rec["chosen"] == prefer and rec["source"] == "measured" and rec["mode"] == "inference"
    assert rec["key"] == ["bfloat16", "float32", 2, 2, 16, 16, 4, True, False, False]
    assert rec["errors"]["triton"]["ok"], rec  # the fused op passed the gate against the fp64 reference
    assert set(rec["times"]) == {"triton", "sdpa-rotate"}
    assert recs[1]["chosen"] == "sdpa-rotate" and "float32" in recs[1]["reasons"]["triton"]


def test_auto_gate_holds_the_kernel_to_the_declared_tolerance():
    """The gate's reference is the torch candidate (rotate, then SDPA) on float64 copies: all fp64 (the
    declared rope_attention_ref takes its softmax in fp32); the bound is the op's declared tolerance."""
    kernel = next(c for c in ra.ROPE_ATTENTION_CANDIDATES if c.kind == "kernel")
    if ra.OP not in ops.OPS:
        pytest.skip("no rope_attention declaration in this checkout")
    assert kernel.bound == ops.declaration(ra.OP).tolerance.bound and kernel.reference is None


def test_auto_gate_rejects_a_wrong_fused_op(fused, tmp_path, monkeypatch):
    d, _ = _dispatcher(tmp_path, "triton", monkeypatch)
    monkeypatch.setitem(ra._FUSED, ra.OP, lambda q, k, v, sin, cos, **kw: _ref_op(q, k, v, cos, sin, **kw))  # swapped tables
    q, k, v = _qkv(dtype=torch.bfloat16)
    emb = RopeCat(16, 10000.0, (3, 4))()
    with dispatch.using(d), pytest.warns(dispatch.KernelMismatchWarning):
        out = ra.auto_rotary(q, k, v, emb, 1, False)
    torch.testing.assert_close(out, ra.rotate_then(sdpa_attention, q, k, v, emb, 1, False), rtol=0, atol=0)
    [rec] = [r for r in d.choices() if r["op"] == ra.OP]
    assert rec["chosen"] == "sdpa-rotate" and not rec["errors"]["triton"]["ok"]


def test_auto_training_call_is_checked_with_gradients(fused, tmp_path, monkeypatch):
    d, timer = _dispatcher(tmp_path, "triton", monkeypatch)
    q, k, v = (t.requires_grad_() for t in _qkv(dtype=torch.bfloat16))
    emb = RopeCat(16, 10000.0, (3, 4))()
    with dispatch.using(d):
        ra.auto_rotary(q, k, v, emb, 1, False).sum().backward()
        learned = emb.clone().requires_grad_()
        ra.auto_rotary(q, k, v, learned, 1, False)
    recs = [r for r in d.choices() if r["op"] == ra.OP]
    assert [r["mode"] for r in recs] == ["training", "training"]
    assert recs[0]["chosen"] == "triton" and recs[0]["errors"]["triton"]["ok"]
    assert recs[1]["chosen"] == "sdpa-rotate" and "gradient" in recs[1]["reasons"]["triton"]


def test_auto_off_cuda_and_with_dropout_is_timms_way(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    calls = []
    monkeypatch.setitem(ra._FUSED, ra.OP, lambda *a, **kw: calls.append(1))
    d = dispatch.Dispatcher(cache_dir=tmp_path, versions={"test": "1"})  # the real device predicate: CPU is not CUDA
    q, k, v = _qkv()
    emb = RopeCat(16, 10000.0, (3, 4))()
    want = F.scaled_dot_product_attention(rope_prefix(q, emb, 1, False, q.dtype), rope_prefix(k, emb, 1, False, q.dtype), v)
    with dispatch.using(d):
        assert torch.equal(ra.auto_rotary(q, k, v, emb, 1, False), want)
        ra.auto_rotary(q, k, v, emb, 1, False, dropout_p=0.3)
    assert calls == []
    [rec] = [r for r in d.choices() if r["op"] == ra.OP]
    assert rec["chosen"] == "sdpa-rotate"


def test_apply_rope_is_what_rotate_then_runs():
    q, k, v = _qkv()
    emb = RopeCat(16, 10000.0, (3, 4))()
    qr = torch.cat([q[:, :, :1], apply_rope(q[:, :, 1:], emb)], 2)
    kr = torch.cat([k[:, :, :1], apply_rope(k[:, :, 1:], emb)], 2)
    assert torch.equal(ra.rotate_then(sdpa_attention, q, k, v, emb, 1, False), F.scaled_dot_product_attention(qr, kr, v))
