"""attention_maps: exact probabilities for every attn_impl, against an independent walk through the blocks."""

import pytest
import torch
import torch.nn.functional as F

import fastvit
from fastvit.analysis import attention_maps, visit_attention_maps
from parity import assert_close_vs_ref

HAS_TRITON = __import__("importlib").util.find_spec("triton") is not None


def tiny(attn_impl="eager", **kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, attn_impl=attn_impl)
    cfg.update(kw)
    torch.manual_seed(0)
    return fastvit.VisionTransformer(fastvit.ViTConfig(**cfg)).eval()


def independent_maps(model, x, dtype=torch.float64):
    """Run the blocks by hand; at each, softmax(q k^T * scale) from the qkv weights, in ``dtype``."""
    maps = []
    with torch.no_grad():
        t, _ = model._embed(x)
        for block in model.blocks:
            xn = block.norm1(t)
            b, n, c = xn.shape
            h = block.attn.num_heads
            qkv = F.linear(xn.to(dtype), block.attn.qkv.weight.to(dtype), block.attn.qkv.bias.to(dtype))
            q, k = qkv.view(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)[:2]
            maps.append(torch.softmax(q @ k.transpose(-2, -1) * (c // h) ** -0.5, dim=-1))
            t = block(t)
    return maps


IMPLS = ["eager", "sdpa", "auto"] + (["triton"] if HAS_TRITON else [])


@pytest.mark.parametrize("impl", IMPLS)
def test_maps_equal_independent_softmax(impl):
    model = tiny(impl)
    x = torch.randn(2, 3, 32, 32)
    got = attention_maps(model, x)
    ref = independent_maps(model, x)
    assert len(got) == len(ref) == 3
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == (2, 2, 17, 17) and g.dtype == torch.float32
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=0, msg=lambda m: f"block {i}: {m}")
        torch.testing.assert_close(g.sum(-1).double(), torch.ones(2, 2, 17, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_triton_goes_through_the_lse_kernel(monkeypatch):
    import fastvit.analysis.maps as maps_mod

    calls = []
    real = maps_mod.probs_lse
    monkeypatch.setattr(maps_mod, "probs_lse", lambda *a: calls.append(1) or real(*a))
    attention_maps(tiny("triton", depth=2), torch.randn(1, 3, 32, 32))
    assert len(calls) == 2
    calls.clear()
    attention_maps(tiny("sdpa", depth=2), torch.randn(1, 3, 32, 32))
    assert calls == []


def test_model_untouched_and_mode_restored():
    model = tiny("sdpa").train()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model.eval()(x)
    model.train()
    attention_maps(model, x, blocks=[1])
    assert model.training
    assert all(len(b.attn._forward_pre_hooks) == 0 for b in model.blocks)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), before, atol=0, rtol=0)


def test_block_selection_order_and_errors():
    model = tiny("eager")
    x = torch.randn(1, 3, 32, 32)
    full = attention_maps(model, x)
    picked = attention_maps(model, x, blocks=[-1, 0])
    torch.testing.assert_close(picked[0], full[2], atol=0, rtol=0)
    torch.testing.assert_close(picked[1], full[0], atol=0, rtol=0)
    torch.testing.assert_close(attention_maps(model, x, blocks=1)[0], full[1], atol=0, rtol=0)
    import numpy as np

    for same in (np.int64(-2), torch.tensor([1]), (1,), range(1, 2)):
        torch.testing.assert_close(attention_maps(model, x, blocks=same)[0], full[1], atol=0, rtol=0)
    for bad, err in (([3], ValueError), ([-4], ValueError), ([], ValueError), ("0", TypeError), ([0.5], TypeError)):
        with pytest.raises(err):
            attention_maps(model, x, blocks=bad)
    with pytest.raises(TypeError, match="VisionTransformer"):
        attention_maps(torch.nn.Linear(2, 2), x)
    with pytest.raises(ValueError, match="image size"):
        attention_maps(model, torch.randn(1, 3, 40, 40))


def test_forward_stops_after_last_wanted_block_and_visits_in_order():
    model = tiny("eager")
    ran = []
    model.blocks[2].register_forward_hook(lambda *a: ran.append(2))
    seen = []
    visit_attention_maps(model, torch.randn(1, 3, 32, 32), lambda i, p: seen.append((i, tuple(p.shape))), blocks=[1, 0])
    assert seen == [(0, (1, 2, 17, 17)), (1, (1, 2, 17, 17))]
    assert ran == []


def test_distilled_and_dynamic_size():
    model = tiny("sdpa", distilled=True, dynamic_img_size=True)
    x = torch.randn(1, 3, 24, 40)  # 3 x 5 grid + 2 prefix tokens
    got = attention_maps(model, x, blocks=[0])[0]
    assert got.shape == (1, 2, 17, 17)
    torch.testing.assert_close(got.double(), independent_maps(model, x)[0], atol=1e-5, rtol=0)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_low_precision_triton_route_within_twice_eager_error(dtype):
    """Triton's lse route in bf16 errs at most 2x eager bf16 softmax, both against fp64 from the same bf16 qkv."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tiny("triton", embed_dim=64, num_heads=1).to(device, dtype)  # head_dim 64
    x = torch.randn(2, 3, 32, 32, device=device, dtype=dtype)
    got = attention_maps(model, x)
    ref = independent_maps(model, x, torch.float64)
    eager = independent_maps(model, x, dtype)  # bf16 GEMM and softmax, as eager attention runs them
    for i in range(len(got)):
        assert_close_vs_ref(got[i], eager[i], ref[i], factor=2.0, atol=1e-6, name=f"block {i}")


@pytest.mark.cuda
def test_cuda_auto_picks_lse_route_and_matches_eager_bf16():
    model = tiny("auto", embed_dim=128, num_heads=2).cuda().bfloat16()
    x = torch.randn(2, 3, 32, 32, device="cuda", dtype=torch.bfloat16)
    got = attention_maps(model, x)
    ref = independent_maps(model, x, torch.float64)
    eager = independent_maps(model, x, torch.bfloat16)
    for i in range(len(got)):
        assert_close_vs_ref(got[i], eager[i], ref[i], factor=2.0, atol=1e-6, name=f"block {i}")
