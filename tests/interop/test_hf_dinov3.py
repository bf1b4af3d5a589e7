"""fastvit's Eva against transformers' DINOv3ViTModel: in memory and through save_pretrained
directories, both MLP kinds, with registers; outputs within 1e-5 relative (fp32) at a non-square
size, and the export back (state dict and config) loads strictly into transformers."""

import pytest
import torch

from fastvit.checkpoints.hf_dinov3 import from_hf_dinov3, to_hf_dinov3_config, to_hf_dinov3_state_dict
from fastvit.presets_eva import create_eva
from interop_helpers import assert_rel, image, perturb


def _hf_model(transformers, gated: bool, registers: int, qv_bias: bool = True):
    cfg = transformers.DINOv3ViTConfig(hidden_size=128, num_attention_heads=2, num_hidden_layers=2, intermediate_size=256,
                                       patch_size=16, image_size=64, use_gated_mlp=gated, hidden_act="silu" if gated else "gelu",
                                       num_register_tokens=registers, query_bias=qv_bias, value_bias=qv_bias,
                                       layerscale_value=0.5)
    return perturb(transformers.DINOv3ViTModel(cfg)).eval()


def _check(ours, hf, x, what):
    with torch.no_grad():
        out = hf(pixel_values=x)
        assert_rel(ours.forward_features(x), out.last_hidden_state, what=f"{what} last_hidden_state")
        assert_rel(ours(x), out.pooler_output, what=f"{what} pooler_output")


@pytest.mark.parametrize("gated, registers, qv_bias", [(False, 4, True), (True, 4, True), (False, 0, False)])
def test_from_hf_dinov3_in_memory_and_directory(transformers, tmp_path, gated, registers, qv_bias):
    hf = _hf_model(transformers, gated, registers, qv_bias)
    x = image(48, 80)
    ours = from_hf_dinov3(hf, attn_impl="sdpa")
    _check(ours, hf, x, "in memory")
    hf.save_pretrained(tmp_path)
    _check(from_hf_dinov3(tmp_path, attn_impl="sdpa"), hf, x, "save_pretrained directory")
    back = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**to_hf_dinov3_config(ours))).eval()
    back.load_state_dict(to_hf_dinov3_state_dict(ours), strict=True)
    _check(ours, back, x, "exported back")
    from safetensors.torch import save_file

    back.config.save_pretrained(tmp_path / "out")
    save_file(to_hf_dinov3_state_dict(ours, file_layout=True), str(tmp_path / "out" / "model.safetensors"))
    _check(ours, transformers.DINOv3ViTModel.from_pretrained(tmp_path / "out").eval(), x, "exported file")


def test_timm_dinov3_preset_exports_to_transformers(transformers, timm):
    """timm's DINOv3 and transformers' DINOv3 compute the same model: a preset exports and matches."""
    ours = perturb(create_eva("vit_small_patch16_dinov3_qkvb", depth=2, embed_dim=128, num_heads=2,
                              global_pool="token", attn_impl="sdpa")).eval()
    hf = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**to_hf_dinov3_config(ours))).eval()
    hf.load_state_dict(to_hf_dinov3_state_dict(ours), strict=True)
    _check(ours, hf, image(64, 96), "preset exported")


def test_refuses_what_it_cannot_represent(transformers):
    hf = _hf_model(transformers, False, 0)
    with pytest.raises(ValueError, match="key_bias"):
        from_hf_dinov3.__globals__["dinov3_config_fields"](dict(hf.config.to_dict(), key_bias=True))
    with pytest.raises(ValueError, match="DINOv3-shaped"):
        to_hf_dinov3_config(create_eva("eva02_tiny_patch14_224", depth=1))
