"""fastvit.layers.auto: the ``auto`` layers equal the torch layers off CUDA, keep their state dicts,
and run whichever candidate the dispatcher picks (a fake timer, and CPU tensors counted as CUDA ones,
run the Triton candidates through the interpreter on tiny shapes)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastvit import dispatch
from fastvit.layers import auto
from fastvit.layers.linear import ResidualLinear


def _kernel_fns():
    return {c.fn for cands in auto.OPS.values() for c in cands if c.kind == "kernel"}


class PreferKernels:
    """Calls the candidate once (so one that raises loses), then says kernels are 10x faster.
    A training call's candidate comes wrapped as a forward + backward step (``__wrapped__`` is the candidate)."""

    def __init__(self, prefer=None):
        self.prefer = prefer or _kernel_fns()
        self.calls = []

    def __call__(self, fn, args):
        self.calls.append(fn.__name__)
        fn(*args)
        return 0.1 if getattr(fn, "__wrapped__", fn) in self.prefer else 1.0


@pytest.fixture
def gpu_like(tmp_path, monkeypatch):
    """A dispatcher that treats CPU tensors as CUDA ones and prefers the kernels."""
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    timer = PreferKernels()
    d = dispatch.Dispatcher(timer=timer, cache_dir=tmp_path, on_cuda=lambda args: True, device_name=lambda args: "FakeGPU",
                            versions={"test": "1"})
    with dispatch.using(d):
        yield d, timer


def _copy(dst, src):
    dst.load_state_dict(src.state_dict())
    return dst


def test_off_cuda_equals_the_torch_layers():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    ln = nn.LayerNorm(16, eps=1e-6)
    nn.init.normal_(ln.weight)
    nn.init.normal_(ln.bias)
    for cls in (auto.AutoLayerNorm, auto.AutoPreNorm):
        a = _copy(cls(16, eps=1e-6), ln)
        assert torch.equal(a(x), ln(x))
        assert list(a.state_dict()) == list(ln.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(auto.AutoPreNorm(16)(x), nn.LayerNorm(16)(x))
    fc = nn.Linear(16, 32)
    for approx in ("none", "tanh"):
        a = _copy(auto.AutoLinearGELU(16, 32, approximate=approx), fc)
        assert torch.equal(a(x), F.gelu(fc(x), approximate=approx))
        assert list(a.state_dict()) == list(fc.state_dict())
    quick = _copy(auto.AutoLinearGELU(16, 32, approximate="quick"), fc)
    h = fc(x)
    torch.testing.assert_close(quick(x), h * torch.sigmoid(1.702 * h), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="approximate must be one of"):
        auto.AutoLinearGELU(16, 32, approximate="erf")
    assert not auto.AutoLinearGELU(16, 32, bias=False).state_dict().keys() - {"weight"}


def test_residual_linear_off_cuda():
    torch.manual_seed(0)
    x, res = torch.randn(4, 5, 16), torch.randn(4, 5, 8)
    ref = ResidualLinear(16, 8, drop_path=0.5)
    a = _copy(auto.AutoResidualLinear(16, 8, drop_path=0.5), ref)
    assert list(a.state_dict()) == list(ref.state_dict())
    ref.eval(), a.eval()
    assert torch.equal(a(x, res), ref(x, res))
    gamma = torch.rand(8)
    torch.testing.assert_close(a(x, res, gamma), res + gamma * F.linear(x, ref.weight, ref.bias), rtol=1e-6, atol=1e-6)
    ref.train(), a.train()  # stochastic depth draws the same samples from the same seed
    torch.manual_seed(1)
    want = ref(x, res)
    torch.manual_seed(1)
    assert torch.equal(a(x, res), want)


def test_attention_off_cuda():
    torch.manual_seed(0)
    qkv = torch.randn(2, 7, 3, 2, 8)
    q, k, v = auto.unpack_qkv(qkv)
    want = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    assert torch.equal(auto.auto_attention(q, k, v, scale=0.3), want)
    assert torch.equal(auto.auto_attention_packed(qkv, scale=0.3), want)
    torch.manual_seed(2)
    dropped = auto.auto_attention_packed(qkv, dropout_p=0.5, scale=0.3)
    torch.manual_seed(2)
    assert torch.equal(dropped, F.scaled_dot_product_attention(q, k, v, dropout_p=0.5, scale=0.3))


def test_create_model_on_cpu_dispatches_nothing():
    import fastvit

    d = dispatch.Dispatcher(timer=lambda fn, args: pytest.fail("timed on the CPU"), cache_dir=None)
    with dispatch.using(d):
        model = fastvit.create_model("vit_tiny_patch16_224", img_size=32, depth=1).eval()
        model(torch.randn(1, 3, 32, 32))
    assert all(r["chosen"] == "torch" or r["chosen"] == "sdpa" for r in d.choices())


def test_kernel_candidates_run_when_chosen(gpu_like):
    d, timer = gpu_like
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16)
    ln = auto.AutoLayerNorm(16)
    nn.init.normal_(ln.weight)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (16,), ln.weight, ln.bias, ln.eps), rtol=1e-5, atol=1e-5)
    fc1 = auto.AutoLinearGELU(16, 32, approximate="tanh")
    torch.testing.assert_close(fc1(x), F.gelu(F.linear(x, fc1.weight, fc1.bias), approximate="tanh"), rtol=1e-5, atol=1e-5)
    fc2 = auto.AutoResidualLinear(32, 16).eval()
    h, res = torch.randn(2, 3, 32), torch.randn(2, 3, 16)
    torch.testing.assert_close(fc2(h, res), res + F.linear(h, fc2.weight, fc2.bias), rtol=1e-5, atol=1e-5)
    recs = {r["op"]: r for r in d.choices()}
    assert {op: r["chosen"] for op, r in recs.items()} == {"layer_norm": "triton", "linear_gelu": "triton", "linear_residual": "triton"}
    assert recs["linear_gelu"]["key"] == ["float32", "tanh", 8, 32, 16, True]
    assert recs["layer_norm"]["key"] == ["float32", None, 8, 16, True]
    assert all(r["source"] == "measured" and r["device"] == "FakeGPU" for r in recs.values())
    # rows 6 and 7 share the bucket 8: no new measurement; 9 rows is a new key
    n = len(timer.calls)
    ln(torch.randn(7, 16))
    assert len(timer.calls) == n
    ln(torch.randn(9, 16))
    assert len(timer.calls) == n + 2


def test_gamma_and_quick_reach_a_candidate(gpu_like):
    # LayerScale's gamma and QuickGELU go to the kernel when it takes them, else the torch candidate wins
    d, _ = gpu_like
    torch.manual_seed(0)
    h, res, gamma = torch.randn(2, 3, 32), torch.randn(2, 3, 16), torch.rand(16)
    fc2 = auto.AutoResidualLinear(32, 16).eval()
    torch.testing.assert_close(fc2(h, res, gamma), res + gamma * F.linear(h, fc2.weight, fc2.bias), rtol=1e-5, atol=1e-5)
    fc1 = auto.AutoLinearGELU(32, 8, approximate="quick")
    pre = F.linear(h, fc1.weight, fc1.bias)
    torch.testing.assert_close(fc1(h), pre * torch.sigmoid(1.702 * pre), rtol=1e-5, atol=1e-5)
    for r in d.choices():
        assert r["chosen"] == "triton" or r["reasons"]["triton"].startswith("raised"), r


def test_attention_candidates_and_their_reasons(gpu_like):
    d, timer = gpu_like
    torch.manual_seed(0)
    qkv = torch.randn(2, 5, 3, 2, 8)
    q, k, v = auto.unpack_qkv(qkv)
    want = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(auto.auto_attention_packed(qkv), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(auto.auto_attention(q, k, v), want, rtol=1e-5, atol=1e-5)
    recs = {r["op"]: r for r in d.choices()}
    for op in ("attention", "attention_packed"):
        rec = recs[op]
        assert rec["key"] == ["float32", 2, 2, 5, 8]
        assert set(rec["reasons"]) >= {"sdpa-flash", "sdpa-cudnn", "triton"}  # fp32: not offered
        assert "float16" in rec["reasons"]["triton"]
        assert rec["kind"] == "torch" and rec["times"]["sdpa"] is not None
    # dropout never dispatches
    n = len(timer.calls)
    auto.auto_attention_packed(qkv, dropout_p=0.1)
    assert len(timer.calls) == n


def test_policy_torch_runs_no_kernel(gpu_like, monkeypatch):
    d, timer = gpu_like
    monkeypatch.setenv("FASTVIT_DISPATCH", "torch")
    ln = auto.AutoLayerNorm(16)
    ln(torch.randn(3, 16))
    assert timer.calls == [] and d.choices()[-1]["chosen"] == "torch"


def test_uses_dispatch():
    from fastvit.layers.attention import Attention

    assert auto.uses_dispatch(nn.Sequential(nn.Linear(2, 2), auto.AutoLayerNorm(2)))
    assert not auto.uses_dispatch(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)))
    att = Attention(8, 2, attn_impl="sdpa")
    assert not auto.uses_dispatch(att)
    att.attn_fn = auto.auto_attention_packed
    assert auto.uses_dispatch(att)


def test_auto_layers_copy_and_pickle():
    import copy
    import pickle

    for layer in (auto.AutoLayerNorm(8), auto.AutoPreNorm(8), auto.AutoLinearGELU(8, 16, approximate="quick"),
                  auto.AutoResidualLinear(8, 8, drop_path=0.1)):
        for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            assert type(clone) is type(layer) and clone.state_dict().keys() == layer.state_dict().keys()
    assert pickle.loads(pickle.dumps(auto.auto_attention_packed)) is auto.auto_attention_packed


class Branch(nn.Module):
    """A block's shape: norm -> attention -> proj + residual -> norm -> fc1 -> fc2 + residual, all auto."""

    def __init__(self, d=16, heads=2):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = auto.AutoPreNorm(d), auto.AutoPreNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = auto.AutoResidualLinear(d, d)
        self.fc1 = auto.AutoLinearGELU(d, 2 * d)
        self.fc2 = auto.AutoResidualLinear(2 * d, d)
        self.gamma = nn.Parameter(torch.full((d,), 0.5))

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads)
        a = auto.auto_attention_packed(qkv).transpose(1, 2).reshape(b, n, d)
        x = self.proj(a, x, self.gamma)
        return self.fc2(self.fc1(self.norm2(x)), x)


def test_auto_layers_trace_with_fullgraph(tmp_path, monkeypatch):
    import fastvit

    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    layer_norm_kernel = auto.LAYER_NORM_CANDIDATES[1].fn
    timer = PreferKernels(prefer={layer_norm_kernel})  # LayerNorm: the kernel (interpreter); the rest: torch
    d = dispatch.Dispatcher(timer=timer, cache_dir=None, on_cuda=lambda args: True, device_name=lambda args: "FakeGPU",
                            versions={"test": "1"})
    torch.manual_seed(0)
    model = Branch().eval()
    x = torch.randn(2, 5, 16)
    want = model(x)  # off CUDA (the default dispatcher): the torch path
    with dispatch.using(d):
        torch._dynamo.reset()
        graphs = []

        def backend(gm, inputs):
            graphs.append(gm)
            return gm

        compiled = fastvit.compile(model, backend=backend)  # fullgraph=True
        got = compiled(x)
        n = len(timer.calls)
        assert n > 0 and torch.allclose(compiled(x), got) and len(timer.calls) == n
    torch._dynamo.reset()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    [graph] = graphs  # one graph, and it calls the chosen kernel for both norms
    code = graph.code
    assert code.count("torch.ops.fastvit.layer_norm_fwd") == 2, code
    chosen = {r["op"]: r["chosen"] for r in d.choices()}
    assert chosen == {"layer_norm": "triton", "attention_packed": "sdpa", "linear_residual": "torch", "linear_gelu": "torch"}


def test_fresh_process_compiles_auto_layers_with_fullgraph():
    # nothing dispatch-related is constructed inside the trace (a first use under dynamo must not break the graph)
    import os
    import subprocess
    import sys

    code = (
        "import torch, fastvit\n"
        "from fastvit.layers import auto\n"
        "m = torch.nn.Sequential(auto.AutoLayerNorm(8), auto.AutoLinearGELU(8, 16))\n"
        "x = torch.randn(2, 8)\n"
        "c = torch.compile(m, backend='eager', fullgraph=True)\n"
        "assert torch.equal(c(x), m(x))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ), timeout=300)


def test_layer_scale_in_a_third_dtype_is_promoted_as_the_triton_layers_do(gpu_like):
    """One rule for the fused residual branch (fastvit.layers.fused_branch), shared by auto and the Triton layers:
    a LayerScale gamma in neither the GEMM's dtype nor float32 is promoted to float32, as eager's branch * gamma."""
    from fastvit.layers.linear import TritonResidualLinear

    d, _ = gpu_like
    torch.manual_seed(0)
    h, res = torch.randn(2, 3, 32), torch.randn(2, 3, 16)
    gamma = torch.rand(16).to(torch.float16)  # a third dtype
    fc2 = auto.AutoResidualLinear(32, 16).eval()
    want = res + F.linear(h, fc2.weight, fc2.bias) * gamma  # eager: promoted to float32
    got = fc2(h, res, gamma)
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    [rec] = [r for r in d.choices() if r["op"] == "linear_residual"]
    assert rec["chosen"] == "triton" and rec["key"][-1] == "float32", rec  # the kernel took the promoted gamma
    triton = _copy(TritonResidualLinear(32, 16), fc2).eval()
    torch.testing.assert_close(triton(h, res, gamma), want, rtol=1e-5, atol=1e-5)


def test_the_fused_branch_rule():
    from fastvit.layers.fused_branch import branch_scale, fused_branch

    x, res = torch.randn(2, 3, 4, dtype=torch.bfloat16), torch.randn(2, 3, 4)
    assert fused_branch(x, res, None, training=False, dropout_p=0.5, drop_path_p=0.5) == (None, False)
    assert fused_branch(x, res, None, training=True, dropout_p=0.5, drop_path_p=0.0) is None  # dropout: separate ops
    assert fused_branch(x, res.half(), None, training=False, dropout_p=0.0, drop_path_p=0.0) is None  # third-dtype residual
    for g_dtype, want in ((torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32), (torch.float16, torch.float32)):
        gamma, stochastic = fused_branch(x, res, torch.ones(4, dtype=g_dtype), training=True, dropout_p=0.0, drop_path_p=0.25)
        assert gamma.dtype == want and stochastic
    torch.manual_seed(3)
    scale = branch_scale(res, 0.25)
    assert scale.dtype == torch.float32 and scale.shape == (2,) and set(scale.tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}


def test_block_norm_old_name_is_an_alias():
    """AutoPreNorm was renamed AutoBlockNorm (a block's norm, not CLIP's pre_norm); the old name still works."""
    from fastvit.layers import auto

    assert auto.AutoPreNorm is auto.AutoBlockNorm
