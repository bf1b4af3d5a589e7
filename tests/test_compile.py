"""torch.compile: no graph breaks, same outputs and gradients, bounded recompiles."""

import pytest
import torch

import fastvit

# Tiny shapes so the Triton kernels stay quick under the CPU interpreter.
SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10)
IMPLS = {
    "eager": dict(attn_impl="eager"),
    "sdpa": dict(attn_impl="sdpa"),
    "auto": dict(attn_impl="auto"),
    "triton": dict(attn_impl="triton", norm_impl="triton", linear_impl="triton"),
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch: dynamo's per-code-object cache (8 entries
    for VisionTransformer.forward) would otherwise fill up across tests."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def small_model(impl, **kw):
    torch.manual_seed(0)
    return fastvit.VisionTransformer(fastvit.ViTConfig(**SMALL, **IMPLS[impl], **kw))


@pytest.mark.parametrize("impl", list(IMPLS))
def test_no_graph_breaks(impl):
    model = small_model(impl).eval()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 32, 32))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def _outputs_and_grads(model, x):
    model.zero_grad()
    out = model(x)
    out.square().mean().backward()
    return out.detach(), {n.removeprefix("_orig_mod."): p.grad.clone() for n, p in model.named_parameters()}


def _assert_same(eager, compiled, tol):
    torch.testing.assert_close(compiled[0], eager[0], rtol=tol, atol=tol)
    for name, grad in eager[1].items():
        torch.testing.assert_close(compiled[1][name], grad, rtol=tol, atol=tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("impl", list(IMPLS))
def test_aot_eager_matches_eager_forward_and_backward(impl):
    model = small_model(impl).train()
    x = torch.randn(2, 3, 32, 32)
    expected = _outputs_and_grads(model, x)
    compiled = fastvit.compile(model, backend="aot_eager")
    _assert_same(expected, _outputs_and_grads(compiled, x), 1e-5)


@pytest.mark.parametrize("impl", ["sdpa", "triton"])
def test_inductor_matches_eager_forward_and_backward(impl):
    model = small_model(impl).train()
    x = torch.randn(2, 3, 32, 32)
    expected = _outputs_and_grads(model, x)
    _assert_same(expected, _outputs_and_grads(fastvit.compile(model), x), 1e-5)


def test_gradient_checkpointing_compiles():
    model = small_model("sdpa").train()
    x = torch.randn(2, 3, 32, 32)
    expected = _outputs_and_grads(model, x)
    model.set_grad_checkpointing(True)
    _assert_same(expected, _outputs_and_grads(fastvit.compile(model, backend="aot_eager"), x), 1e-5)


def test_dynamic_img_size_recompiles_at_most_twice():
    from torch._dynamo.testing import CompileCounter

    model = small_model("sdpa", dynamic_img_size=True).eval()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    with torch.no_grad():
        for h, w in ((32, 32), (48, 48), (64, 40)):
            x = torch.randn(2, 3, h, w)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    assert counter.frame_count <= 3, f"{counter.frame_count} compiles for 3 sizes (first + at most 2 recompiles)"


def test_compile_changes_no_global_config():
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    before = (dict(dynamo_config.get_config_copy()), dict(inductor_config.get_config_copy()))
    fastvit.compile(small_model("sdpa"), backend="aot_eager")
    assert before == (dict(dynamo_config.get_config_copy()), dict(inductor_config.get_config_copy()))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_cuda_graph_replay_equals_eager(dtype):
    model = fastvit.create_model("vit_tiny_patch16_224", attn_impl="triton", norm_impl="triton", linear_impl="triton")
    model = model.cuda().to(dtype).eval()
    x = torch.randn(8, 3, 224, 224, device="cuda", dtype=dtype)
    with torch.no_grad():
        graph = torch.cuda.CUDAGraph()
        static_x = x.clone()
        model(static_x)  # warm-up: autotune and first launches outside the graph
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            static_out = model(static_x)
        graph.replay()
        torch.testing.assert_close(static_out, model(x), rtol=0, atol=0)


@pytest.mark.cuda
def test_compiled_fused_model_matches_eager_fused_cuda():
    from parity import assert_close_vs_ref

    torch.manual_seed(0)
    fused = fastvit.create_model("vit_tiny_patch16_224", attn_impl="triton", norm_impl="triton", linear_impl="triton").cuda().eval()
    ref = fastvit.create_model("vit_tiny_patch16_224", attn_impl="eager").cuda().eval()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        expected = ref(x)
        eager_bf16 = ref.to(torch.bfloat16)(x.bfloat16())
        compiled = fastvit.compile(fused.to(torch.bfloat16), mode="reduce-overhead")(x.bfloat16())
    assert_close_vs_ref(compiled, eager_bf16, expected, factor=2.0, atol=1e-2, name="compiled fused logits")


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_prepare_then_plain_compile_has_no_graph_break_and_runs_the_choices(grad, tmp_path, monkeypatch):
    """fastvit.prepare binds auto's measured choices; a plain torch.compile then traces them (fullgraph,
    aot_eager): no graph break, nothing measured, no unprepared call, eager's outputs and gradients.
    On the CPU: an injected device predicate (CPU tensors count as CUDA) and a timer that prefers the kernels."""
    import warnings

    from fastvit import dispatch
    from fastvit.layers import auto

    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    kernels = {c.fn for cands in auto.OPS.values() for c in cands if c.kind == "kernel"}
    timed = []

    def timer(fn, args):
        timed.append(fn)
        fn(*args)
        return 0.1 if getattr(fn, "__wrapped__", fn) in kernels else 1.0

    d = dispatch.Dispatcher(timer=timer, cache_dir=tmp_path, on_cuda=lambda args: True, device_name=lambda args: "FakeGPU",
                            versions={"test": "1"})
    with dispatch.using(d):
        model = small_model("auto").train(grad)
        x = torch.randn(2, 3, 32, 32)
        fastvit.prepare(model, x, grad=grad)
        assert {r["mode"] for r in d.choices()} == {"training" if grad else "inference"}
        assert {r["chosen"] for r in d.choices() if r["op"] != "attention_packed"} == {"triton"}
        n = len(timed)
        with torch.set_grad_enabled(grad):
            explanation = torch._dynamo.explain(model)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        with warnings.catch_warnings(), torch.set_grad_enabled(grad):
            warnings.simplefilter("error", dispatch.UnpreparedWarning)
            if grad:
                _assert_same(_outputs_and_grads(model, x), _outputs_and_grads(compiled, x), 1e-5)
            else:
                torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
        assert len(timed) == n and not [r for r in d.choices() if r["source"] == "unprepared"]
