"""norm_impl layers: the block norms in front of a GEMM store in autocast's dtype."""

import torch
import torch.nn.functional as F
from parity import assert_close_vs_ref
from torch import nn

import fastvit
from fastvit.layers.impls import norm_layer
from fastvit.layers.norm import TritonLayerNorm, TritonBlockNorm


def _norms(width=192):
    torch.manual_seed(0)
    ref = nn.LayerNorm(width, eps=1e-6)
    with torch.no_grad():
        ref.weight.normal_(1.0, 0.5)
        ref.bias.normal_(0.0, 0.5)
    pre, plain = TritonBlockNorm(width, eps=1e-6), TritonLayerNorm(width, eps=1e-6)
    pre.load_state_dict(ref.state_dict())
    plain.load_state_dict(ref.state_dict())
    return ref, pre, plain


def test_pre_norm_stores_in_the_autocast_dtype():
    """fp32 residual stream under fp16 autocast: nn.LayerNorm returns fp32 that the
    next GEMM casts to fp16; the pre-norm returns that fp16 tensor directly."""
    ref, pre, _ = _norms()
    x = torch.randn(2, 197, 192)
    with torch.autocast("cpu", dtype=torch.float16):
        got, eager = pre(x), ref(x)
    assert got.dtype == torch.float16 and eager.dtype == torch.float32
    gold = F.layer_norm(x.double(), (192,), ref.weight.double(), ref.bias.double(), 1e-6)
    assert_close_vs_ref(got, eager.half(), gold, factor=2, atol=1e-2, name="pre-norm output")


def test_pre_norm_outside_autocast_is_the_plain_norm():
    _, pre, plain = _norms()
    x = torch.randn(3, 17, 192)
    assert torch.equal(pre(x), plain(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert plain(x).dtype == torch.float32  # only the block norms change dtype


def test_model_uses_pre_norms_inside_blocks_only():
    model = fastvit.create_model("vit_tiny_patch16_224", depth=2, norm_impl="triton")
    assert all(type(b.norm1) is TritonBlockNorm and type(b.norm2) is TritonBlockNorm for b in model.blocks)
    assert type(model.norm) is TritonLayerNorm
    assert norm_layer("torch", pre_gemm=True) is nn.LayerNorm


def test_block_norm_keeps_its_old_name():
    """The block norm was called TritonPreNorm (nothing to do with CLIP's pre_norm); the old name is an alias."""
    from fastvit.layers import norm

    assert norm.TritonPreNorm is norm.TritonBlockNorm and issubclass(norm.TritonBlockNorm, TritonLayerNorm)
    assert norm_layer("triton", pre_gemm=True) is norm.TritonBlockNorm
