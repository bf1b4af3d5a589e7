"""The attention_probs kernel: exp(scale q k^T - lse) against an fp64 softmax, tile edges included."""

import math

import pytest
import torch

from parity import poison_

pytest.importorskip("triton")

from fastvit.kernels.attention_probs import attention_probs  # noqa: E402
from fastvit.kernels.reference import attention_probs_ref  # noqa: E402
from fastvit.kernels.flash_attention import attention_fwd  # noqa: E402


def _packed(b, n, h, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(b, n, 3, h, d, generator=g).mul(1.5).to(dtype)
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # strided (B, H, N, D) views, no copy


def _softmax64(q, k, scale):
    return torch.softmax(q.double() @ k.double().transpose(-2, -1) * scale, dim=-1)


@pytest.mark.parametrize("n, d", [(70, 24), (17, 64)])  # 70: two tiles with a ragged edge; 24: padded head dim
def test_fp32_probs_match_softmax(n, d):
    q, k, v = _packed(2, n, 3, d, torch.float32)
    scale = 1.0 / math.sqrt(d)
    _, lse = attention_fwd(q, k, v, scale)
    out = poison_(torch.empty(2, 3, n, n))
    got = attention_probs(q, k, lse, scale, out=out)
    assert got.data_ptr() == out.data_ptr()
    ref = _softmax64(q, k, scale)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(-1).double(), torch.ones(2, 3, n, dtype=torch.float64), atol=1e-5, rtol=0)
    # the kernel computes exactly its documented formula
    torch.testing.assert_close(got.double(), attention_probs_ref(q, k, lse, scale), atol=1e-6, rtol=1e-5)


def test_cross_lengths_and_custom_scale():
    q, _, _ = _packed(1, 9, 2, 16, torch.float32, seed=1)
    _, k, v = _packed(1, 40, 2, 16, torch.float32, seed=2)
    _, lse = attention_fwd(q, k, v, 0.3)
    torch.testing.assert_close(attention_probs(q, k, lse, 0.3).double(), _softmax64(q, k, 0.3), atol=1e-6, rtol=1e-5)


def test_bf16_inputs_give_fp32_probs_of_the_bf16_scores():
    q, k, v = _packed(1, 33, 2, 32, torch.bfloat16)
    _, lse = attention_fwd(q, k, v, 32**-0.5)
    got = attention_probs(q, k, lse, 32**-0.5)
    assert got.dtype == torch.float32
    # lse is fp32 from the same bf16 operands: the probabilities are those of the bf16 inputs' exact scores
    torch.testing.assert_close(got.double(), _softmax64(q, k, 32**-0.5), atol=1e-5, rtol=1e-4)


def test_bad_inputs_raise():
    q, k, v = _packed(1, 8, 2, 16, torch.float32)
    _, lse = attention_fwd(q, k, v, 0.25)
    with pytest.raises(ValueError, match="lse"):
        attention_probs(q, k, lse[:, :1])
    with pytest.raises(ValueError, match="lse"):
        attention_probs(q, k, lse.double())
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        attention_probs(q, k.double(), lse)
    with pytest.raises(ValueError, match="match q"):
        attention_probs(q, k[:, :1], lse)
    with pytest.raises(ValueError, match="out must be"):
        attention_probs(q, k, lse, out=torch.empty(1, 2, 8, 7))
