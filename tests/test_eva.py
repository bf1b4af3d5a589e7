"""fastvit's Eva family without timm: the rotary embeddings' math (norm-preserving, relative,
invertible, prefix tokens untouched), the model's shapes and API, its presets and state-dict loads.
Numbers against timm itself: tests/interop/test_timm_eva.py."""

import math

import pytest
import torch

from fastvit.checkpoints.timm_eva import load_timm_eva, to_timm_eva_state_dict
from fastvit.eva import Eva, EvaConfig
from fastvit.layers.rope import (RopeCat, RopeDinoV3, RopeMixed, apply_rope, create_rope, rope_prefix, rot_half,
                                 rot_interleaved)
from fastvit.presets_eva import EVA_PRESETS, EVA_PRETRAINED_CFG, create_eva, get_eva_config, list_eva_models

TINY = dict(embed_dim=64, num_heads=2, depth=2)


def _ropes(grid=(3, 5)):
    """(module, half layout) for each kind of RoPE, head dim 32."""
    torch.manual_seed(0)
    return [
        (RopeCat(32, 10000.0, grid), False),
        (RopeCat(32, 100.0, grid, grid_offset=1.0, grid_indexing="xy"), False),
        (RopeDinoV3(32, 100.0, grid), True),
        (RopeMixed(64, 2, 2, 10.0, grid), False),
    ]


def _table(rope):
    emb = rope()
    return emb[0, 0] if emb.ndim == 4 else emb  # mixed: block 0, head 0


@pytest.mark.parametrize("i", range(4))
def test_rotation_preserves_norms_and_inverts(i):
    rope, half = _ropes()[i]
    emb = _table(rope).double()
    x = torch.randn(4, emb.shape[0], 32, dtype=torch.float64)
    y = apply_rope(x, emb, half)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    sin, cos = emb.chunk(2, -1)
    back = apply_rope(y, torch.cat([-sin, cos], -1), half)  # the inverse rotation
    torch.testing.assert_close(back, x)
    assert not torch.allclose(y, x)  # it does rotate


@pytest.mark.parametrize("i", range(4))
def test_rotated_dot_product_depends_only_on_the_offset(i):
    """q at patch a, k at patch b: q_rot . k_rot is the same for every pair with the same (row, col) offset."""
    rope, half = _ropes(grid=(4, 4))[i]
    emb = _table(rope).double()
    q, k = torch.randn(32, dtype=torch.float64), torch.randn(32, dtype=torch.float64)
    qr = apply_rope(q.expand(16, 32), emb, half)
    kr = apply_rope(k.expand(16, 32), emb, half)
    dots = qr @ kr.T  # (16, 16): patch a (row-major in the 4x4 grid) x patch b
    by_offset = {}
    for a in range(16):
        for b in range(16):
            off = (b // 4 - a // 4, b % 4 - a % 4)
            by_offset.setdefault(off, []).append(dots[a, b])
    for off, vals in by_offset.items():
        torch.testing.assert_close(torch.stack(vals), vals[0].expand(len(vals)), rtol=1e-5, atol=1e-5,
                                   msg=f"offset {off}")  # the tables are fp32
    assert len({round(v[0].item(), 6) for v in by_offset.values()}) > 1  # and it does depend on it


def test_rotation_layouts():
    x = torch.arange(6.0)
    assert rot_interleaved(x).tolist() == [-1, 0, -3, 2, -5, 4]
    assert rot_half(x).tolist() == [-3, -4, -5, 0, 1, 2]


def test_rope_leaves_prefix_tokens_alone():
    emb = RopeCat(16, grid=(2, 3))()
    x = torch.randn(2, 3, 4 + 6, 16)
    y = rope_prefix(x, emb, 4, False, x.dtype)
    assert torch.equal(y[:, :, :4], x[:, :, :4])
    torch.testing.assert_close(y[:, :, 4:], apply_rope(x[:, :, 4:], emb))


def test_rope_tables_known_values():
    """EVA's table at patch (r, c): angles r * f_k then c * f_k, each twice; DINOv3's from centres in [-1, 1]."""
    cat = RopeCat(8, 10000.0, (2, 3))()  # head dim 8: 2 bands (1, 1/100)
    sin = cat[:, :8].reshape(2, 3, 8)
    bands = [1.0, 0.01]
    for r in range(2):
        for c in range(3):
            want = [math.sin(r * f) for f in bands for _ in (0, 1)] + [math.sin(c * f) for f in bands for _ in (0, 1)]
            torch.testing.assert_close(sin[r, c], torch.tensor(want))
    dino = RopeDinoV3(8, 100.0, (2, 2))()  # periods 1, 10; centre of patch (0, 1): (-0.5, 0.5)
    angles = [2 * math.pi * -0.5 / 1, 2 * math.pi * -0.5 / 10, 2 * math.pi * 0.5 / 1, 2 * math.pi * 0.5 / 10]
    torch.testing.assert_close(dino[1, :8], torch.tensor(angles * 2).sin())


def test_fixed_grid_cache_equals_per_input_tables():
    for rope in (RopeCat(16, grid=(3, 4), ref_feat_shape=(2, 2)), RopeDinoV3(16, grid=(3, 4))):
        torch.testing.assert_close(rope(), rope((3, 4)))
        rope.set_grid((5, 2))
        assert rope().shape == (10, 32)
        torch.testing.assert_close(rope(), rope((5, 2)))


def test_create_rope_rejects_unknown_type():
    with pytest.raises(ValueError, match="rope_type"):
        create_rope("base", 64, 2, 2, (2, 2), 100.0, "ij")


# -- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "vit_small_patch16_dinov3_qkvb", "vit_pe_core_tiny_patch16_384",
                                  "vit_small_patch16_rope_mixed_ape_224", "vit_betwixt_patch16_rope_reg4_gap_256",
                                  "eva02_enormous_patch14_clip_224"])
def test_preset_shapes(name):
    model = create_eva(name, attn_impl="sdpa", norm_impl="torch", linear_impl="torch", **TINY).eval()
    cfg = model.cfg
    h, w = cfg.img_size
    gh, gw = cfg.grid_size
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, cfg.num_prefix_tokens + gh * gw, 64)
        out = model(x)
        assert out.shape == ((1, cfg.num_classes) if cfg.num_classes else (1, 64))
        final, inter = model.forward_intermediates(x)
        assert [t.shape for t in inter] == [(1, 64, gh, gw)] * 2
        torch.testing.assert_close(final, feats)
        assert torch.isfinite(out).all()


def test_dynamic_size_and_set_input_size():
    model = create_eva("vit_small_patch16_rope_ape_224", dynamic_img_size=True, attn_impl="sdpa", **TINY).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 80, 128)).shape == (1, 1 + 5 * 8, 64)
    fixed = create_eva("vit_small_patch16_rope_ape_224", attn_impl="sdpa", **TINY).eval()
    with pytest.raises(ValueError, match="dynamic_img_size"):
        fixed(torch.randn(1, 3, 80, 128))
    fixed.set_input_size((80, 128))
    assert fixed.pos_embed.shape == (1, 40, 64) and fixed.cfg.grid_size == (5, 8)  # no_embed_class
    with torch.no_grad():
        assert fixed(torch.randn(1, 3, 80, 128)).shape == (1, 1000)


def test_prefix_tokens_and_pools():
    model = create_eva("vit_small_patch16_dinov3", global_pool="token", num_classes=3, **TINY).eval()
    assert model.num_prefix_tokens == 5 and model.reg_token.shape == (1, 4, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), model.fc_norm(tokens[:, 0]))
        inter = model.forward_intermediates(x, indices=1, return_prefix_tokens=True, output_fmt="NLC",
                                            intermediates_only=True)
    assert inter[0][0].shape == (2, 16, 64) and inter[0][1].shape == (2, 5, 64)


def test_api_and_reset_classifier():
    model = create_eva("eva02_tiny_patch14_224", **TINY)
    assert model.no_weight_decay() == {"pos_embed", "cls_token", "reg_token"}
    assert create_eva("vit_small_patch16_rope_mixed_224", **TINY).no_weight_decay() >= {"rope.freqs"}
    assert model.group_matcher()["stem"].startswith("^cls_token")
    assert [f["module"] for f in model.feature_info] == ["blocks.0", "blocks.1"]
    model.reset_classifier(7)
    assert model.head.out_features == 7 and model.num_classes == 7
    model.reset_classifier(0, "token")
    assert isinstance(model.head, torch.nn.Identity) and model.global_pool == "token"
    assert model.prune_intermediate_layers([0]) == [0] and len(model.blocks) == 1


def test_parts_follow_the_options():
    names = lambda m: set(m.state_dict())  # noqa: E731
    eva02_b = names(create_eva("eva02_base_patch14_224", **TINY))
    assert {"blocks.0.attn.q_proj.bias", "blocks.0.attn.v_proj.bias", "blocks.0.mlp.fc1_g.weight",
            "blocks.0.mlp.fc1_x.weight", "blocks.0.mlp.norm.weight"} <= eva02_b
    assert "blocks.0.attn.k_proj.bias" not in eva02_b
    eva02_t = names(create_eva("eva02_tiny_patch14_224", **TINY))
    assert {"blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "blocks.0.mlp.fc1.weight"} <= eva02_t
    assert "blocks.0.attn.k_bias" not in eva02_t  # a buffer, not saved
    clip = names(create_eva("eva02_base_patch16_clip_224", **TINY))
    assert "blocks.0.attn.norm.weight" in clip
    qkvb = names(create_eva("vit_small_patch16_dinov3_qkvb", **TINY))
    assert {"blocks.0.gamma_1", "blocks.0.attn.q_bias", "reg_token"} <= qkvb and "pos_embed" not in qkvb
    pe = names(create_eva("vit_pe_core_tiny_patch16_384", **TINY))
    assert {"attn_pool.latent", "norm_pre.weight", "blocks.0.attn.qkv.bias"} <= pe and "patch_embed.proj.bias" not in pe


def test_state_dict_round_trip_across_implementations(tmp_path):
    a = create_eva("vit_small_patch16_rope_mixed_224", norm_impl="torch", linear_impl="torch", attn_impl="eager",
                   **TINY).eval()
    b = create_eva("vit_small_patch16_rope_mixed_224", attn_impl="sdpa", **TINY).eval()
    b.load_state_dict(to_timm_eva_state_dict(a), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-5)
    path = tmp_path / "eva.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in a.state_dict().items()}}, path)
    c = create_eva("vit_small_patch16_rope_mixed_224", pretrained=str(path), attn_impl="sdpa", **TINY).eval()
    with torch.no_grad():
        torch.testing.assert_close(c(x), a(x), rtol=1e-5, atol=1e-5)


def test_load_errors_name_the_keys():
    model = create_eva("eva02_tiny_patch14_224", **TINY)
    sd = model.state_dict()
    sd.pop("blocks.0.attn.q_bias")
    with pytest.raises(KeyError, match="q_bias"):
        load_timm_eva(model, sd)
    with pytest.raises(TypeError):
        load_timm_eva(model, 3)


def test_presets_table():
    assert len(list_eva_models()) == 60 == len(EVA_PRETRAINED_CFG)
    assert list_eva_models("*dinov3*")[0] == "vit_7b_patch16_dinov3"
    assert get_eva_config("vit_base_patch16_dinov3").rope_type == "dinov3"
    cfg = create_eva("vit_pe_core_tiny_patch16_384", **TINY).pretrained_cfg
    assert cfg["tag"] == "fb" and cfg["input_size"] == (3, 384, 384) and cfg["num_classes"] == 512
    assert all(set(EVA_PRESETS[n]) <= {f for f in EvaConfig.__dataclass_fields__} for n in EVA_PRESETS)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown Eva model"):
        create_eva("vit_base_patch16_dinov4")
    with pytest.raises(TypeError, match="unknown Eva option"):
        create_eva("eva02_tiny_patch14_224", rope_kind="cat")
    with pytest.raises(ValueError, match="rope_type"):
        Eva(rope_type="spiral", use_rot_pos_emb=True, **TINY)
    with pytest.raises(ValueError, match="patch_drop_rate"):
        Eva(patch_drop_rate=0.1, **TINY)
    model = Eva(**TINY)
    with pytest.raises(ValueError, match="image size"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(torch.randn(1, 3, 224, 224), output_fmt="NHWC")


def test_fastvit_kernels_compute_the_same_eva():
    """The attention core runs through fastvit's backends: Triton's kernels (attention, LayerNorm,
    fused linears; the interpreter on CPU) give the torch reference's numbers on a rotary model."""
    pytest.importorskip("triton")
    kw = dict(embed_dim=64, num_heads=2, depth=1, img_size=64)
    ref = create_eva("vit_small_patch16_dinov3_qkvb", attn_impl="eager", norm_impl="torch", linear_impl="torch", **kw)
    fused = create_eva("vit_small_patch16_dinov3_qkvb", attn_impl="triton", norm_impl="triton", linear_impl="triton", **kw)
    fused.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-4)


def test_backward_and_grad_checkpointing():
    model = create_eva("vit_small_patch16_rope_mixed_224", attn_impl="sdpa", img_size=64, **TINY)
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    assert grads["rope.freqs"].abs().sum() > 0  # the learned frequencies train
    model.zero_grad()
    model.set_grad_checkpointing()
    model(x).sum().backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[k], msg=k)


def test_hf_dinov3_names_round_trip():
    """fastvit Eva -> transformers DINOv3ViT names (module and file layouts) -> back: the same tensors."""
    from fastvit.checkpoints.hf_dinov3 import convert_hf_dinov3_state_dict, dinov3_config_fields, to_hf_dinov3_config
    from fastvit.checkpoints.hf_dinov3 import to_hf_dinov3_state_dict

    model = create_eva("vit_small_plus_patch16_dinov3_qkvb", swiglu_align_to=192, global_pool="token", **TINY)
    sd = model.state_dict()
    for file_layout in (False, True):
        back = convert_hf_dinov3_state_dict(to_hf_dinov3_state_dict(model, file_layout=file_layout))
        assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    fields = dinov3_config_fields(to_hf_dinov3_config(model))
    again = Eva(EvaConfig(**fields))
    again.load_state_dict(sd, strict=True)
    with pytest.raises(ValueError, match="DINOv3-shaped"):
        to_hf_dinov3_config(create_eva("vit_pe_core_tiny_patch16_384", **TINY))


def test_pickles_and_copies():
    import copy
    import pickle

    model = create_eva("vit_small_patch16_rope_mixed_224", attn_impl="sdpa", img_size=64, **TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            torch.testing.assert_close(clone(x), want, rtol=0, atol=0)
    assert create_eva("eva02_tiny_patch14_224", pretrained=False, **TINY) is not None
    with pytest.raises(ValueError, match="does not download"):
        create_eva("eva02_tiny_patch14_224", pretrained=True, **TINY)


def test_device_and_dtype_as_timm():
    model = create_eva("vit_7b_patch16_dinov3", device="meta")
    assert model.patch_embed.proj.weight.is_meta
    assert sum(p.numel() for p in model.parameters()) > 6e9
    half = create_eva("eva02_tiny_patch14_224", dtype=torch.bfloat16, **TINY)
    assert half.patch_embed.proj.weight.dtype == torch.bfloat16 and half.rope().dtype == torch.bfloat16
