import copy

import pytest
import torch

import fastvit
from fastvit.layers import PatchEmbed, resample_pos_embed


def tiny(**kw):
    """A 2-block ViT-Ti-width model: fast on CPU, same per-block shapes as the preset."""
    kw = {"depth": 2, **kw}
    return fastvit.create_model("vit_tiny_patch16_224", **kw).eval()


# One member per preset family (width/heads/patch); depth cut to 2 so CPU time stays small.
FAMILIES = ["vit_tiny_patch16_224", "vit_small_patch32_224", "vit_base_patch16_224", "vit_base_patch8_224",
            "vit_large_patch14_224", "vit_huge_patch14_224", "deit_tiny_distilled_patch16_224"]


@pytest.mark.parametrize("name", FAMILIES)
def test_eager_and_sdpa_agree(name):
    torch.manual_seed(0)
    eager = fastvit.create_model(name, depth=2, attn_impl="eager").eval()
    sdpa = fastvit.create_model(name, depth=2, attn_impl="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, *eager.cfg.img_size)
    with torch.no_grad():
        a, b = eager(x), sdpa(x)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_conv_and_linear_patch_embedding_agree():
    torch.manual_seed(0)
    pe = PatchEmbed(16, 3, 64)
    x = torch.randn(2, 3, 64, 48)
    torch.testing.assert_close(pe.forward_linear(x), pe(x), rtol=1e-5, atol=1e-5)
    assert pe(x).shape == (2, 12, 64)


def test_outputs_and_features_shapes():
    model = tiny()
    x = torch.randn(3, 3, 224, 224)
    assert model(x).shape == (3, 1000)
    assert model.forward_features(x).shape == (3, 197, 192)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (3, 192)


def test_num_classes_zero_returns_pooled_features():
    model = tiny(num_classes=0)
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 192)


def test_avg_pool_without_class_token():
    model = tiny(global_pool="avg", class_token=False, num_classes=5)
    x = torch.randn(2, 3, 224, 224)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 196, 192)
    expected = model.head(model.fc_norm(tokens.mean(1)))
    torch.testing.assert_close(model(x), expected)


def test_representation_layer_is_linear_tanh():
    model = tiny(representation_size=32, num_classes=4)
    feats = model.forward_features(torch.randn(1, 3, 224, 224))
    pre = model.forward_head(feats, pre_logits=True)
    torch.testing.assert_close(pre, torch.tanh(model.pre_logits.fc(feats[:, 0])))
    assert pre.abs().max() <= 1


def test_distilled_model_mean_unless_distilled_training():
    """timm's DeiT: the mean of both heads (and of both features with pre_logits), except in
    training after set_distilled_training(True), which returns both logits."""
    model = tiny(distilled=True, num_classes=7)
    x = torch.randn(2, 3, 224, 224)
    feats = model.forward_features(x)
    mean = (model.head(feats[:, 0]) + model.head_dist(feats[:, 1])) / 2
    torch.testing.assert_close(model(x), mean)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), (feats[:, 0] + feats[:, 1]) / 2)
    model.train()
    torch.testing.assert_close(model(x), mean)  # no dropout in this model
    model.set_distilled_training(True)
    cls_logits, dist_logits = model(x)
    torch.testing.assert_close(cls_logits, model.head(feats[:, 0]))
    torch.testing.assert_close(dist_logits, model.head_dist(feats[:, 1]))
    model.eval()
    torch.testing.assert_close(model(x), mean)


def test_other_in_chans_and_non_square_size():
    model = tiny(in_chans=1, img_size=(64, 96), num_classes=3)
    assert model.forward_features(torch.randn(2, 1, 64, 96)).shape == (2, 1 + 4 * 6, 192)


@pytest.mark.parametrize("size,tokens", [((224, 160), 1 + 14 * 10), ((160, 224), 1 + 10 * 14), ((224, 224), 197)])
def test_dynamic_img_size(size, tokens):
    model = tiny(dynamic_img_size=True)
    feats = model.forward_features(torch.randn(2, 3, *size))
    assert feats.shape == (2, tokens, 192)
    assert torch.isfinite(feats).all()


def test_dynamic_size_uses_resampled_pos_embed():
    """At 160x224 the model must add exactly resample_pos_embed(pos, (10, 14)) to the tokens."""
    model = tiny(dynamic_img_size=True)
    x = torch.randn(1, 3, 160, 224)
    pos = resample_pos_embed(model.pos_embed, (10, 14), (14, 14), 1)
    embedded, _ = model._embed(x)
    patches = model.patch_embed(x)
    torch.testing.assert_close(embedded, torch.cat([model.cls_token, patches], 1) + pos)


def test_resample_to_same_grid_is_identity():
    pos = torch.randn(1, 1 + 14 * 14, 32)
    torch.testing.assert_close(resample_pos_embed(pos, (14, 14)), pos, rtol=0, atol=1e-6)


@pytest.mark.parametrize("antialias", [True, False])  # True: timm's default; False: HF's interpolate_pos_encoding
def test_resample_keeps_prefix_tokens_and_matches_bicubic(antialias):
    pos = torch.randn(1, 2 + 4 * 4, 8)
    out = resample_pos_embed(pos, (6, 3), num_prefix_tokens=2, antialias=antialias)
    assert out.shape == (1, 2 + 18, 8)
    assert torch.equal(out[:, :2], pos[:, :2])
    grid = pos[:, 2:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=(6, 3), mode="bicubic", align_corners=False, antialias=antialias)
    torch.testing.assert_close(out[:, 2:], ref.permute(0, 2, 3, 1).reshape(1, 18, 8))


def test_224_weights_load_into_384_model():
    src = tiny()
    dst = tiny(img_size=384)
    sd = src.state_dict()
    sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], dst.cfg.grid_size, src.cfg.grid_size, 1)
    dst.load_state_dict(sd)
    out = dst(torch.randn(1, 3, 384, 384))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_set_img_size_resamples_in_place():
    model = tiny()
    model.set_img_size(384)
    assert model.pos_embed.shape == (1, 577, 192)
    assert model(torch.randn(1, 3, 384, 384)).shape == (1, 1000)


def _block_outputs(model, x):
    y, _ = model._embed(x)
    outs = []
    for block in model.blocks:
        y = block(y)
        outs.append(y)
    return outs


@pytest.mark.parametrize("fmt", ["NCHW", "NLC"])
def test_forward_intermediates(fmt):
    model = tiny(depth=4)
    x = torch.randn(2, 3, 224, 224)
    final, feats = model.forward_intermediates(x, indices=[0, -1], output_fmt=fmt)
    torch.testing.assert_close(final, model.forward_features(x))
    blocks = _block_outputs(model, x)
    for got, i in zip(feats, (0, 3)):
        tokens = blocks[i][:, 1:]  # patch tokens, class token dropped
        expected = tokens.reshape(2, 14, 14, 192).permute(0, 3, 1, 2) if fmt == "NCHW" else tokens
        torch.testing.assert_close(got, expected)
    only = model.forward_intermediates(x, indices=2, output_fmt=fmt, intermediates_only=True)
    torch.testing.assert_close(only[1], feats[1])
    assert len(only) == 2
    normed = model.forward_intermediates(x, indices=[1], output_fmt="NLC", norm=True, return_prefix_tokens=True, intermediates_only=True)
    torch.testing.assert_close(normed[0][0], model.norm(blocks[1])[:, 1:])
    torch.testing.assert_close(normed[0][1], model.norm(blocks[1])[:, :1])


def test_forward_intermediates_bad_indices():
    model = tiny()
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(torch.randn(1, 3, 224, 224), indices=[5])


def test_grad_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    model = tiny(drop_path_rate=0.0)
    x = torch.randn(2, 3, 224, 224)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


def test_reset_classifier_and_no_weight_decay():
    model = tiny()
    model.reset_classifier(10)
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 10)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 192)
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}


def test_drop_path_increases_linearly():
    model = fastvit.create_model("vit_tiny_patch16_224", drop_path_rate=0.1)
    rates = [b.mlp.fc2.drop_path.p for b in model.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    assert all(b > a for a, b in zip(rates, rates[1:]))


def test_init_statistics():
    torch.manual_seed(0)
    model = fastvit.create_model("vit_base_patch16_224")
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0


@pytest.mark.parametrize("overrides", [dict(attn_impl="eager"), dict(norm_impl="triton"), dict(linear_impl="triton"), dict(attn_impl="triton")])
def test_implementation_switches_keep_state_dict_keys(overrides):
    ref = tiny()
    other = tiny(**overrides)
    assert list(ref.state_dict()) == list(other.state_dict())
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in other.state_dict().items()}


@pytest.mark.parametrize("field,value", [("attn_impl", "fast"), ("norm_impl", "apex"), ("linear_impl", "cutlass")])
def test_unknown_implementation_lists_valid(field, value):
    with pytest.raises(ValueError, match="valid"):
        tiny(**{field: value})


def test_training_mode_with_dropouts_runs_and_differs_from_eval():
    torch.manual_seed(0)
    model = tiny(drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.1).train()
    x = torch.randn(2, 3, 224, 224)
    out = model(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), out)
        assert torch.equal(model(x), model(x))


# -- bad input --------------------------------------------------------------------------

BAD_INPUTS = [
    (lambda: torch.randn(3, 224, 224), ValueError, "4-D"),
    (lambda: torch.randn(1, 4, 224, 224), ValueError, "3 input channels"),
    (lambda: torch.randn(1, 3, 225, 224), ValueError, "not divisible by the patch size 16"),
    (lambda: torch.randn(1, 3, 256, 256), ValueError, "expected image size 224x224"),
    (lambda: torch.randn(0, 3, 224, 224), ValueError, "non-empty"),
    (lambda: torch.randint(0, 255, (1, 3, 224, 224), dtype=torch.uint8), TypeError, "floating-point"),
    (lambda: torch.ones(1, 3, 224, 224, dtype=torch.bool), TypeError, "floating-point"),
    (lambda: torch.randn(1, 3, 224, 224, dtype=torch.float64), TypeError, "dtype"),
    (lambda: torch.randn(1, 3, 224, 224, device="meta"), ValueError, "model is on cpu"),
    (lambda: [[0.0]], TypeError, "torch.Tensor"),
]


@pytest.mark.parametrize("make,exc,match", BAD_INPUTS)
def test_bad_input_raises_clear_error(make, exc, match):
    model = tiny()
    with pytest.raises(exc, match=match):
        model(make())


def test_state_dict_round_trip_through_copy():
    model = tiny()
    clone = copy.deepcopy(model)
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(model(x), clone(x))
