"""auto's correctness gate and its modes, on the CPU: an injected device predicate makes CPU tensors count as
CUDA ones, an injected timer says which candidate is fast. A kernel must agree with PyTorch's candidate on the
measured call (at most 2x PyTorch's error against a float64 reference, plus one ulp; or its declared bound)
before it may be chosen; a training call is checked and timed forward + backward, and keyed apart."""

import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastvit import dispatch
from fastvit.dispatch import Candidate, Dispatcher, gate

BF16 = torch.bfloat16


class Timer:
    """Says each candidate's time from a table of the candidates' own functions (a training call's
    forward + backward step is looked up by the candidate it wraps); calls each once, as the real timer does."""

    def __init__(self, seconds):
        self.seconds = dict(seconds)
        self.calls = []

    def __call__(self, fn, args):
        inner = getattr(fn, "__wrapped__", fn)
        self.calls.append((inner, fn is not inner))
        fn(*args)
        return self.seconds[inner]


def make(tmp_path, seconds, **kw):
    timer = Timer(seconds)
    d = Dispatcher(timer=timer, cache_dir=tmp_path, on_cuda=lambda args: True, device_name=lambda args: "FakeGPU",
                   versions={"test": "1"}, **kw)
    return d, timer


@pytest.fixture(autouse=True)
def _no_env_policy(monkeypatch):
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)


def softmax_torch(x):
    return torch.softmax(x, -1)


def softmax_upcast(x):  # a right kernel: computes in fp32, rounds once
    return torch.softmax(x.float(), -1).to(x.dtype)


def softmax_wrong(x):  # a fast, wrong kernel: 1.5% too large everywhere (bf16 rounding is 0.4%)
    return torch.softmax(x, -1) * (1 + 2**-6)


def softmax_nan(x):
    return torch.full_like(x, float("nan"))


TORCH = Candidate("torch", softmax_torch, "torch")
RIGHT = Candidate("triton", softmax_upcast, "kernel")
WRONG = Candidate("triton", softmax_wrong, "kernel")


def _x(dtype=BF16, requires_grad=False):
    torch.manual_seed(0)
    return torch.randn(4, 64).mul(3).to(dtype).requires_grad_(requires_grad)


def test_a_wrong_fast_kernel_is_never_chosen_and_its_error_is_recorded(tmp_path):
    d, timer = make(tmp_path, {softmax_torch: 1.0, softmax_wrong: 0.01})
    x = _x()
    with pytest.warns(dispatch.KernelMismatchWarning, match="triton kernel for softmax is not used: disagrees with PyTorch"):
        assert d.choose("softmax", ("bf16", 4), (TORCH, WRONG), (x,)) is TORCH
    assert [fn for fn, _ in timer.calls] == []  # disqualified before timing: one candidate left, nothing to time
    [rec] = d.choices()
    err = rec["errors"]["triton"]
    assert err["ok"] is False and rec["chosen"] == "torch" and rec["source"] == "only"
    want = (softmax_wrong(x).double() - torch.softmax(x.double(), -1)).abs().max().item()
    assert err["error"] == pytest.approx(want) and err["error"] > err["allowed"] > 2 * err["torch_error"]
    assert "disagrees with PyTorch" in rec["reasons"]["triton"] and f"{err['error']:.3g}" in rec["reasons"]["triton"]
    # warned once per op and kernel: a second key is gated (and recorded) again, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert d.choose("softmax", ("bf16", 8), (TORCH, WRONG), (_x().repeat(2, 1),)) is TORCH
    assert d.choices()[-1]["errors"]["triton"]["ok"] is False
    # with two torch candidates left they are timed, and the verdict is kept with the choice in the disk cache:
    # a new process reads it and neither checks nor times anything
    torch2 = Candidate("torch2", softmax_upcast, "torch")
    d, timer = make(tmp_path / "disk", {softmax_torch: 1.0, softmax_upcast: 0.9, softmax_wrong: 0.01})
    with pytest.warns(dispatch.KernelMismatchWarning):
        assert d.choose("softmax", ("bf16", 4), (TORCH, torch2, WRONG), (x,)) is torch2
    assert [fn for fn, _ in timer.calls] == [softmax_torch, softmax_upcast]
    d2, timer2 = make(tmp_path / "disk", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert d2.choose("softmax", ("bf16", 4), (TORCH, torch2, WRONG), (x,)) is torch2
    [rec2] = d2.choices()
    assert timer2.calls == [] and rec2["source"] == "cache" and rec2["errors"]["triton"]["ok"] is False


def test_a_right_kernel_passes_and_is_timed(tmp_path):
    d, timer = make(tmp_path, {softmax_torch: 1.0, softmax_upcast: 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert d.choose("softmax", ("bf16", 4), (TORCH, RIGHT), (_x(),)) is RIGHT
    [rec] = d.choices()
    assert rec["errors"]["triton"]["ok"] is True and rec["errors"]["triton"]["error"] <= rec["errors"]["triton"]["allowed"]
    assert rec["source"] == "measured" and [fn for fn, _ in timer.calls] == [softmax_torch, softmax_upcast]


def test_nan_and_raising_kernels_are_disqualified(tmp_path):
    d, _ = make(tmp_path, {softmax_torch: 1.0, softmax_nan: 0.01})
    with pytest.warns(dispatch.KernelMismatchWarning):
        assert d.choose("softmax", ("bf16", 4), (TORCH, Candidate("triton", softmax_nan, "kernel")), (_x(),)) is TORCH

    def boom(x):
        raise RuntimeError("kernel exploded")

    d, _ = make(tmp_path / "b", {softmax_torch: 1.0})
    with pytest.warns(dispatch.KernelMismatchWarning, match="kernel exploded"):
        assert d.choose("softmax", ("bf16", 4), (TORCH, Candidate("triton", boom, "kernel")), (_x(),)) is TORCH


def test_a_declared_bound_replaces_the_rule(tmp_path):
    # the wrong kernel is 1.6% off the reference (of max 1): a bound of 2% lets it in, 1% does not
    loose = Candidate("triton", softmax_wrong, "kernel", bound=0.02)
    d, _ = make(tmp_path, {softmax_torch: 1.0, softmax_wrong: 0.01})
    assert d.choose("softmax", ("bf16", 4), (TORCH, loose), (_x(),)) is loose
    seen = []

    def exact(dtype, torch_error, scale):  # a declaration's Tolerance.bound: 0 lets only an exact kernel in
        seen.append((dtype, torch_error, scale))
        return 0.0

    strict = Candidate("triton", softmax_upcast, "kernel", bound=exact)
    d, _ = make(tmp_path / "s", {softmax_torch: 1.0, softmax_upcast: 0.01})
    with pytest.warns(dispatch.KernelMismatchWarning):
        assert d.choose("softmax", ("bf16", 4), (TORCH, strict), (_x(),)) is TORCH
    [(dtype, torch_error, scale)] = seen
    assert dtype == BF16 and 0 < torch_error < 0.01 and scale == 1.0
    with pytest.raises(TypeError, match="bound"):
        Candidate("triton", softmax_wrong, "kernel", bound=-1.0)


def test_a_declared_reference_is_used(tmp_path):
    # a reference that says softmax is 2x: PyTorch's candidate is then "wrong" by 1, the kernel that doubles right
    def doubled(x):
        return 2 * torch.softmax(x, -1)

    kernel = Candidate("triton", doubled, "kernel", reference=doubled, bound=1e-2)
    d, _ = make(tmp_path, {softmax_torch: 1.0, doubled: 0.5})
    assert d.choose("softmax", ("bf16", 4), (TORCH, kernel), (_x(),)) is kernel


def test_the_rule_itself():
    ref = [torch.tensor([1.0, 2.0], dtype=torch.float64)]
    base = [torch.tensor([1.0, 2.0 + 2**-8], dtype=BF16)]  # 2**-8 off... rounded by bf16 to 2.0: error 0
    assert gate.compare([torch.tensor([1.0, 2.0], dtype=BF16)], base, ref).ok
    # the floor at the reference's scale (bf16: one ulp, 2**-7, at scale 2)
    assert gate.compare([torch.tensor([1.0, 2.0 + 2**-6], dtype=BF16)], base, ref).ok
    assert not gate.compare([torch.tensor([1.0, 2.0 + 2**-5], dtype=BF16)], base, ref).ok
    # where the reference is not finite the kernel must match it exactly
    ref = [torch.tensor([float("inf"), 1.0], dtype=torch.float64)]
    same = [torch.tensor([float("inf"), 1.0])]
    assert gate.compare(same, same, ref).ok
    assert not gate.compare([torch.tensor([float("-inf"), 1.0])], same, ref).ok
    assert not gate.compare([torch.tensor([1.0])], same, ref).ok  # wrong shape


class _WrongGrad(torch.autograd.Function):
    """x * 2 forward; a backward 10% too large."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2.2


def double_torch(x):
    return x * 2


def double_wrong_grad(x):
    return _WrongGrad.apply(x)


def test_training_calls_are_checked_and_timed_forward_backward_and_keyed_apart(tmp_path):
    cands = (Candidate("torch", double_torch, "torch"), Candidate("triton", double_wrong_grad, "kernel"))
    d, timer = make(tmp_path, {double_torch: 1.0, double_wrong_grad: 0.1})
    x = torch.randn(3, 8)
    # inference: the forward agrees, the kernel is faster: chosen, timed forward only
    with torch.no_grad():
        assert d.choose("double", ("f32", 4), cands, (x.requires_grad_(),)).name == "triton"
    assert timer.calls == [(double_torch, False), (double_wrong_grad, False)]
    # the same key under grad: a new choice, checked with a backward (the kernel's gradient is wrong)
    with pytest.warns(dispatch.KernelMismatchWarning, match="disagrees"):
        assert d.choose("double", ("f32", 4), cands, (x,)).name == "torch"
    inference, training = d.choices()
    assert (inference["mode"], training["mode"]) == ("inference", "training") and inference["key"] == training["key"]
    assert training["errors"]["triton"]["error"] == pytest.approx(0.2 * float(training_grad_out(x).abs().max()), rel=1e-6)
    # a training call whose kernel agrees is timed forward + backward
    right = (Candidate("torch", double_torch, "torch"), Candidate("triton2", _double_kernel, "kernel"))
    d2, timer2 = make(tmp_path / "2", {double_torch: 1.0, _double_kernel: 0.1})
    assert d2.choose("double", ("f32", 4), right, (x,)).name == "triton2"
    assert timer2.calls == [(double_torch, True), (_double_kernel, True)]
    assert BACKWARDS  # the step the timer ran went through the candidate's backward
    # grad mode on but nothing requires grad: inference
    assert dispatch.mode_of((torch.randn(2),)) == "inference" and dispatch.mode_of((x,)) == "training"
    with torch.no_grad():
        assert dispatch.mode_of((x,)) == "inference"


BACKWARDS = []


class _Double(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        BACKWARDS.append(g.shape)
        return g * 2


def _double_kernel(x):
    return _Double.apply(x)


def training_grad_out(x):
    """The output gradient the gate's backward uses for an output shaped like ``x`` (the first output)."""
    return gate._grad_out(x.detach(), 0)


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_the_block_norm_fork_under_grad_is_timed_forward_backward(tmp_path):
    """The fused residual junction pays off in the backward: under grad its candidates are timed with it."""
    from fastvit.layers import auto

    seen = {}

    def timer(fn, args):
        with _Ops() as ops:
            fn(*args)
        seen[getattr(fn, "__wrapped__", fn).__name__] = ops.names
        return 0.1 if fn.__name__.endswith("_triton") else 1.0

    d = Dispatcher(timer=timer, cache_dir=tmp_path, on_cuda=lambda args: True, device_name=lambda args: "FakeGPU",
                   versions={"test": "1"})
    with dispatch.using(d):
        norm = auto.AutoBlockNorm(16)
        x = torch.randn(2, 3, 16, requires_grad=True)
        out, res = norm.fork(x)
        with torch.no_grad():
            norm.fork(x)
    fork = [r for r in d.choices() if r["op"] == "layer_norm_fork"]
    assert [r["mode"] for r in fork] == ["training", "inference"] and fork[0]["key"] == fork[1]["key"]
    assert fork[0]["chosen"] == "triton" and fork[0]["errors"]["triton"]["ok"]
    torch_ops = seen["_layer_norm_fork_torch"]  # the last timing of each: the inference one
    assert not any("backward" in n for n in torch_ops)
    # the training timing ran each fork's backward: torch's LayerNorm backward, the kernel's backward op
    d2 = Dispatcher(timer=timer, cache_dir=None, on_cuda=lambda args: True, device_name=lambda args: "FakeGPU",
                    versions={"test": "1"})
    with dispatch.using(d2):
        auto.AutoBlockNorm(16).fork(torch.randn(2, 3, 16, requires_grad=True))
    assert any("native_layer_norm_backward" in n for n in seen["_layer_norm_fork_torch"])
    assert any("bwd" in n or "backward" in n for n in seen["_layer_norm_fork_triton"] if "fastvit" in n), seen["_layer_norm_fork_triton"]
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(x, (16,), norm.weight, norm.bias, norm.eps), rtol=1e-5, atol=1e-5)
    assert res is x or torch.equal(res, x)
