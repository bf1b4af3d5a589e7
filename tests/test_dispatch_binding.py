"""auto decides once: a layer binds its choice per (op, key, device, mode) and its forward runs it with no
dispatcher, environment or import work; ``fastvit.dispatch.prepare`` binds ahead of time, so a plain
``torch.compile`` runs the measured choices with zero graph breaks; without it compiled code runs PyTorch's
ops and says so once. On the CPU: an injected device predicate and timer, the kernels under the interpreter."""

import builtins
import copy
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastvit import dispatch
from fastvit.dispatch import binding
from fastvit.layers import auto

LN_KERNEL = auto.LAYER_NORM_CANDIDATES[1].fn
FORK_KERNEL = auto.LAYER_NORM_FORK_CANDIDATES[1].fn


class Prefer:
    """Calls each candidate once; the ones in ``fast`` take 0.1 s, the rest 1 s."""

    def __init__(self, *fast):
        self.fast, self.calls = set(fast), []

    def __call__(self, fn, args):
        inner = getattr(fn, "__wrapped__", fn)
        self.calls.append(inner.__name__)
        fn(*args)
        return 0.1 if inner in self.fast else 1.0


@pytest.fixture
def gpu_like(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    timer = Prefer(LN_KERNEL, FORK_KERNEL)
    d = dispatch.Dispatcher(timer=timer, cache_dir=tmp_path, on_cuda=lambda args: True, device_name=lambda args: "FakeGPU",
                            versions={"test": "1"})
    with dispatch.using(d):
        yield d, timer


class Block(nn.Module):
    """A block's shape, all auto: fork -> qkv -> attention -> proj + residual (LayerScale) -> norm -> fc1 -> fc2 + residual."""

    def __init__(self, d=16, heads=2):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = auto.AutoBlockNorm(d), auto.AutoBlockNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = auto.AutoResidualLinear(d, d)
        self.fc1 = auto.AutoLinearGELU(d, 2 * d)
        self.fc2 = auto.AutoResidualLinear(2 * d, d)
        self.gamma = nn.Parameter(torch.full((d,), 0.5))
        self.norm = auto.AutoLayerNorm(d)

    def forward(self, x):
        b, n, d = x.shape
        h, x = self.norm1.fork(x)
        qkv = self.qkv(h).view(b, n, 3, self.heads, d // self.heads)
        a = auto.auto_attention_packed(qkv).transpose(1, 2).reshape(b, n, d)
        x = self.proj(a, x, self.gamma)
        h, x = self.norm2.fork(x)
        return self.norm(self.fc2(self.fc1(h), x))


def _model():
    torch.manual_seed(0)
    return Block().eval()


def test_a_bound_forward_asks_nothing(gpu_like, monkeypatch):
    d, timer = gpu_like
    ln = auto.AutoLayerNorm(16)
    nn.init.normal_(ln.weight)
    x = torch.randn(3, 16)
    with torch.no_grad():
        first = ln(x)
    assert timer.calls == ["_layer_norm_torch", "_layer_norm_triton"]
    assert list(ln._bound.values()) == [auto.LAYER_NORM_CANDIDATES[1]]
    # from now on: no dispatcher, no policy from the environment, no import, no kernel lookup
    monkeypatch.setattr(binding, "get_dispatcher", lambda: pytest.fail("asked the dispatcher"))
    monkeypatch.setattr(auto, "kernel_op", lambda name: pytest.fail("looked the kernel up again"))
    monkeypatch.setenv("FASTVIT_DISPATCH", "torch")
    real_import, imported = builtins.__import__, []

    def spy(name, *args, **kwargs):
        imported.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spy)
    with torch.no_grad():
        again = ln(x)
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert not [n for n in imported if n.startswith(("fastvit", "os", "importlib"))], imported
    assert torch.equal(again, first) and len(timer.calls) == 2
    torch.testing.assert_close(again, F.layer_norm(x, (16,), ln.weight, ln.bias, ln.eps), rtol=1e-5, atol=1e-5)


def test_prepare_then_a_plain_compile_runs_the_choices_with_no_graph_break(gpu_like):
    d, timer = gpu_like
    model = _model()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        want = model(x)  # eager (and binding) on the first call
    dispatch.unbind_all()
    made = dispatch.prepare(model, x, batch_sizes=[2, 5])
    assert {(r["op"], r["key"][2] if r["op"].startswith("layer_norm") else None) for r in made} >= {
        ("layer_norm_fork", 16), ("layer_norm_fork", 32)}  # rows 10 and 25: buckets 16 and 32
    n = len(timer.calls)
    torch._dynamo.reset()
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm.code)
        from torch._dynamo.backends.registry import lookup_backend

        return lookup_backend("aot_eager")(gm, inputs)

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error", dispatch.UnpreparedWarning)
        got = compiled(x)
        got5 = compiled(torch.cat([x, x, x[:1]]))  # the other prepared batch: its choices are bound too
    torch._dynamo.reset()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got5.shape[0] == 5 and len(timer.calls) == n  # nothing measured while compiling or running
    assert all(code.count("torch.ops.fastvit.layer_norm") == 3 for code in graphs), graphs  # 2 forks + the final norm
    assert not [r for r in d.choices() if r["source"] == "unprepared"]


def test_without_prepare_compiled_code_runs_torch_and_says_so_once(gpu_like):
    from fastvit.auto_report import auto_report

    d, timer = gpu_like
    model = _model()
    x = torch.randn(2, 5, 16)
    torch._dynamo.reset()
    with pytest.warns(dispatch.UnpreparedWarning, match="fastvit.prepare") as caught, torch.no_grad():
        got = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    torch._dynamo.reset()
    assert len([w for w in caught if w.category is dispatch.UnpreparedWarning]) == 1
    assert timer.calls == []  # nothing measured inside the trace
    unprepared = [r for r in d.choices() if r["source"] == "unprepared"]
    assert {r["op"] for r in unprepared} == {"layer_norm_fork", "attention_packed", "linear_residual", "linear_gelu", "layer_norm"}
    assert all(r["chosen"] in ("torch", "sdpa") and r["mode"] == "inference" for r in unprepared)
    with dispatch.using(dispatch.Dispatcher(cache_dir=None)):  # PyTorch's path, computed eagerly off "CUDA"
        with torch.no_grad():
            want = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    lines = "\n".join(auto_report("vit_tiny_patch16_224", 1, "fp32", "cpu"))  # fastvit info says it too
    assert "compiled code ran PyTorch's ops for 6 unprepared call(s)" in lines, lines


def test_grad_mode_is_bound_apart(gpu_like):
    d, timer = gpu_like
    norm = auto.AutoBlockNorm(16)
    x = torch.randn(2, 3, 16, requires_grad=True)
    with torch.no_grad():
        norm.fork(x)
    norm.fork(x)
    modes = sorted(slot[3] for slot in norm._bound)
    assert modes == ["inference", "training"]
    assert [r["mode"] for r in d.choices() if r["op"] == "layer_norm_fork"] == ["inference", "training"]
    made = dispatch.prepare(_model(), torch.randn(2, 5, 16), grad=True)
    assert made and {r["mode"] for r in made} == {"training"}


def test_a_new_dispatcher_unbinds_and_copies_start_empty(gpu_like):
    ln = auto.AutoLayerNorm(8)
    with torch.no_grad():
        ln(torch.randn(2, 8))
    assert len(ln._bound) == 1
    for clone in (copy.deepcopy(ln), pickle.loads(pickle.dumps(ln))):
        assert isinstance(clone._bound, dispatch.Bindings) and len(clone._bound) == 0
        with torch.no_grad():
            clone(torch.randn(2, 8))  # binds its own
        assert len(clone._bound) == 1
    with dispatch.using(dispatch.Dispatcher(cache_dir=None)):
        assert len(ln._bound) == 0 and len(auto.PACKED_ATTENTION_BOUND) == 0
        with torch.no_grad():
            ln(torch.randn(2, 8))  # off CUDA now: the plain torch path
        assert list(ln._bound.values()) == [dispatch.OFF_CUDA]
    assert len(ln._bound) == 0


def test_prepare_checks_its_arguments(gpu_like):
    model = _model()
    for bad in ([], [0], [2.5], "8", [True]):
        with pytest.raises(ValueError, match="batch_sizes"):
            dispatch.prepare(model, torch.randn(2, 5, 16), batch_sizes=bad)
    with pytest.raises(TypeError, match="nn.Module"):
        dispatch.prepare(lambda x: x, torch.randn(2))


def test_the_unprepared_note_is_what_dynamo_calls_a_constant():
    # binding marks the note as torch.compiler.assume_constant_result does, without importing dynamo at import
    def f():
        return 0

    torch.compiler.assume_constant_result(f)
    marks = {k: v for k, v in vars(f).items()}
    assert marks and all(getattr(binding._note_unprepared, k, None) == v for k, v in marks.items())


def test_off_cuda_compiled_code_is_silent():
    model = _model()
    x = torch.randn(2, 5, 16)
    d = dispatch.Dispatcher(timer=lambda fn, args: pytest.fail("timed"), cache_dir=None)  # the real device predicate
    torch._dynamo.reset()
    with dispatch.using(d), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error", dispatch.UnpreparedWarning)
        got = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
        want = model(x)
    torch._dynamo.reset()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not [r for r in d.choices() if r["source"] == "unprepared"]


def test_auto_layers_trace_with_torch_fx():
    """FX symbolic tracing (timm's feature extraction) sees the plain torch path, as it did before binding."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.fc1 = auto.AutoBlockNorm(8), auto.AutoLinearGELU(8, 16)
            self.fc2, self.final = auto.AutoResidualLinear(16, 8), auto.AutoLayerNorm(8)

        def forward(self, x, qkv):
            h, x = self.norm.fork(x)
            a = auto.auto_attention_packed(qkv)
            return self.final(self.fc2(self.fc1(h), x)), a

    torch.manual_seed(0)
    net = Net().eval()
    x, qkv = torch.randn(2, 3, 8), torch.randn(2, 3, 3, 2, 4)
    gm = torch.fx.symbolic_trace(net)
    for got, want in zip(gm(x, qkv), net(x, qkv)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
