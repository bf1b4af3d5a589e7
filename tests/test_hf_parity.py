"""Independent parity: Hugging Face transformers' ViT, random weights, copied into fastvit."""

import pytest
import torch

import fastvit
from fastvit.checkpoints import convert_hf_state_dict

transformers = pytest.importorskip("transformers")


def hf_and_fastvit(hidden, layers, heads, image, patch, labels):
    torch.manual_seed(0)
    hf_cfg = transformers.ViTConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * hidden,
        image_size=image, patch_size=patch, num_labels=labels, hidden_act="gelu", qkv_bias=True,
    )
    hf = transformers.ViTForImageClassification(hf_cfg).eval()
    # HF initialises some parameters to zero/one; perturb all so every weight matters.
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model = fastvit.VisionTransformer(
        fastvit.ViTConfig(img_size=image, patch_size=patch, embed_dim=hidden, depth=layers, num_heads=heads,
                          num_classes=labels, norm_eps=hf_cfg.layer_norm_eps, attn_impl="eager")
    ).eval()
    model.load_state_dict(convert_hf_state_dict(hf.state_dict()))
    return hf, model


@pytest.mark.parametrize("size", [dict(hidden=64, layers=2, heads=4, image=32, patch=8, labels=10),
                                  dict(hidden=768, layers=12, heads=12, image=224, patch=16, labels=1000)],
                         ids=["small", "base"])
def test_logits_match_hugging_face(size):
    hf, model = hf_and_fastvit(**size)
    x = torch.randn(2, 3, size["image"], size["image"])
    with torch.no_grad():
        expected = hf(pixel_values=x).logits
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
