"""transformers' Siglip2VisionModel (SigLIP 2 NaFlex) against timm's naflexvit_*_siglip and fastvit:
the weight mapping, the input mapping (patch layout, per-image position resize), in fp32 within
1e-5 relative, on a padded batch of images of different aspect ratios and sizes (position tables
resized up and down); strict round trips of weights and config; save_pretrained directories."""

import pytest
import torch

import fastvit
from fastvit.checkpoints.hf_siglip2 import (
    convert_hf_siglip2_state_dict,
    from_hf_siglip2,
    hf_inputs_to_packed,
    hf_inputs_to_patch_lists,
    hf_inputs_to_timm,
    siglip2_config,
    siglip2_config_fields,
    to_hf_siglip2_state_dict,
)
from fastvit.naflex import pack
from interop_helpers import assert_rel, perturb

PATCH = 8
# (rows, columns) of patches per image: the 4 x 4 position table is resized up (6, 5) and down
# (2, 3), kept (4, 4), and a one-patch-high strip
SHAPES = [(2, 3), (4, 4), (6, 5), (1, 7)]


def _hf_config(transformers, head: bool = True, act: str = "gelu_pytorch_tanh", eps: float = 1e-6):
    return transformers.Siglip2VisionConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                            num_attention_heads=2, patch_size=PATCH, num_patches=16,
                                            vision_use_head=head, hidden_act=act, layer_norm_eps=eps)


def _hf_model(transformers, **kw):
    model = transformers.Siglip2VisionModel(_hf_config(transformers, **kw))
    model.config._attn_implementation = "eager"
    return perturb(model, scale=0.1).eval()


def _hf_inputs(shapes=SHAPES, seed: int = 0):
    """What transformers' Siglip2 processor hands the model: row-major patches padded to the
    longest, a 0/1 mask, the (rows, columns) of each image."""
    g = torch.Generator().manual_seed(seed)
    length = max(h * w for h, w in shapes) + 3  # padding even after the longest
    pixel_values = torch.randn(len(shapes), length, 3 * PATCH * PATCH, generator=g)
    mask = torch.zeros(len(shapes), length, dtype=torch.long)
    for i, (h, w) in enumerate(shapes):
        mask[i, :h * w] = 1
        pixel_values[i, h * w:] = 0
    return pixel_values, mask, torch.tensor(shapes)


def _timm_model(timm, hf):
    fields = siglip2_config_fields(hf.config.to_dict())
    name = "naflexvit_base_patch16_siglip"
    model = timm.create_model(name, pretrained=False, **fields).eval()
    model.load_state_dict(convert_hf_siglip2_state_dict(hf.state_dict()), strict=True)
    return model


def _valid(x, mask):
    return torch.cat([x[i, mask[i].bool()] for i in range(x.shape[0])])


@pytest.mark.parametrize("head", [True, False])
def test_timm_naflexvit_computes_what_transformers_does(transformers, timm, head):
    """The mapping checked on timm's own NaFlexVit, independent of fastvit's model."""
    hf = _hf_model(transformers, head=head)
    ours = _timm_model(timm, hf)
    pixel_values, mask, shapes = _hf_inputs()
    with torch.no_grad():
        ref = hf(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes)
        batch = hf_inputs_to_timm(pixel_values, mask, shapes)
        feats = ours.forward_features(batch["patches"], patch_coord=batch["patch_coord"], patch_valid=batch["patch_valid"])
        assert_rel(_valid(feats["patches"], mask), _valid(ref.last_hidden_state, mask), what="last_hidden_state")
        if head:
            assert_rel(ours(batch), ref.pooler_output, what="pooler_output")


def test_patch_layout_is_timms(transformers, timm):
    """transformers' processor flattens a patch as (row, column, channel), as timm's NaFlex patchify."""
    from timm.models.naflexvit import batch_patchify
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

    img = torch.randn(3, 3 * PATCH, 5 * PATCH, generator=torch.Generator().manual_seed(3))
    ours, grid = batch_patchify(img[None], (PATCH, PATCH))
    assert grid == (3, 5)
    assert torch.equal(ours[0], convert_image_to_patches(img, PATCH))


def test_state_dict_and_config_round_trip_strictly(transformers):
    hf = _hf_model(transformers)
    sd = hf.state_dict()
    converted = convert_hf_siglip2_state_dict(sd)
    back = to_hf_siglip2_state_dict(converted)
    assert back.keys() == sd.keys()
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    fields = siglip2_config_fields(hf.config.to_dict())
    cfg = siglip2_config(fields, width=hf.config.intermediate_size)
    again = transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**cfg))
    again.load_state_dict(back, strict=True)
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
                 "num_patches", "hidden_act", "vision_use_head", "num_channels"):
        assert getattr(again.config, name) == getattr(hf.config, name), name


def test_full_siglip2_model_keys_give_the_vision_tower(transformers):
    hf = _hf_model(transformers)
    wrapped = {"vision_model." + k: v for k, v in hf.state_dict().items()}
    wrapped.update({"text_model.embeddings.token_embedding.weight": torch.zeros(3, 4), "logit_scale": torch.zeros(1)})
    assert convert_hf_siglip2_state_dict(wrapped).keys() == convert_hf_siglip2_state_dict(hf.state_dict()).keys()


def test_padding_is_dropped():
    pixel_values, mask, shapes = _hf_inputs()
    patches, grids = hf_inputs_to_patch_lists(pixel_values, mask, shapes)
    assert grids == SHAPES
    assert [p.shape[0] for p in patches] == [h * w for h, w in SHAPES]
    assert torch.equal(torch.cat(patches), _valid(pixel_values, mask))


def test_bad_inputs_and_configs_are_refused(transformers):
    pixel_values, mask, shapes = _hf_inputs()
    holes = mask.clone()
    holes[1, 0] = 0
    with pytest.raises(ValueError, match="pixel_attention_mask\\[1\\]"):
        hf_inputs_to_timm(pixel_values, holes, shapes)
    with pytest.raises(ValueError, match="spatial_shapes"):
        hf_inputs_to_timm(pixel_values, mask, shapes[:2])
    with pytest.raises(ValueError, match="pixel_values"):
        hf_inputs_to_timm(pixel_values[0], mask, shapes)
    with pytest.raises(TypeError, match="spatial_shapes"):
        hf_inputs_to_timm(pixel_values, mask, SHAPES)
    cfg = _hf_config(transformers).to_dict()
    with pytest.raises(ValueError, match="num_patches"):
        siglip2_config_fields(dict(cfg, num_patches=12))
    with pytest.raises(ValueError, match="model_type"):
        siglip2_config_fields(dict(cfg, model_type="siglip_vision_model"))
    with pytest.raises(KeyError, match="unexpected"):
        convert_hf_siglip2_state_dict({"encoder.layers.0.self_attn.rotary.weight": torch.zeros(1)})


def _check_fastvit(ours, hf, inputs, what, head=True):
    """fastvit's NaFlexVit on the packed batch (padding dropped) and on timm's padded dict."""
    pixel_values, mask, shapes = inputs
    with torch.no_grad():
        ref = hf(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes)
        packed = hf_inputs_to_packed(pixel_values, mask, shapes)
        assert_rel(ours.forward_features(packed), _valid(ref.last_hidden_state, mask), what=f"{what} last_hidden_state")
        if head:
            assert_rel(ours(packed), ref.pooler_output, what=f"{what} pooler_output (packed)")
            assert_rel(ours(hf_inputs_to_timm(pixel_values, mask, shapes)), ref.pooler_output, what=f"{what} pooler (dict)")


@pytest.mark.parametrize("head, act, eps", [(True, "gelu_pytorch_tanh", 1e-6), (False, "gelu", 1e-5)])
def test_fastvit_from_hf_in_memory_and_directory(transformers, tmp_path, head, act, eps):
    hf = _hf_model(transformers, head=head, act=act, eps=eps)
    inputs = _hf_inputs()
    ours = fastvit.from_hf(hf)
    assert type(ours).__name__ == "NaFlexVit" and not ours.training
    _check_fastvit(ours, hf, inputs, "from_hf", head)
    hf.save_pretrained(tmp_path / "hf")
    _check_fastvit(from_hf_siglip2(tmp_path / "hf"), hf, inputs, "save_pretrained directory", head)
    back = fastvit.to_hf_state_dict(ours)  # the strict round trip, both ways
    assert back.keys() == hf.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in hf.state_dict().items())


def test_fastvit_exports_a_directory_transformers_loads(transformers, tmp_path):
    from fastvit.checkpoints.huggingface import save_hf

    ours = perturb(fastvit.naflex.create_naflex("naflexvit_base_patch16_siglip", embed_dim=64, depth=2, num_heads=2,
                                                mlp_ratio=1.5, patch_size=PATCH, pos_embed_grid_size=(4, 4),
                                                pos_embed_interp_mode="bilinear", num_classes=0), scale=0.1).eval()
    save_hf(ours, tmp_path / "out")
    hf = transformers.Siglip2VisionModel.from_pretrained(tmp_path / "out").eval()
    assert hf.config.model_type == "siglip2_vision_model"
    _check_fastvit(ours, hf, _hf_inputs(seed=5), "exported")
    with pytest.raises(ValueError, match="Siglip2VisionModel"):
        fastvit.to_hf_config(fastvit.naflex.create_naflex("naflexvit_base_patch16_gap", depth=1))


def test_images_through_transformers_patches_and_fastvit_pack(transformers):
    """The whole path from pixels: transformers' processor patchify + padding against fastvit.naflex.pack."""
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

    hf = _hf_model(transformers)
    ours = from_hf_siglip2(hf)
    g = torch.Generator().manual_seed(7)
    images = [torch.randn(3, h * PATCH, w * PATCH, generator=g) for h, w in SHAPES]
    seqs = [convert_image_to_patches(im, PATCH) for im in images]
    length = max(s.shape[0] for s in seqs)
    pixel_values = torch.stack([torch.nn.functional.pad(s, (0, 0, 0, length - s.shape[0])) for s in seqs])
    mask = torch.stack([(torch.arange(length) < s.shape[0]).long() for s in seqs])
    with torch.no_grad():
        ref = hf(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=torch.tensor(SHAPES)).pooler_output
        assert_rel(ours(pack(images, patch_size=PATCH)), ref, what="pack(images)")
