"""fastvit.checkpoints.hf_siglip2 without transformers (the default run; the model-level checks against
transformers are in tests/interop/test_hf_siglip2.py): Siglip2VisionModel's inputs as a packed batch,
and its parameter names in and out of a NaFlexVit, strictly."""

import pytest
import torch

from fastvit.checkpoints.hf_siglip2 import (
    convert_hf_siglip2_state_dict,
    hf_inputs_to_packed,
    to_hf_siglip2_config,
    to_hf_siglip2_state_dict,
)
from fastvit.naflex import create_naflex, pack

P = 4
SHAPES = [(2, 3), (1, 1), (3, 2)]


def _model():
    return create_naflex("naflexvit_base_patch16_siglip", embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0,
                         patch_size=P, pos_embed_grid_size=(3, 3), pos_embed_interp_mode="bilinear", num_classes=0)


def test_hf_inputs_become_the_packed_batch_of_the_images():
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, h * P, w * P, generator=g) for h, w in SHAPES]
    ref = pack(images, patch_size=P)
    length = 8
    pixel_values = torch.full((3, length, 3 * P * P), float("nan"))  # padding never read
    mask = torch.zeros(3, length, dtype=torch.long)
    for i, (s, e) in enumerate(zip(ref.cu_seqlens[:-1].tolist(), ref.cu_seqlens[1:].tolist())):
        pixel_values[i, :e - s], mask[i, :e - s] = ref.patches[s:e], 1
    got = hf_inputs_to_packed(pixel_values, mask, torch.tensor(SHAPES))
    assert torch.equal(got.patches, ref.patches) and torch.equal(got.coords, ref.coords)
    assert torch.equal(got.cu_seqlens, ref.cu_seqlens) and got.grid_sizes == ref.grid_sizes
    assert (got.max_seqlen, got.patch_size, got.seqlens) == (ref.max_seqlen, P, ref.seqlens)
    model = _model().eval()
    with torch.no_grad():
        assert torch.equal(model(got), model(ref))


def test_names_round_trip_strictly():
    model = _model()
    hf = to_hf_siglip2_state_dict(model.state_dict())
    assert "encoder.layers.1.self_attn.k_proj.weight" in hf and hf["embeddings.position_embedding.weight"].shape == (9, 16)
    assert hf["head.attention.in_proj_weight"].shape == (48, 16)
    back = convert_hf_siglip2_state_dict(hf)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    cfg = to_hf_siglip2_config(model)
    assert (cfg["num_patches"], cfg["intermediate_size"], cfg["hidden_act"], cfg["vision_use_head"]) == (9, 32, "gelu_pytorch_tanh", True)


def test_what_has_no_siglip2_counterpart_is_refused():
    with pytest.raises(ValueError, match="reg_tokens"):
        to_hf_siglip2_config(create_naflex("naflexvit_base_patch16_map", depth=1))
    with pytest.raises(ValueError, match="pos_embed_interp_mode"):
        to_hf_siglip2_config(create_naflex("naflexvit_base_patch16_siglip", depth=1, num_classes=0))
    sd = _model().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="extra.weight"):
        to_hf_siglip2_state_dict(sd)
