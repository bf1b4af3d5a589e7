"""RMSNorm and the SwiGLU gate wired into the models: ``norm_impl`` / ``linear_impl`` "triton" runs
fastvit's kernels (``rms_norm``, ``linear_swiglu``) and gives PyTorch's outputs and gradients in fp32
(an AIMv2-layout ViT: RMS norms everywhere, bias-free unpacked SwiGLU; Eva's SwiGLU, packed and split);
"auto" runs PyTorch off CUDA and, when it measures the kernel faster, the kernel (an injected device
predicate and timer stand for the GPU, as tests/layers/test_auto_layers.py does); parameters and state
dicts do not depend on the implementation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastvit
from fastvit import dispatch
from fastvit.eva import Eva, EvaConfig
from fastvit.layers.auto import uses_dispatch
from fastvit.layers.eva_block import SwiGLU as EvaSwiGLU
from fastvit.layers.glu import GluMlp
from fastvit.layers.norm import AutoBlockRMSNorm, AutoRMSNorm, TritonBlockRMSNorm, TritonRMSNorm

AIMV2_TINY = dict(img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.75, class_token=False,
                  global_pool="avg", fc_norm=False, qkv_bias=False, proj_bias=False, act_layer="silu",
                  mlp_layer="swiglu_unpacked", norm_layer="rmsnorm", norm_eps=1e-5, patch_norm=True, num_classes=5)
EVA_TINY = dict(img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=8 / 3, swiglu_mlp=True,
                num_classes=5)  # fmt: skip


def _aimv2(impl):
    torch.manual_seed(0)
    return fastvit.VisionTransformer(fastvit.ViTConfig(**AIMV2_TINY, norm_impl=impl, linear_impl=impl, attn_impl="sdpa"))


def _eva(impl, **kw):
    torch.manual_seed(0)
    return Eva(EvaConfig(**EVA_TINY, **kw, norm_impl="torch", linear_impl=impl, attn_impl="sdpa"))


def _outputs_and_grads(model, x):
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(got, want, atol=2e-5):
    torch.testing.assert_close(got[0], want[0], atol=atol, rtol=1e-4)
    assert got[1].keys() == want[1].keys()
    for name in want[1]:
        torch.testing.assert_close(got[1][name], want[1][name], atol=atol, rtol=1e-4, msg=name)


def _kernel_calls(monkeypatch):
    """Counts the calls that reach the two kernels (patched on the kernel package)."""
    import fastvit.kernels as kernels
    from fastvit.kernels import rms, swiglu

    from fastvit.layers import glu, norm

    for lazy in (norm._RMS_NORM, norm._RMS_NORM_FORK, glu._LINEAR_SWIGLU):  # auto's candidates look theirs up again
        monkeypatch.setattr(lazy, "fn", None)
    calls = {"rms_norm": 0, "rms_norm_fork": 0, "linear_swiglu": 0}
    for module, name in ((rms, "rms_norm"), (rms, "rms_norm_fork"), (swiglu, "linear_swiglu")):
        real = getattr(module, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(module, name, counted)
        monkeypatch.setattr(kernels, name, counted, raising=False)
    return calls


def test_aimv2_layout_triton_equals_torch_forward_and_grads(monkeypatch):
    calls = _kernel_calls(monkeypatch)
    torch_model, triton_model = _aimv2("torch"), _aimv2("triton")
    assert torch_model.state_dict().keys() == triton_model.state_dict().keys()
    triton_model.load_state_dict(torch_model.state_dict())
    norms = [type(m) for m in triton_model.modules() if isinstance(m, nn.RMSNorm)]
    assert norms.count(TritonBlockRMSNorm) == 4 and norms.count(TritonRMSNorm) == 2  # 2 per block; patch, final
    assert all(m.gate_impl == "triton" for m in triton_model.modules() if hasattr(m, "fc1_g"))
    x = torch.randn(2, 3, 28, 28)
    _assert_same(_outputs_and_grads(triton_model, x), _outputs_and_grads(torch_model, x))
    # every norm ran the kernels (the patch's and the final one plain, the blocks' forked) and every block's gate
    assert calls == {"rms_norm": 2, "rms_norm_fork": 4, "linear_swiglu": 2}


@pytest.mark.parametrize("kw", [dict(), dict(scale_mlp=True), dict(swiglu_align_to=16)], ids=["packed", "split-norm", "split-align"])
def test_eva_swiglu_triton_equals_torch_forward_and_grads(kw, monkeypatch):
    calls = _kernel_calls(monkeypatch)
    torch_model, triton_model = _eva("torch", **kw), _eva("triton", **kw)
    triton_model.load_state_dict(torch_model.state_dict())
    mlp = triton_model.blocks[0].mlp
    assert isinstance(mlp, EvaSwiGLU if kw else GluMlp) and mlp.gate_impl == "triton"
    x = torch.randn(2, 3, 28, 28)
    _assert_same(_outputs_and_grads(triton_model, x), _outputs_and_grads(torch_model, x))
    assert calls["linear_swiglu"] == 2


def test_auto_runs_pytorch_off_cuda_and_the_kernels_when_measured_faster(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    calls = _kernel_calls(monkeypatch)
    reference = _aimv2("torch")
    model = _aimv2("auto")
    model.load_state_dict(reference.state_dict())
    assert {type(m) for m in model.modules() if isinstance(m, nn.RMSNorm)} == {AutoRMSNorm, AutoBlockRMSNorm}
    assert uses_dispatch(model) and not uses_dispatch(reference)  # fastvit.compile prepares it
    x = torch.randn(2, 3, 28, 28)
    want = _outputs_and_grads(reference, x)
    off_cuda = dispatch.Dispatcher(cache_dir=tmp_path / "off", on_cuda=lambda args: False, versions={"test": "1"})
    with dispatch.using(off_cuda):
        got = _outputs_and_grads(model, x)
    assert calls == {"rms_norm": 0, "rms_norm_fork": 0, "linear_swiglu": 0}
    torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)  # the same PyTorch ops

    kernels = {"_rms_norm_triton", "_rms_norm_fork_triton", "_swiglu_triton"}

    def timer(fn, args):
        fn(*args)
        return 0.1 if getattr(getattr(fn, "__wrapped__", fn), "__name__", "") in kernels else 1.0

    fake_gpu = dispatch.Dispatcher(timer=timer, cache_dir=tmp_path / "gpu", on_cuda=lambda args: True,
                                   device_name=lambda args: "FakeGPU", versions={"test": "1"})  # fmt: skip
    with dispatch.using(fake_gpu):
        got = _outputs_and_grads(model, x)
        chosen = {(r["op"], r["chosen"]) for r in fake_gpu.choices()}
    assert {("rms_norm", "triton"), ("rms_norm_fork", "triton"), ("linear_swiglu", "triton")} <= chosen, chosen
    assert all(n > 0 for n in calls.values()), calls
    _assert_same(got, want)


def test_rms_norm_layers_match_nn_rmsnorm_and_refuse_what_the_kernel_lacks():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 24)
    want = nn.RMSNorm(24, eps=None)
    with torch.no_grad():
        want.weight.uniform_(0.5, 1.5)
    for cls in (TritonRMSNorm, AutoRMSNorm, TritonBlockRMSNorm, AutoBlockRMSNorm):
        norm = cls(24, eps=None)
        norm.load_state_dict(want.state_dict())
        torch.testing.assert_close(norm(x), want(x), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="affine weight"):
        TritonRMSNorm(24, elementwise_affine=False)
    with pytest.raises(ValueError, match="normalized_shape"):
        TritonRMSNorm((4, 6))
    assert torch.equal(AutoRMSNorm(24, elementwise_affine=False)(x), nn.RMSNorm(24, elementwise_affine=False)(x))


def test_gate_impl_is_checked_and_other_activations_keep_pytorch():
    with pytest.raises(ValueError, match="gate_impl must be one of"):
        GluMlp(8, 16, gate_impl="fast")
    glu = GluMlp(8, 16, act_layer=nn.GELU, gate_impl="triton")
    assert glu.gate_impl == "torch"  # the kernel gates with SiLU only
    x = torch.randn(4, 8)
    gate, value = glu.fc1(x).chunk(2, dim=-1)
    torch.testing.assert_close(glu.gated(x), nn.functional.gelu(gate) * value)


def test_fastvit_info_names_the_rms_and_swiglu_ops(monkeypatch):
    """``fastvit info --model aimv2_*``: the model's dispatched calls are RMSNorm and the SwiGLU gate
    (not LayerNorm and fc1 + GELU), with their candidates."""
    from fastvit.auto_report import auto_report, model_calls
    from fastvit.presets import get_config

    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    cfg = get_config("aimv2_large_patch14_224")
    calls = {label: (layer, args) for label, layer, args in model_calls(cfg, 1, torch.float32, "cpu")}
    assert type(calls["norm"][0]) is AutoRMSNorm and type(calls["norm1, norm2"][0].__self__) is AutoBlockRMSNorm
    gate_branch = calls["mlp.fc1 gate"][0].__self__
    assert gate_branch.fc1_g.bias is None and gate_branch.fc1_g.weight.shape == (cfg.mlp_hidden_dim, cfg.embed_dim)
    assert "mlp.fc1 + act" not in calls
    with dispatch.using(dispatch.Dispatcher(cache_dir=None, on_cuda=lambda args: False)):
        lines = "\n".join(auto_report("aimv2_large_patch14_224", 1, "fp32", "cpu"))
    assert "  rms_norm          candidates on CUDA: torch (torch), triton (kernel)" in lines
    assert "  linear_swiglu     candidates on CUDA: torch (torch), triton (kernel)" in lines
    assert "  rms_norm_fork     candidates on CUDA: torch (torch), triton (kernel)" in lines
    assert "layer_norm_fork" not in lines and "linear_gelu" not in lines


@pytest.mark.parametrize("impl", ["auto", "triton"])
def test_models_copy_and_pickle_with_their_choice(impl):
    import copy
    import pickle

    model = _aimv2(impl)
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        want = model(x)
        for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            gates = [m for m in clone.modules() if hasattr(m, "gate_impl")]
            assert gates and all(m.gate_impl == impl for m in gates)
            torch.testing.assert_close(clone(x), want, atol=0, rtol=0)
