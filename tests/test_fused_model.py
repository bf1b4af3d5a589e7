"""Whole-model parity of the fused implementations against the reference model.

The flash-attention rule at model level: the fused model's error against an
fp64 reference model is at most twice the error of the reference model run in
the same precision, for the logits and for every parameter gradient.
"""

import pytest
import torch

import fastvit
from parity import assert_close_vs_ref

FUSED = {
    "attn": dict(attn_impl="triton"),
    "all": dict(attn_impl="triton", norm_impl="triton", linear_impl="triton"),
}


def run(model, x):
    model.zero_grad()
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
