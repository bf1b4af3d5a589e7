"""The residual junction fused into the LayerNorm backward (fastvit.kernels.layer_norm_fork, the block norms' fork).

``layer_norm_fork(x, w, b) -> (LN(x), x)``: forward equals LayerNorm and hands x back; backward
gives x the sum of LayerNorm's input gradient and the residual's from ONE norm-backward launch,
with no separate add. Compared with autograd of ``F.layer_norm(x)`` plus the residual use of x
(fp32: tight; bf16/fp16: the flash-attention rule, error vs an fp64 reference at most 2x eager
torch's in the same dtype). Interpreter, tiny shapes.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
import torch
import torch.nn.functional as F
from parity import assert_close_vs_ref
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fastvit
from fastvit import dispatch
from fastvit.kernels import norm as norm_kernels
from fastvit.kernels import reference
from fastvit.layers import auto
from fastvit.layers.norm import TritonBlockNorm, fork_function, fused_fork, plain_fork
from fastvit.model import Block
from fastvit.parts import resolve_parts

EPS = 1e-6


def _kernel():
    from fastvit.kernels import layer_norm_fork

    return layer_norm_fork


def _inputs(shape, dtype=torch.float32, weight_dtype=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = shape[-1]
    x = (torch.randn(*shape, generator=g) * 2 + 0.5).to(dtype)
    w = (1 + 0.5 * torch.randn(width, generator=g)).to(weight_dtype or dtype)
    b = (0.5 * torch.randn(width, generator=g)).to(weight_dtype or dtype)
    return x, w, b


def _grads(fn, x, w, b, dout, dres):
    """(out, residual, dx, dw, db) of ``fn(x, w, b) -> (out, residual)`` for upstream gradients dout, dres."""
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    out, res = fn(x, w, b)
    terms = [(t * g.to(t.dtype)).sum() for t, g in ((out, dout), (res, dres)) if g is not None]
    sum(terms).backward()
    return out, res, x.grad, w.grad, b.grad


def _torch_fork(x, w, b, out_dtype=None):
    out = F.layer_norm(x, (x.shape[-1],), w, b, EPS)
    return (out if out_dtype is None else out.to(out_dtype)), x


class _Launches:
    """Counts the LayerNorm backward launches (fastvit.kernels.norm.layer_norm_bwd), and whether each had ``ds``."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = norm_kernels.layer_norm_bwd

        def counting(*args, **kwargs):
            ds = args[5] if len(args) > 5 else kwargs.get("ds")
            self.calls.append(ds is not None)
            return real(*args, **kwargs)

        monkeypatch.setattr(norm_kernels, "layer_norm_bwd", counting)


class _FullSizeOps(TorchDispatchMode):
    """Records every op whose output has ``shape`` (the activations' (B, N, D)), views excepted."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.ops = tuple(shape), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if any(isinstance(o, torch.Tensor) and tuple(o.shape) == self.shape for o in outs):
            if func.__name__.split(".")[0] not in ("view", "detach", "_unsafe_view", "alias"):
                self.ops.append(str(func))
        return out


# -- the op ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 5, 48), (7, 100), (3, 1, 1, 16)], ids=str)
def test_fork_forward_is_layer_norm_and_returns_x(shape):
    x, w, b = _inputs(shape)
    out, res = _kernel()(x, w, b, EPS)
    torch.testing.assert_close(out, F.layer_norm(x, (shape[-1],), w, b, EPS), atol=1e-5, rtol=1e-5)
    assert res.shape == x.shape and res.data_ptr() == x.data_ptr() and torch.equal(res, x)
    ref_out, ref_res = reference.layer_norm_fork_ref(x, w, b, EPS)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-5)
    assert torch.equal(ref_res, x.double())


@pytest.mark.parametrize("shape", [(2, 5, 48), (9, 100)], ids=str)
@pytest.mark.parametrize("used", ["both", "normed_only", "residual_only"])
def test_fork_backward_fp32_matches_autograd(shape, used, monkeypatch):
    x, w, b = _inputs(shape)
    g = torch.Generator().manual_seed(1)
    dout = torch.randn(shape, generator=g) if used != "residual_only" else None
    dres = torch.randn(shape, generator=g) if used != "normed_only" else None
    launches = _Launches(monkeypatch)
    got = _grads(lambda *a: _kernel()(*a, EPS), x, w, b, dout, dres)
    ref = _grads(_torch_fork, x, w, b, dout, dres)
    for name, a, e in zip(("dx", "dweight", "dbias"), got[2:], ref[2:]):
        if e is None:  # the residual alone: no gradient reaches the norm's parameters
            assert a is None or not a.abs().any(), name
            continue
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")
    # one launch with the residual's gradient added, one without it, none when only the residual was used
    assert launches.calls == {"both": [True], "normed_only": [False], "residual_only": []}[used]


@pytest.mark.parametrize("layout", ["transposed-x", "expanded-residual-grad", "no-rows"])
def test_fork_backward_any_layout(layout, monkeypatch):
    """x read through its strides (a transposed view), a stride-0 residual gradient (the grad of a
    broadcast sum), zero rows: dx, dweight, dbias still equal autograd's."""
    width = 16
    x, w, b = _inputs((0 if layout == "no-rows" else 6, width))
    if layout == "transposed-x":  # same values, column-major: strides (1, 6)
        x = x.t().contiguous().t()
        assert x.stride() == (1, 6)
    g = torch.Generator().manual_seed(4)
    dout = torch.randn(x.shape, generator=g)
    dres = torch.randn(width, generator=g).expand(x.shape) if layout != "transposed-x" else torch.randn(x.shape, generator=g)
    got = _grads(lambda *a: _kernel()(*a, EPS), x, w, b, dout, dres)
    ref = _grads(_torch_fork, x, w, b, dout, dres)
    assert got[2].shape == x.shape
    for name, a, e in zip(("dx", "dweight", "dbias"), got[2:], ref[2:]):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def _fp64_grads(x, w, b, dout, dres):
    return _grads(lambda *a: reference.layer_norm_fork_ref(*a, EPS), x.double(), w.double(), b.double(),
                  dout.double(), dres.double())  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("weight_dtype", [None, torch.float32], ids=["x-dtype-weights", "fp32-weights"])
def test_fork_backward_half_within_twice_eager_error(dtype, weight_dtype):
    shape = (3, 11, 64)
    x, w, b = _inputs(shape, dtype, weight_dtype)
    g = torch.Generator().manual_seed(2)
    dout, dres = torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)
    got = _grads(lambda *a: _kernel()(*a, EPS), x, w, b, dout, dres)
    eager = _grads(_torch_fork, x, w, b, dout, dres)
    gold = _fp64_grads(x, w, b, dout, dres)
    assert got[2].dtype == dtype and got[3].dtype == w.dtype
    for i, name in enumerate(("out", "residual", "dx", "dweight", "dbias")):
        # dweight/dbias sum over rows: eager's own error there is a few units of the dtype at |ref|
        assert_close_vs_ref(got[i], eager[i], gold[i], factor=2, atol=1e-2 if i < 3 else 2e-2, name=name)


def test_fork_out_dtype_fp32_stream_into_bf16():
    """Under autocast a block's norm stores bf16 from an fp32 residual stream; dx comes back fp32."""
    shape = (2, 9, 32)
    x, w, b = _inputs(shape)
    g = torch.Generator().manual_seed(3)
    dout, dres = torch.randn(shape, generator=g).to(torch.bfloat16), torch.randn(shape, generator=g)
    got = _grads(lambda *a: _kernel()(*a, EPS, out_dtype=torch.bfloat16), x, w, b, dout, dres)
    eager = _grads(lambda *a: _torch_fork(*a, out_dtype=torch.bfloat16), x, w, b, dout, dres)
    gold = _fp64_grads(x, w, b, dout.float(), dres)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32 and got[2].dtype == torch.float32
    assert_close_vs_ref(got[0], eager[0], gold[0], factor=2, atol=1e-2, name="out")
    for i, name in ((2, "dx"), (3, "dweight"), (4, "dbias")):  # fp32 math from bf16 dout: tight
        torch.testing.assert_close(got[i].double(), gold[i], atol=2e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def test_fork_refuses_bad_arguments():
    x, w, b = _inputs((2, 8))
    with pytest.raises(TypeError, match="out_dtype"):
        _kernel()(x, w, b, EPS, out_dtype=torch.int8)
    with pytest.raises(ValueError, match=r"weight: expected shape \(8,\)"):
        _kernel()(x, w[:4], b, EPS)
    with pytest.raises(TypeError, match="x: expected float32"):
        _kernel()(x.double(), w, b, EPS)


def test_fork_is_declared_under_layer_norms_declaration():
    from fastvit.kernels import ops

    op = ops.declaration("layer_norm")
    assert "layer_norm_fork" in op.functions and op.module == norm_kernels.__name__
    assert norm_kernels.layer_norm_fork is _kernel()


# -- the block: one launch per junction, no separate add -------------------------------------


def _block(impl, dim=32, layer_scale=False):
    cfg = fastvit.ViTConfig(img_size=32, patch_size=8, embed_dim=dim, depth=1, num_heads=2, norm_impl=impl,
                            linear_impl=impl, attn_impl="sdpa", init_values=0.5 if layer_scale else None)  # fmt: skip
    p = resolve_parts(cfg)
    torch.manual_seed(0)
    return Block(dim, norm_layer=p.block_norm_layer, attn_layer=p.attn_layer, mlp_layer=p.mlp_layer,
                 layer_scale=p.layer_scale)  # fmt: skip


@pytest.mark.parametrize("layer_scale", [False, True], ids=["plain", "layer-scale"])
def test_block_backward_joins_the_residual_in_the_norm_kernel(layer_scale, monkeypatch):
    """Triton block: each junction is one norm-backward launch with the residual's gradient added,
    and the backward runs no other op writing a full (B, N, D) tensor than those launches. The
    torch block shows the separate adds this removes (native_layer_norm_backward + add, twice)."""
    shape = (2, 17, 32)
    launches = _Launches(monkeypatch)
    for impl in ("torch", "triton"):
        block = _block(impl, layer_scale=layer_scale)
        x = torch.randn(shape, requires_grad=True)
        y, dy = block(x), torch.randn(shape)
        with _FullSizeOps(shape) as ops:
            y.backward(dy)
        if impl == "torch":
            assert ops.ops.count("aten.add.Tensor") == 2, ops.ops
        else:
            assert ops.ops == ["fastvit.add_layer_norm_bwd.default"] * 2, ops.ops
            assert launches.calls == [True, True]


def test_block_with_torch_and_triton_forks_agree():
    ref, fused = _block("torch"), _block("triton")
    fused.load_state_dict(ref.state_dict())
    assert list(ref.state_dict()) == list(fused.state_dict())
    h = torch.randn(2, 9, 32)
    for norm_ref, norm_fused in ((ref.norm1, fused.norm1), (ref.norm2, fused.norm2)):
        (a, ra), (b, rb) = ref._norm1_fork(norm_ref, h), fused._norm1_fork(norm_fused, h)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        assert ra is h and rb.data_ptr() == h.data_ptr()
    x = torch.randn(2, 9, 32)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    for block, xi in zip((ref, fused), xs):
        block(xi).square().sum().backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad, atol=1e-5, rtol=1e-4)


# -- layers ---------------------------------------------------------------------------------


def test_fork_function_picks_the_fused_fork_only_for_norms_that_have_one():
    assert fork_function(nn.LayerNorm(24)) is plain_fork
    assert fork_function(TritonBlockNorm(24)) is fused_fork and fork_function(auto.AutoPreNorm(24)) is fused_fork
    norm, x = nn.LayerNorm(24), torch.randn(3, 5, 24)
    out, res = plain_fork(norm, x)
    assert torch.equal(out, norm(x)) and res is x


@pytest.mark.parametrize("kind", ["forward", "pre", "global"])
def test_hooks_on_a_block_norm_fire_and_are_honoured(kind, monkeypatch):
    """A hook on a Triton block's norm1 sees its forward, as on timm's Block, and a hook that replaces the
    output changes the block's result; without hooks the fused fork runs (one launch with the residual)."""
    block = _block("triton")
    x = torch.randn(2, 9, 32, requires_grad=True)
    seen = []

    def forward_hook(module, args, output):
        seen.append(output.shape)
        return output * 0

    def pre_hook(module, args):
        seen.append(args[0].shape)
        return (args[0] * 0,)

    if kind == "global":
        handle = nn.modules.module.register_module_forward_hook(
            lambda m, a, o: (seen.append(o.shape), o * 0)[1] if m is block.norm1 else None)
    elif kind == "pre":
        handle = block.norm1.register_forward_pre_hook(pre_hook)
    else:
        handle = block.norm1.register_forward_hook(forward_hook)
    try:
        launches = _Launches(monkeypatch)
        hooked = block(x)
        hooked.sum().backward()
        assert seen == [torch.Size([2, 9, 32])]
        # norm1 (hooked) runs the plain backward and autograd adds; norm2 fused unless a global hook watches it too
        assert launches.calls == ([False, False] if kind == "global" else [True, False])
        # with norm1's input (or output) zeroed, the attention branch sees LN(0) = bias (or 0)
        h0 = torch.zeros_like(x) if kind != "pre" else block.norm1.bias.expand_as(x)
        expected_mid = block.attn(h0.detach(), x.detach())
        h2, r2 = fused_fork(block.norm2, expected_mid)
        torch.testing.assert_close(hooked.detach(), block.mlp(h2, r2).detach(), atol=1e-6, rtol=1e-6)
    finally:
        handle.remove()
    launches.calls.clear()
    block(x).sum().backward()
    assert launches.calls == [True, True]  # hooks gone: both junctions fused again


def test_triton_block_norm_fork_under_autocast():
    pre = TritonBlockNorm(32, eps=EPS)
    x = torch.randn(2, 7, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, res = pre.fork(x)
        assert torch.equal(out, pre(x))
    assert out.dtype == torch.bfloat16 and res.dtype == torch.float32 and res.data_ptr() == x.data_ptr()


@pytest.fixture
def gpu_like(tmp_path, monkeypatch):
    """A dispatcher that treats CPU tensors as CUDA ones; the fake timer prefers ``prefer[0]``'s candidates."""
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    prefer = ["triton"]

    def timer(fn, args):
        fn(*args)
        return 0.1 if fn.__name__.endswith(f"_{prefer[0]}") else 1.0

    d = dispatch.Dispatcher(timer=timer, cache_dir=tmp_path, on_cuda=lambda args: True,
                            device_name=lambda args: "FakeGPU", versions={"test": "1"})  # fmt: skip
    with dispatch.using(d):
        yield prefer


@pytest.mark.parametrize("winner", ["triton", "torch"])
def test_auto_pre_norm_fork_follows_the_measured_choice(winner, gpu_like, monkeypatch):
    gpu_like[0] = winner
    torch.manual_seed(0)
    norm = auto.AutoPreNorm(32, eps=EPS)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    x = torch.randn(2, 5, 32, requires_grad=True)
    norm.fork(x)  # the first call binds the choice: it checks and times both candidates (forward + backward)
    launches = _Launches(monkeypatch)
    out, res = norm.fork(x)
    (out.square().sum() + (res * 3).sum()).backward()
    assert launches.calls == ([True] if winner == "triton" else [])
    ref = _grads(_torch_fork, x, norm.weight, norm.bias, 2 * out.detach(), torch.full_like(x, 3.0))
    torch.testing.assert_close(x.grad, ref[2], atol=1e-4, rtol=1e-4)


def test_auto_pre_norm_fork_off_cuda_is_torch():
    norm = auto.AutoPreNorm(16, eps=EPS)
    x = torch.randn(3, 16)
    out, res = norm.fork(x)
    assert torch.equal(out, F.layer_norm(x, (16,), norm.weight, norm.bias, EPS)) and res is x


# -- the model ------------------------------------------------------------------------------

_TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)


def _model(impl, **kw):
    torch.manual_seed(0)
    return fastvit.VisionTransformer(fastvit.ViTConfig(**_TINY, norm_impl=impl, **kw))


def _logits_and_grads(model, x):
    model.zero_grad()
    logits = model(x)
    logits.square().sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "grad-checkpointing"])
def test_model_triton_forks_match_torch(checkpointing):
    ref, fused = _model("torch"), _model("triton")
    assert list(ref.state_dict()) == list(fused.state_dict())
    fused.load_state_dict(ref.state_dict())
    fused.set_grad_checkpointing(checkpointing)
    x = torch.randn(2, 3, 32, 32)
    (l_ref, g_ref), (l_fused, g_fused) = _logits_and_grads(ref, x), _logits_and_grads(fused, x)
    torch.testing.assert_close(l_fused, l_ref, atol=1e-5, rtol=1e-5)
    assert g_ref.keys() == g_fused.keys()
    for name in g_ref:
        torch.testing.assert_close(g_fused[name], g_ref[name], atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_custom_parts_with_plain_layer_norm_still_run():
    cfg = fastvit.ViTConfig(**_TINY, norm_impl="torch")
    parts = dataclasses.replace(resolve_parts(cfg), block_norm_layer=lambda dim: nn.LayerNorm(dim, eps=cfg.norm_eps))
    plain, ref = fastvit.VisionTransformer(cfg, parts=parts), _model("torch")
    assert all(type(b.norm1) is nn.LayerNorm and b._norm1_fork is plain_fork for b in plain.blocks)
    assert list(plain.state_dict()) == list(ref.state_dict())
    plain.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 32, 32)
    (l_plain, g_plain), (l_ref, g_ref) = _logits_and_grads(plain, x), _logits_and_grads(ref, x)
    assert torch.equal(l_plain, l_ref) and all(torch.equal(g_plain[n], g_ref[n]) for n in g_ref)


def test_forks_survive_pickle_deepcopy_and_follow_a_replaced_norm():
    model = _model("triton")
    x = torch.randn(1, 3, 32, 32)
    expected = model(x)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.blocks[0]._norm1_fork is fused_fork
        torch.testing.assert_close(clone(x), expected, atol=0, rtol=0)
    assert "_norm1_fork" not in "".join(model.state_dict())
    old = copy.copy(model.blocks[0])  # a block pickled before the forks existed still runs when loaded
    del old.__dict__["_norm1_fork"], old.__dict__["_norm2_fork"]
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded._norm1_fork is fused_fork and loaded._norm2_fork is fused_fork
    block = model.blocks[0]
    block.norm1 = nn.LayerNorm(48, eps=1e-6)  # swapped after construction: its fork goes with it
    assert block._norm1_fork is plain_fork
    block.norm1 = TritonBlockNorm(48, eps=1e-6)
    assert block._norm1_fork is fused_fork


def _compiled_block_grads(backend):
    ref, fused = _block("torch"), _block("triton")
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 9, 32)
    out = {}
    for name, block in (("eager", ref), ("compiled", torch.compile(fused, backend=backend, fullgraph=True))):
        block.zero_grad()
        xi = x.clone().requires_grad_()
        block(xi).square().sum().backward()
        out[name] = [xi.grad] + [p.grad for p in (ref if name == "eager" else fused).parameters()]
    for a, e in zip(out["compiled"], out["eager"]):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-4)


def test_compiled_block_with_triton_forks_gives_the_same_grads():
    torch._dynamo.reset()
    _compiled_block_grads("aot_eager")


@pytest.mark.slow
def test_inductor_compiled_block_with_triton_forks_gives_the_same_grads():
    torch._dynamo.reset()
    _compiled_block_grads("inductor")
