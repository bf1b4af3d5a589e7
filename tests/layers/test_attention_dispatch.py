"""attn_impl dispatch: the backends agree, optional packages fail clearly, auto chooses soundly."""

import importlib.util

import functools
import types

import pytest
import torch

import fastvit
from fastvit import cli
from fastvit.layers import attention as A


def _qkv(b=2, h=3, n=17, d=32, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype) for _ in range(3)]


def test_eager_matches_sdpa_and_the_reference():
    from fastvit.kernels.reference import attention_ref

    q, k, v = _qkv()
    ref = attention_ref(q, k, v)
    torch.testing.assert_close(A.eager_attention(q, k, v).double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(A.sdpa_attention(q, k, v).double(), ref, rtol=1e-5, atol=1e-6)


def test_triton_backend_runs_the_kernel_under_the_interpreter():
    q, k, v = _qkv()
    triton = A.get_attention_backend("triton")
    torch.testing.assert_close(triton(q, k, v), A.eager_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_triton_backend_uses_sdpa_for_dropout():
    q, k, v = _qkv()
    torch.manual_seed(3)
    expected = A.sdpa_attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(3)
    torch.testing.assert_close(A.get_attention_backend("triton")(q, k, v, dropout_p=0.5), expected)


@pytest.mark.parametrize(
    "dtype,head_dim,offered",
    [(torch.bfloat16, 64, True), (torch.float16, 80, True), (torch.bfloat16, 72, True), (torch.float16, 40, True),
     (torch.bfloat16, 129, False), (torch.float32, 128, False), (torch.bfloat16, 256, False), (torch.float64, 64, False)],
)
def test_auto_offers_the_triton_kernel_where_it_runs(dtype, head_dim, offered):
    """Which CUDA calls ``auto`` times the Triton kernel for (the rest: SDPA's backends only), with the reason."""
    from fastvit.layers import auto

    q = types.SimpleNamespace(device=torch.device("cuda"), dtype=dtype, shape=(2, 3, 197, head_dim))
    reason = auto._triton_supports(q)
    assert (reason is None) == offered, reason
    if not offered:
        assert str(head_dim) in reason or str(dtype).replace("torch.", "") in reason


def test_auto_on_cpu_runs_sdpa():
    q, k, v = _qkv()
    torch.testing.assert_close(A.auto_attention(q, k, v), A.sdpa_attention(q, k, v), rtol=0, atol=0)


@pytest.mark.parametrize("impl", ["auto", "triton", "sdpa", "eager"])
def test_packed_backends_agree_with_unpacked(impl):
    """The module's packed calling form: triton (and auto) take the (B, N, 3, H, D)
    tensor whole, the others unpack views; all equal the (q, k, v) backend."""
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(2, 17, 3, 3, 32, generator=g)
    packed = A.get_packed_backend(impl)
    assert isinstance(packed, functools.partial) == (impl != "auto")
    got = packed(qkv, dropout_p=0.0, scale=0.3)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    torch.testing.assert_close(got, A.get_attention_backend(impl)(q, k, v, dropout_p=0.0, scale=0.3), rtol=0, atol=0)


def test_packed_triton_uses_the_packed_op_and_sdpa_for_dropout(monkeypatch):
    from fastvit.kernels import flash_attention

    calls = []
    monkeypatch.setattr(flash_attention, "attention_qkvpacked", lambda qkv, scale: calls.append(qkv) or "kernel")
    qkv = torch.randn(1, 5, 3, 2, 16)
    triton = A.get_packed_backend("triton")  # binds the op when the backend is chosen
    assert triton(qkv, 0.0, 0.25) == "kernel" and calls[0] is qkv
    torch.manual_seed(4)
    expected = A.sdpa_attention(*A.unpack_qkv(qkv), dropout_p=0.5, scale=0.25)
    torch.manual_seed(4)
    torch.testing.assert_close(triton(qkv, 0.5, 0.25), expected)
    assert len(calls) == 1


@pytest.mark.parametrize("impl,package,hint", [("flash_attn", "flash_attn", "pip install flash-attn"), ("xformers", "xformers", "pip install xformers")])
def test_missing_optional_backend_says_how_to_install(impl, package, hint):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(ImportError, match=hint):
        fastvit.create_model("vit_tiny_patch16_224", depth=1, attn_impl=impl)


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="eager"):
        A.get_attention_backend("fastest")


def test_info_reports_backends_and_auto(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for name in A.BACKENDS:
        assert f"  {name} " in out
    assert "auto on cpu" in out and "sdpa" in out
