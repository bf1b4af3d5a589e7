"""fastvit's RMSNorm and SwiGLU kernels in whole models against real timm 1.0.29: AIMv2 (RMS norms
everywhere, bias-free split SwiGLU), EVA-02 (packed SwiGLU) and DINOv3 (split SwiGLU with
``align_to``), converted from timm and built with ``norm_impl`` / ``linear_impl="triton"`` (the
kernels run under the interpreter): logits and the input gradient within 1e-5 relative (fp32).
Tiny shapes (2 blocks, width 32)."""

import pytest
import torch

from fastvit.checkpoints.timm import from_timm
from fastvit.checkpoints.timm_eva import from_timm_eva
from interop_helpers import assert_rel, image, perturb

timm = pytest.importorskip("timm")

TINY = dict(pretrained=False, img_size=28, embed_dim=32, depth=2, num_heads=2, num_classes=5)
CASES = {
    "aimv2_large_patch14_224": (dict(mlp_ratio=2.75), from_timm, dict(norm_impl="triton")),
    "eva02_tiny_patch14_224": (dict(patch_size=14), from_timm_eva, {}),
    "vit_small_plus_patch16_dinov3": (dict(patch_size=14, swiglu_align_to=16), from_timm_eva, {}),
}


def _kernel_parts(model) -> set[str]:
    return {type(m).__name__ for m in model.modules() if getattr(m, "gate_impl", None) == "triton"
            or type(m).__name__ in ("TritonRMSNorm", "TritonBlockRMSNorm")}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_kernels_give_timms_logits_and_gradients(name):
    sizes, convert, impls = CASES[name]
    torch.manual_seed(0)
    reference = perturb(timm.create_model(name, **{**TINY, **sizes}).eval())
    model = convert(reference, linear_impl="triton", attn_impl="sdpa", **impls).eval()
    found = _kernel_parts(model)
    assert found >= ({"TritonRMSNorm", "TritonBlockRMSNorm", "SwiGLU"} if "aimv2" in name else {"GluMlp"} if "eva02" in name
                     else {"SwiGLU"}), found  # fmt: skip
    x = image(28, 28).requires_grad_()
    want = reference(x)
    got = model(x)
    assert_rel(got, want, 1e-5, f"{name} logits")
    dx_want, = torch.autograd.grad(want.square().sum(), x)
    dx_got, = torch.autograd.grad(got.square().sum(), x)
    assert_rel(dx_got, dx_want, 1e-5, f"{name} input gradient")
