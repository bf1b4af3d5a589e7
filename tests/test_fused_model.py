"""Whole-model parity of the fused implementations against the reference model.

The flash-attention rule at model level: the fused model's error against an
fp64 reference model is at most twice the error of the reference model run in
the same precision, for the logits and for every parameter gradient.
"""

import pytest
import torch

import fastvit
from fastvit import kernels
from fastvit.kernels import linear
from parity import assert_close_vs_ref

FUSED = {
    "attn": dict(attn_impl="triton"),
    "all": dict(attn_impl="triton", norm_impl="triton", linear_impl="triton"),
}


def run(model, x, autocast=None):
    """Logits and parameter gradients; the same seed each time, so stochastic depth drops the same samples."""
    model.zero_grad()
    torch.manual_seed(1234)
    with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
        out = model(x)
    # a fixed random projection of the logits, so every logit carries gradient
    weight = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape).to(out)
    (out * weight).sum().backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def check_fused_model(cfg, fused, x, dtype, atol, grad_atol):
    torch.manual_seed(0)
    ref = fastvit.VisionTransformer(cfg.replace(attn_impl="eager")).to(x.device).train()
    model = fastvit.VisionTransformer(cfg.replace(**FUSED[fused])).to(x.device).train()
    model.load_state_dict(ref.state_dict())
    gold = run(ref.double(), x.double())
    eager = run(ref.to(dtype), x.to(dtype))
    got = run(model.to(dtype), x.to(dtype))
    assert_close_vs_ref(got[0], eager[0], gold[0], factor=2.0, atol=atol, name="logits")
    for name, g in gold[1].items():
        assert_close_vs_ref(got[1][name], eager[1][name], g, factor=2.0, atol=grad_atol, rtol=grad_atol, name=f"grad {name}")


# CPU (Triton interpreter), fp32: one block at ViT-Ti width with the real 197 tokens,
# and one at ViT-B width/heads on a small image to keep the interpreter quick.
CPU_CASES = [
    ("vit_tiny_patch16_224", dict(depth=1, num_classes=10), (1, 3, 224, 224), "all"),
    ("vit_base_patch16_224", dict(depth=1, num_classes=10, img_size=64), (2, 3, 64, 64), "all"),
    ("vit_base_patch16_224", dict(depth=2, num_classes=10, img_size=64), (1, 3, 64, 64), "attn"),
]


@pytest.mark.parametrize("name,overrides,shape,fused", CPU_CASES)
def test_fused_model_matches_reference_fp32(name, overrides, shape, fused):
    torch.manual_seed(1)
    check_fused_model(fastvit.get_config(name, **overrides), fused, torch.randn(shape), torch.float32, atol=1e-5, grad_atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "vit_base_patch16_224"])
@pytest.mark.parametrize("fused", list(FUSED))
@pytest.mark.parametrize("dtype,atol", [(torch.bfloat16, 5e-2), (torch.float16, 1e-2)])
def test_fused_model_matches_reference_cuda(name, fused, dtype, atol):
    torch.manual_seed(1)
    x = torch.randn(8, 3, 224, 224, device="cuda")
    check_fused_model(fastvit.get_config(name), fused, x, dtype, atol=atol, grad_atol=atol)


def test_fused_model_runs_under_autocast():
    """bf16 autocast with the fp32 residual stream: fused GEMMs take autocast's dtype, the residual add stays fp32."""
    torch.manual_seed(0)
    cfg = fastvit.get_config("vit_tiny_patch16_224", depth=1, num_classes=10, img_size=64)
    ref = fastvit.VisionTransformer(cfg.replace(attn_impl="eager")).eval()
    model = fastvit.VisionTransformer(cfg.replace(**FUSED["all"])).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, eager = model(x), ref(x)
    with torch.no_grad():
        gold = ref.double()(x.double())
    assert_close_vs_ref(got.float(), eager.float(), gold, factor=2.0, atol=5e-2, name="autocast logits")


@pytest.fixture
def residual_gemm_calls(monkeypatch):
    """Records (x dtype, residual dtype, scale) of every fused residual GEMM call."""
    calls = []
    fused = linear.linear_residual

    def spy(x, weight, bias, residual, *, scale=None, **kwargs):
        calls.append((x.dtype, residual.dtype, None if scale is None else scale.clone()))
        return fused(x, weight, bias, residual, scale=scale, **kwargs)

    def spy_mlp(x, w1, b1, w2, b2, residual, *, scale=None, **kwargs):
        calls.append((x.dtype, residual.dtype, None if scale is None else scale.clone()))
        return fused_mlp(x, w1, b1, w2, b2, residual, scale=scale, **kwargs)

    # the attention out-projection is a residual GEMM; the whole MLP branch (fc1 + GELU + fc2 +
    # residual) is one op, whose second GEMM carries the residual epilogue
    fused_mlp = kernels.mlp_residual
    monkeypatch.setattr(linear, "linear_residual", spy)
    monkeypatch.setattr(kernels, "mlp_residual", spy_mlp)
    return calls


def test_fused_model_trains_with_stochastic_depth(residual_gemm_calls):
    """drop_path_rate > 0 while training: the per-sample scale rides in the residual
    GEMM's epilogue (no fallback to separate ops), with the reference's masks."""
    torch.manual_seed(1)
    # drop-path rates rise linearly over the blocks: 0 in block 0, 0.5 in block 1
    cfg = fastvit.get_config("vit_tiny_patch16_224", depth=2, num_classes=10, img_size=64, drop_path_rate=0.5)
    check_fused_model(cfg, "all", torch.randn(6, 3, 64, 64), torch.float32, atol=1e-5, grad_atol=1e-5)
    scales = [scale for _, _, scale in residual_gemm_calls if scale is not None]
    assert len(scales) == 2 and len(residual_gemm_calls) == 4, "block 1's two residual GEMMs take the scale"
    dropped = torch.cat(scales) == 0
    assert dropped.any() and not dropped.all(), "the seed should drop some samples and keep others"
    torch.testing.assert_close(torch.cat(scales)[~dropped], torch.full(((~dropped).sum(),), 2.0))


def test_fused_model_trains_under_autocast(residual_gemm_calls):
    """bf16 autocast training with fp32 weights and an fp32 residual stream:
    the residual GEMM runs in bf16 and adds in fp32 (no fallback); logits and
    every parameter gradient within twice eager autocast's error."""
    torch.manual_seed(2)
    cfg = fastvit.get_config("vit_tiny_patch16_224", depth=2, num_classes=10, img_size=64, drop_path_rate=0.5)
    ref = fastvit.VisionTransformer(cfg.replace(attn_impl="eager")).train()
    model = fastvit.VisionTransformer(cfg.replace(**FUSED["all"])).train()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 64, 64)
    got = run(model, x, autocast=torch.bfloat16)
    eager = run(ref, x, autocast=torch.bfloat16)
    gold = run(ref.double(), x.double())
    assert {(a, b) for a, b, _ in residual_gemm_calls} == {(torch.bfloat16, torch.float32)}
    assert len(residual_gemm_calls) == 4
    assert got[0].dtype == eager[0].dtype == torch.bfloat16
    assert_close_vs_ref(got[0], eager[0], gold[0], factor=2.0, atol=5e-2, name="logits")
    for name, g in gold[1].items():
        assert_close_vs_ref(got[1][name], eager[1][name], g, factor=2.0, atol=5e-2, rtol=5e-2, name=f"grad {name}")
