"""fastvit.layers.varlen: every impl of the packed attention entry point against the fp64 reference,
the ``auto`` choice (off CUDA: per-sequence SDPA; with a dispatcher that counts CPU tensors as CUDA
ones, a measured and correctness-gated pick), the attn_impl mapping, and bad input."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from parity import assert_close_vs_ref

from fastvit import dispatch
from fastvit.dispatch import Candidate
from fastvit.kernels.reference import varlen_attention_ref
from fastvit.layers import varlen

F32, F16 = torch.float32, torch.float16
LENGTHS = (5, 1, 0, 9, 3)  # odd, one token, empty


def _cu(lengths, device="cpu"):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)


def _inputs(lengths=LENGTHS, heads=2, dim=16, dtype=F32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q, k, v, do = (torch.randn(total, heads, dim, generator=g).to(device=device, dtype=dtype) for _ in range(4))
    return q, k, v, do, _cu(lengths, device)


def _forward_backward(fn, q, k, v, do):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, do.to(out.dtype))
    return (out.detach(), *grads)


def _check_against_reference(impl, q, k, v, do, cu, max_seqlen=None, scale=None):
    got = _forward_backward(lambda *t: varlen.varlen_attention(*t, cu, max_seqlen, scale, impl=impl), q, k, v, do)
    ref = _forward_backward(lambda *t: varlen_attention_ref(*t, cu, scale=scale), *(t.double() for t in (q, k, v)), do)
    eager = _forward_backward(lambda *t: varlen_attention_ref(*t, cu, scale=scale, upcast=False), q, k, v, do)
    atol = 1e-5 if q.dtype == F32 else 1e-4
    for name, g, r, e in zip(("out", "dq", "dk", "dv"), got, ref, eager):
        assert g.dtype == q.dtype and g.shape == q.shape, (impl, name)
        assert_close_vs_ref(g, e, r, factor=2.0, atol=atol, name=f"{impl} {name}")
    return got


RUNNABLE_HERE = ("torch", "padded", "triton", "auto")


@pytest.mark.parametrize("impl", RUNNABLE_HERE)
@pytest.mark.parametrize("dtype", [F32, F16], ids=["fp32", "fp16"])
def test_every_impl_agrees_with_the_reference(impl, dtype, device):
    q, k, v, do, cu = _inputs(dtype=dtype, device=device)
    _check_against_reference(impl, q, k, v, do, cu)


@pytest.mark.parametrize("impl", ["torch", "padded", "triton"])
def test_many_sequences_scale_and_a_larger_max_seqlen(impl, device):
    """7 sequences, head dim 72, a custom scale, max_seqlen above the longest (padded pads further)."""
    lengths = (3, 7, 1, 9, 2, 11, 5)
    q, k, v, do, cu = _inputs(lengths, heads=3, dim=72, device=device, seed=1)
    _check_against_reference(impl, q, k, v, do, cu, max_seqlen=16, scale=0.3)


@pytest.mark.parametrize("impl", ["torch", "auto"])
def test_sequences_of_one_length_take_one_batched_call(impl, device, monkeypatch):
    """An image batch (4 sequences of 6 tokens) is one SDPA call over the (S, H, n, D) view, and equals
    the reference; mixed lengths keep one call per sequence."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(varlen.F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(a[0].shape) or sdpa(*a, **kw))
    q, k, v, do, cu = _inputs((6, 6, 6, 6), heads=2, dim=8, device=device, seed=3)
    _check_against_reference(impl, q, k, v, do, cu)
    if device == "cpu":
        assert calls == [torch.Size([4, 2, 6, 8])]
    calls.clear()
    q, k, v, do, cu = _inputs((6, 5), heads=2, dim=8, device=device, seed=3)
    _check_against_reference("torch", q, k, v, do, cu)
    assert len(calls) == 2


class _CudaLike:
    """What torch_varlen_reason reads of a tensor, as a CUDA tensor would answer."""

    def __init__(self, dtype=F16, dim=64, last_stride=1):
        self.device, self.dtype, self.shape, self._last = torch.device("cuda"), dtype, (9, 2, dim), last_stride

    def stride(self, i):
        return self._last


def test_torch_varlen_says_why_it_cannot_run_here():
    q, k, v, _, cu = _inputs()
    if not torch.cuda.is_available():
        reason = varlen.torch_varlen_reason(q, k, v, cu)
        assert "CUDA only" in reason or "no torch.nn.attention.varlen" in reason
        with pytest.raises(RuntimeError, match="'torch_varlen' cannot run this call: "):
            varlen.varlen_attention(q, k, v, cu, impl="torch_varlen")
    if importlib.util.find_spec("torch.nn.attention.varlen") is None:
        return
    ok = _CudaLike()
    assert varlen.torch_varlen_reason(ok, ok, ok, cu) is None
    assert "float16 or bfloat16, got float32" in varlen.torch_varlen_reason(_CudaLike(F32), ok, ok, cu)
    assert "got 60" in varlen.torch_varlen_reason(_CudaLike(dim=60), ok, ok, cu)
    assert varlen.torch_varlen_reason(_CudaLike(dim=72), ok, ok, cu) is None
    assert "unit stride" in varlen.torch_varlen_reason(ok, _CudaLike(last_stride=2), ok, cu)


@pytest.mark.cuda
def test_torch_varlen_on_cuda():
    q, k, v, do, cu = _inputs(dim=64, dtype=F16, device="cuda")
    if varlen.torch_varlen_reason(q, k, v, cu) is not None:
        pytest.skip(varlen.torch_varlen_reason(q, k, v, cu))
    _check_against_reference("torch_varlen", q, k, v, do, cu)


def test_impls_are_one_table_with_the_candidates():
    assert set(varlen.VARLEN_IMPLS) == {*varlen.IMPLS, "auto"}
    assert [c.name for c in varlen.VARLEN_CANDIDATES][0] == "torch"  # the gate's baseline
    (kernel,) = [c for c in varlen.VARLEN_CANDIDATES if c.kind == "kernel"]
    assert kernel.name == "triton" and kernel.reference is not None and callable(kernel.bound)


def test_attn_impl_mapping():
    assert varlen.varlen_impl_for("auto") == "auto" and varlen.varlen_impl_for("triton") == "triton"
    assert varlen.varlen_impl_for("sdpa") == "torch" and varlen.varlen_impl_for("eager") == "torch"
    assert varlen.varlen_impl_for("flash_attn") == "torch_varlen"
    for impl in varlen.VARLEN_IMPLS:
        assert varlen.varlen_impl_for(impl) == impl
    from fastvit.layers.attention import BACKENDS

    assert set(BACKENDS) <= set(varlen.ATTN_IMPL_TO_VARLEN)  # every model attn_impl has a varlen impl
    with pytest.raises(ValueError, match="no varlen attention impl for attn_impl 'fast'"):
        varlen.varlen_impl_for("fast")


BAD = [
    ([1, 6, 7, 16, 18], ValueError, "expected cu_seqlens rising"),  # not starting at 0
    ([0, 6, 5, 16, 18], ValueError, "expected cu_seqlens rising"),  # decreasing
    ([0, 5, 6, 15, 17], ValueError, "expected cu_seqlens rising"),  # not ending at T = 18
    ("int64", ValueError, "expected cu_seqlens a 1-D int32"),
    ("2d", ValueError, "expected cu_seqlens a 1-D int32"),
    ([0], ValueError, "expected cu_seqlens a 1-D int32 tensor of S \\+ 1 >= 2"),
]


@pytest.mark.parametrize("impl", varlen.VARLEN_IMPLS)
@pytest.mark.parametrize("bad, error, words", BAD, ids=["start", "decreasing", "end", "int64", "2d", "one"])
def test_bad_offsets_raise_naming_cu_seqlens(bad, error, words, impl):
    q, k, v, _, cu = _inputs()
    if bad == "int64":
        bad_cu = cu.long()
    elif bad == "2d":
        bad_cu = cu[None]
    else:
        bad_cu = torch.tensor(bad, dtype=torch.int32)
    with pytest.raises(error, match=words):
        varlen.varlen_attention(q, k, v, bad_cu, impl=impl)


def test_bad_arguments():
    q, k, v, _, cu = _inputs()
    with pytest.raises(ValueError, match="unknown varlen attention impl 'flash'"):
        varlen.varlen_attention(q, k, v, cu, impl="flash")
    with pytest.raises(ValueError, match=r"max_seqlen >= the longest sequence \(9\)"):
        varlen.varlen_attention(q, k, v, cu, max_seqlen=8)
    with pytest.raises(TypeError, match="max_seqlen an int"):
        varlen.varlen_attention(q, k, v, cu, max_seqlen=9.0)
    with pytest.raises(ValueError, match=r"\(T, H, D\)"):
        varlen.varlen_attention(q[None], k, v, cu)


# -- auto ---------------------------------------------------------------------------------------


def test_auto_off_cuda_is_the_per_sequence_sdpa():
    q, k, v, _, cu = _inputs(dtype=F16)
    with dispatch.using(dispatch.Dispatcher(timer=lambda fn, args: pytest.fail("timed off CUDA"), cache_dir=None)):
        out = varlen.varlen_attention(q, k, v, cu, impl="auto")
        (choice,) = [c for c in dispatch.choices() if c["op"] == "varlen_attention"]
    assert torch.equal(out, varlen.varlen_attention(q, k, v, cu, impl="torch"))
    assert choice["chosen"] == "torch"


class Prefer:
    """A timer: calls the candidate once (one that raises loses), then says ``name`` is 10x faster."""

    def __init__(self, name):
        self.name, self.timed = name, []

    def __call__(self, fn, args):
        fn(*args)
        fn = getattr(fn, "__wrapped__", fn)
        name = next(c.name for c in varlen.VARLEN_CANDIDATES if c.fn is fn)
        self.timed.append(name)
        return 0.1 if name == self.name else 1.0


def _gpu_like(tmp_path, timer):
    """A dispatcher that counts CPU tensors as CUDA ones (the kernel runs in the interpreter)."""
    return dispatch.Dispatcher(timer=timer, cache_dir=tmp_path, on_cuda=lambda args: True,
                               device_name=lambda args: "FakeGPU", versions={"test": "1"})  # fmt: skip


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("fastest", ["triton", "padded"])
def test_auto_picks_the_fastest_that_runs(fastest, training, tmp_path, monkeypatch):
    """fp16 (what auto offers the kernel for): the measured choice is bound and runs; torch_varlen,
    CUDA-only, is not timed on the CPU; a training call is keyed apart and timed forward + backward."""
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    timer = Prefer(fastest)
    q, k, v, do, cu = _inputs(dtype=F16, seed=3)
    with dispatch.using(_gpu_like(tmp_path, timer)):
        if training:
            got = _forward_backward(lambda *t: varlen.varlen_attention(*t, cu, impl="auto"), q, k, v, do)
            want = _forward_backward(lambda *t: varlen.varlen_attention(*t, cu, impl=fastest), q, k, v, do)
        else:
            got = (varlen.varlen_attention(q, k, v, cu, impl="auto"),)
            want = (varlen.varlen_attention(q, k, v, cu, impl=fastest),)
        (choice,) = [c for c in dispatch.choices() if c["op"] == "varlen_attention"]
    assert choice["chosen"] == fastest and choice["mode"] == ("training" if training else "inference")
    # the fake GPU is the CPU: torch_varlen's own check refuses the call, so it is never timed
    assert "torch_varlen" not in timer.timed and "CUDA only" in choice["reasons"]["torch_varlen"]
    assert choice["errors"]["triton"]["ok"]  # the gate checked the kernel against PyTorch on the call
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def _wrong(q, k, v, cu_seqlens, max_seqlen, scale):
    return varlen._triton(q, k, v, cu_seqlens, max_seqlen, scale) * 1.01


def test_auto_never_picks_a_kernel_that_disagrees(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    broken = tuple(Candidate("triton", _wrong, "kernel", c.supports, reference=c.reference, bound=c.bound)
                   if c.kind == "kernel" else c for c in varlen.VARLEN_CANDIDATES)  # fmt: skip
    monkeypatch.setattr(varlen, "VARLEN_CANDIDATES", broken)
    q, k, v, _, cu = _inputs(dtype=F16, seed=4)
    with dispatch.using(_gpu_like(tmp_path, lambda fn, args: 0.1 if fn is _wrong else 1.0)):
        with pytest.warns(dispatch.KernelMismatchWarning):
            out = varlen.varlen_attention(q, k, v, cu, impl="auto")
        (choice,) = [c for c in dispatch.choices() if c["op"] == "varlen_attention"]
    assert choice["chosen"] != "triton" and not choice["errors"]["triton"]["ok"]
    assert torch.equal(out, varlen.IMPLS[choice["chosen"]](q, k, v, cu, 9, None))


def test_triton_with_max_seqlen_compiles_without_graph_breaks_and_still_checks_offsets():
    """Given max_seqlen, the triton impl leaves the offsets' check to the op (inside the opaque
    torch.library op): a fullgraph compile traces it, and bad offsets still raise ValueError."""
    fn = torch.compile(lambda q, k, v, cu, m: varlen.varlen_attention(q, k, v, cu, m, impl="triton"),
                       backend="aot_eager", fullgraph=True)  # fmt: skip
    for lengths in (LENGTHS, (2, 7, 0), (4, 11)):  # packings that vary: T and max_seqlen become dynamic
        q, k, v, do, cu = _inputs(lengths)
        got = _forward_backward(lambda *t: fn(*t, cu, max(lengths)), q, k, v, do)
        want = _forward_backward(lambda *t: varlen.varlen_attention(*t, cu, impl="triton"), q, k, v, do)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=0, rtol=0)
    q, k, v, do, cu = _inputs()
    with pytest.raises(ValueError, match="cu_seqlens rising"):
        varlen.varlen_attention(q, k, v, torch.tensor([0, 6, 5, 16, 18], dtype=torch.int32), 9, impl="triton")
    with pytest.raises(ValueError, match=r"max_seqlen >= the longest sequence \(9\)"):
        varlen.varlen_attention(q, k, v, cu, 8, impl="triton")


def test_offsets_are_read_once_per_tensor_and_again_after_an_in_place_write(monkeypatch):
    """A model passes one cu_seqlens to every layer: the host copy (a GPU sync) happens once; an
    in-place write (a new version) is checked again."""
    from fastvit.kernels import varlen_attention_offsets as offsets

    reads = []
    monkeypatch.setattr(offsets, "host_offsets", lambda cu: reads.append(1) or cu.tolist())
    q, k, v, _, cu = _inputs()
    for impl in ("padded", "padded", "triton"):
        varlen.varlen_attention(q, k, v, cu, 9, impl=impl)
    assert len(reads) == 1
    varlen.varlen_attention(q, k, v, cu.clone(), 9, impl="padded")  # another tensor: read
    assert len(reads) == 2
    cu[2] = 4  # now decreasing: 5, 4
    with pytest.raises(ValueError, match="expected cu_seqlens rising"):
        varlen.varlen_attention(q, k, v, cu, 9, impl="triton")
    with torch.inference_mode():  # inference tensors have no version counter: read every time
        cu_inf = _cu(LENGTHS)
        for _ in range(2):
            varlen.varlen_attention(q, k, v, cu_inf, 9, impl="padded")
    assert len(reads) == 5
