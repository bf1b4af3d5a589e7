"""An Eva model with the fused rotary attention (attn_impl="triton") computes what timm's way
(rotate in PyTorch, then SDPA) computes: fp32, forward and parameter gradients, for EVA-02's
interleaved RoPE (class token) and DINOv3's half RoPE (class + 4 registers); RoPE-Mixed's learned
tables train through the fallback. Tiny sizes; the fused op runs under the interpreter (or as its
reference where this checkout has no kernel yet)."""

import pytest
import torch

from fastvit.kernels import ops
from fastvit.kernels.reference import rope_attention_ref
from fastvit.layers import rope_attention as ra
from fastvit.presets_eva import create_eva

KW = dict(embed_dim=64, num_heads=2, depth=2, norm_impl="torch", linear_impl="torch")


def _ref_op(q, k, v, sin, cos, *, num_prefix=0, rotate_half=False, scale=None):
    return rope_attention_ref(q, k, v, sin, cos, num_prefix, rotate_half, scale, upcast=False)


@pytest.fixture
def fused(monkeypatch):
    """Counts the fused op's calls: the kernel where this checkout declares it, else its reference."""
    pytest.importorskip("triton")
    calls = []
    if ra.OP not in ops.OPS:
        monkeypatch.setattr(ra, "_op_reason", lambda **query: None)
        op = _ref_op
    else:
        op = ra.fused_op()
    monkeypatch.setitem(ra._FUSED, ra.OP, lambda *a, **kw: calls.append(kw) or op(*a, **kw))
    return calls


def _pair(name, **kw):
    torch.manual_seed(0)
    ref = create_eva(name, attn_impl="sdpa", **KW, **kw)
    fused = create_eva(name, attn_impl="triton", **KW, **kw)
    fused.load_state_dict(ref.state_dict(), strict=True)
    return ref, fused


@pytest.mark.parametrize("name, img, prefix, half", [
    ("eva02_tiny_patch14_224", 42, 1, False),  # cat RoPE, interleaved pairs, class token; 3x3 patches
    ("vit_small_patch16_dinov3", 48, 5, True),  # DINOv3 RoPE, half pairs, class + 4 registers
])
def test_fused_eva_matches_rotate_then_sdpa(fused, name, img, prefix, half):
    ref, model = _pair(name, img_size=img)
    assert all(b.attn.rotary_reason is None and ra.runner_name(b.attn._attend) == "fused" for b in model.blocks)
    x = torch.randn(2, 3, img, img)
    for m in (ref, model):
        m.train()
        m(x).square().mean().backward()
    assert len(fused) == 2 and all(c["num_prefix"] == prefix and c["rotate_half"] is half for c in fused)
    torch.testing.assert_close(model.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-5)
    grads = dict(ref.named_parameters())
    for key, p in model.named_parameters():
        assert p.grad is not None, key
        torch.testing.assert_close(p.grad, grads[key].grad, rtol=1e-3, atol=1e-5, msg=key)


def test_mixed_rope_trains_through_the_fallback(fused):
    """RoPE-Mixed's tables need their gradient in training: the fallback computes it; in inference the fused op runs."""
    ref, model = _pair("vit_small_patch16_rope_mixed_224", img_size=32)
    x = torch.randn(1, 3, 32, 32)
    for m in (ref, model):
        m(x).sum().backward()
    assert fused == []
    torch.testing.assert_close(model.rope.freqs.grad, ref.rope.freqs.grad, rtol=1e-3, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-5)
    assert len(fused) == 2  # one per block, per-head tables


def test_rope_traffic_saved_by_hand_for_vit_b():
    """ViT-B/16 at 224 (12 heads, 197 tokens, head dim 64), one image, bf16. One (B, H, N, D) tensor is
    12 * 197 * 64 = 151,296 values = 302,592 bytes. Forward: the rotated q and k written (2 x 302,592)
    and read back by the attention (2 x 302,592) = 1,210,368 bytes; backward: dq, dk of the rotated
    tensors written and read back by the inverse rotation, the same 1,210,368; autograd keeps the two
    rotated tensors, 605,184 bytes."""
    from fastvit.bench import rope_traffic_saved

    got = rope_traffic_saved(1, 12, 197, 64, 2)
    assert got == {"forward": 1_210_368, "backward": 1_210_368, "training": 2_420_736, "saved_activations": 605_184}
    assert rope_traffic_saved(256, 12, 197, 64, 4)["training"] == 256 * 2 * 2_420_736  # linear in batch and bytes
    with pytest.raises(ValueError, match="tokens"):
        rope_traffic_saved(1, 12, 0, 64)


def test_rope_benchmarks_run_on_cpu_in_smoke_mode(tmp_path):
    """benchmarks/test_rope.py end to end at toy sizes on the CPU (the compile provider left out: minutes of
    inductor); the records' fields and parity are checked, the times mean nothing."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from fastvit import bench

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "rope.json"
    env = dict(os.environ, FASTVIT_KERNEL_BENCH_SMOKE="1", TRITON_INTERPRET="1", FASTVIT_AUTOTUNE="0")
    cmd = [sys.executable, "-m", "pytest", str(root / "benchmarks" / "test_rope.py"), "--benchmark-only",
           f"--benchmark-json={out}", "-k", "eva02_b and not compile", "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    records = [e["extra_info"] for e in json.loads(out.read_text())["benchmarks"]]
    want = {("sdpa-rotate", m) for m in ("fwd", "fwd+bwd")}
    if ra.OP in ops.OPS:
        want |= {("triton", m) for m in ("fwd", "fwd+bwd")}
    assert {(r["variant"], r["mode"]) for r in records} == want
    for r in records:
        assert tuple(r) == bench.RECORD_FIELDS and r["status"] == "ok" and r["op"] == "rotary_attention", r
        assert r["max_rel_err"] < 2e-2 and r["tflops"] > 0, r
        if r["variant"] == "sdpa-rotate":
            assert r["speedup_vs_reference"] == 1.0


def test_models_resolve_and_report_their_rotary_path(fused):
    from fastvit.layers.auto import uses_dispatch

    auto = create_eva("vit_small_patch16_dinov3", img_size=32, **KW)
    assert uses_dispatch(auto) and all(b.attn._attend is ra.auto_rotary for b in auto.blocks)
    sdpa = create_eva("vit_small_patch16_dinov3", img_size=32, attn_impl="sdpa", **KW)
    assert not uses_dispatch(sdpa) and "rotate, then sdpa_attention" in repr(sdpa.blocks[0].attn)
    # an interleaved (cat) table with half pairs cannot be cut into per-pair tables: rotate, then attend, with the reason
    odd = create_eva("eva02_tiny_patch14_224", img_size=28, rope_rotate_half=True, attn_impl="triton", **KW)
    assert "layout" in odd.blocks[0].attn.rotary_reason and "unfused: the rotary table" in repr(odd.blocks[0].attn)
    ref = create_eva("eva02_tiny_patch14_224", img_size=28, rope_rotate_half=True, attn_impl="sdpa", **KW)
    ref.load_state_dict(odd.state_dict())
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(odd.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-5)
    assert fused == []
