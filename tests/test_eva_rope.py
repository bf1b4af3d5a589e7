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
