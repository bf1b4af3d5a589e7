"""``create_model(name)`` with its defaults (``auto`` everywhere) runs anywhere; on the CPU it is the reference.

Off CUDA, ``auto`` means PyTorch's ops, so a default model must equal the
plain-PyTorch reference (eager attention, torch LayerNorm and GEMMs) to fp32
rounding; and whichever implementation is chosen, the state-dict keys are the same.
"""

from __future__ import annotations

import itertools
import sys

import pytest
import torch

import fastvit

REFERENCE = dict(attn_impl="eager", norm_impl="torch", linear_impl="torch")
# one preset per family, shortened to two blocks and a small image to keep the CPU quick
PRESETS = {
    "vit_tiny_patch16_224": dict(img_size=64),
    "deit_tiny_distilled_patch16_224": dict(img_size=64),
    "deit3_small_patch16_224": dict(img_size=64),
    "vit_small_patch14_reg4_dinov2": dict(img_size=56),
    "vit_base_patch16_clip_quickgelu_224": dict(img_size=64),
    "vit_base_patch16_siglip_224": dict(img_size=64),
    "vit_small_r26_s32_224": dict(img_size=64),
}


def test_the_defaults_are_auto():
    cfg = fastvit.ViTConfig()
    assert (cfg.attn_impl, cfg.norm_impl, cfg.linear_impl) == ("auto", "auto", "auto")


@pytest.mark.parametrize("name", list(PRESETS))
def test_default_model_on_cpu_equals_the_reference(name):
    torch.manual_seed(0)
    overrides = dict(depth=2, **PRESETS[name])
    model = fastvit.create_model(name, **overrides).eval()
    ref = fastvit.create_model(name, **overrides, **REFERENCE).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, *model.cfg.img_size)
    with torch.no_grad():
        got, want = model.forward_features(x), ref.forward_features(x)
        logits, ref_logits = model(x), ref(x)
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= 1e-6 * max(scale, 1.0)
    assert (logits - ref_logits).abs().max().item() <= 1e-6 * max(ref_logits.abs().max().item(), 1.0)


def test_default_model_imports_no_triton_on_cpu():
    """Built and run with its defaults off CUDA, a model never loads Triton (a subprocess, clean modules)."""
    import subprocess

    code = ("import sys, torch, fastvit; m = fastvit.create_model('vit_tiny_patch16_224', depth=1).eval();"
            "m(torch.randn(1, 3, 224, 224)); print('triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


IMPLS = [dict(attn_impl=a, norm_impl=n, linear_impl=lin)
         for a, n, lin in itertools.product(("auto", "sdpa", "triton"), ("auto", "torch", "triton"), ("auto", "torch", "triton"))]


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "vit_small_patch14_reg4_dinov2", "vit_base_patch16_siglip_224"])
def test_switching_implementations_never_changes_state_dict_keys(name):
    pytest.importorskip("triton")
    shapes = None
    for impls in IMPLS:
        with torch.device("meta"):
            model = fastvit.create_model(name, depth=1, **impls)
        got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
        shapes = got if shapes is None else shapes
        assert got == shapes, impls
