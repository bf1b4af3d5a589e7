"""fastvit.naflex on the CPU: pack's layout, packed batches against each image alone (outputs and
parameter gradients, fp32, 1e-5 relative), timm's padded form against the packed one, bad input,
and the 8 names' parameter counts (timm 1.0.29's, taken once from timm on the meta device; the
interop tests recompute them against timm itself)."""

import warnings

import pytest
import torch

import fastvit
from fastvit.naflex import NaFlexVit, Packed, create_naflex, pack, packed_from_padded, size_for_max_patches
from fastvit.naflex import blocks as naflex_blocks

TINY = dict(embed_dim=32, num_heads=2, depth=2, num_classes=5, pos_embed_grid_size=(3, 3), norm_impl="torch",
            linear_impl="torch")
# one per pooling / position-embedding option: learned + avg (4 registers, LayerScale), aspect-preserving
# factorised + avg, MAP with tanh GELU (no prefix), class token + 'token' pooling, max / avgmax
OPTIONS = {
    "gap": ("naflexvit_base_patch16_gap", {}),
    "parfac": ("naflexvit_base_patch16_parfac_gap", {}),
    "par": ("naflexvit_base_patch16_par_gap", {}),
    "siglip_map": ("naflexvit_base_patch16_siglip", {}),
    "reg1_map": ("naflexvit_so150m2_patch16_reg1_map", {"embed_dim": 26}),
    "cls_token": ("naflexvit_base_patch16_gap", {"class_token": True, "global_pool": "token", "fc_norm": False}),
    "avgmax": ("naflexvit_base_patch16_gap", {"global_pool": "avgmax"}),
}
SIZES = [(32, 48), (64, 16), (16, 16), (80, 32)]  # grids 2x3, 4x1, 1x1, 5x2 around a 3x3 table

PARAM_COUNTS = {  # timm 1.0.29, timm.create_model(name) (its default classes: 0 for the SigLIP encoders)
    "naflexvit_base_patch16_gap": 86633704,
    "naflexvit_base_patch16_par_gap": 86633704,
    "naflexvit_base_patch16_parfac_gap": 86461672,
    "naflexvit_base_patch16_map": 93718504,
    "naflexvit_so150m2_patch16_reg1_gap": 136058728,
    "naflexvit_so150m2_patch16_reg1_map": 142457320,
    "naflexvit_base_patch16_siglip": 92930304,
    "naflexvit_so400m_patch16_siglip": 427888064,
}


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def model_for(key, seed=0, **extra):
    name, over = OPTIONS[key]
    torch.manual_seed(seed)
    m = create_naflex(name, **{**TINY, **over, **extra})
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial LayerScale / tokens / norms
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return m.eval()


def images(sizes=SIZES, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=g) for h, w in sizes]


def test_pack_layout():
    imgs = images([(32, 48), (16, 32)])
    p = pack(imgs, patch_size=16)
    assert isinstance(p, Packed) and len(p) == 2
    assert p.grid_sizes == ((2, 3), (1, 2)) and p.max_seqlen == 6 and p.seqlens == [6, 2]
    assert p.cu_seqlens.dtype == torch.int32 and p.cu_seqlens.tolist() == [0, 6, 8]
    assert p.patches.shape == (8, 16 * 16 * 3)
    assert p.coords.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2], [0, 0], [0, 1]]
    for row, (r, c) in enumerate(p.coords.tolist()):
        img = imgs[0] if row < 6 else imgs[1]
        want = img[:, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16].permute(1, 2, 0).reshape(-1)  # (ph, pw, C): timm's
        assert torch.equal(p.patches[row], want)
    q = p.to(dtype=torch.float64)
    assert q.patches.dtype == torch.float64 and q.cu_seqlens.dtype == torch.int32 and q.grid_sizes == p.grid_sizes


@pytest.mark.parametrize("key", list(OPTIONS))
def test_packed_equals_each_image_alone(key):
    model = model_for(key).train()  # dropout-free: train mode only to keep autograd's path general
    imgs = images()
    packed = pack(imgs, patch_size=16)
    out = model(packed)
    assert out.shape == (len(imgs), 5)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * weights).sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    alone = []
    for i, img in enumerate(imgs):
        o = model(img[None])
        (o * weights[i]).sum().backward()
        alone.append(o.detach())
    assert rel(out.detach(), torch.cat(alone)) <= 1e-5
    for n, p in model.named_parameters():
        assert rel(packed_grads[n], p.grad) <= 1e-5, n


def test_batch_of_one_and_image_batch_equal_the_plain_forward():
    model = model_for("gap")
    x = torch.randn(3, 3, 48, 32)
    with torch.no_grad():
        plain = model(x)
        assert rel(model(pack([x[0]])), plain[:1]) <= 1e-6
        assert rel(model(pack(list(x))), plain) <= 1e-6
        feats = model.forward_features(x)
        assert feats.shape == (3, 4 + 6, 32)
        assert rel(model.forward_head(feats), plain) <= 1e-6


@pytest.mark.parametrize("key", ["gap", "reg1_map", "cls_token"])
def test_padded_dict_equals_packed(key):
    model = model_for(key)
    imgs = images()
    packed = pack(imgs)
    n, b = max(packed.seqlens), len(imgs)
    patches = torch.full((b, n, packed.patches.shape[1]), 7.0)  # padding that would show if it leaked
    coord = torch.zeros(b, n, 2, dtype=torch.long)
    valid = torch.zeros(b, n, dtype=torch.bool)
    for i, (lo, hi) in enumerate(zip(packed.cu_seqlens.tolist(), packed.cu_seqlens.tolist()[1:])):
        patches[i, :hi - lo], coord[i, :hi - lo], valid[i, :hi - lo] = packed.patches[lo:hi], packed.coords[lo:hi], True
    batch = {"patches": patches, "patch_coord": coord, "patch_valid": valid}
    with torch.no_grad():
        want = model(packed)
        assert rel(model(batch), want) <= 1e-6
        assert rel(model(patches, patch_coord=coord, patch_valid=valid), want) <= 1e-6
        feats = model.forward_features(batch)
        rows = model.forward_features(packed)
        assert feats["patch_valid"] is valid and feats["patches"].shape == (b, model.num_prefix_tokens + n, model.embed_dim)
        assert rel(model.forward_head(feats), want) <= 1e-6
        assert rel(model.forward_head(rows, packed=packed), want) <= 1e-6
        npre, at = model.num_prefix_tokens, 0
        for i, length in enumerate(packed.seqlens):  # the dict's valid rows are the packed rows, in order
            assert torch.equal(feats["patches"][i, :npre + length], rows[at:at + npre + length])
            assert not feats["patches"][i, npre + length:].any()
            at += npre + length


def test_attention_is_varlen_over_each_image(monkeypatch):
    model = model_for("gap")
    seen = []
    real = naflex_blocks.varlen_attention

    def spy(q, k, v, cu_seqlens, max_seqlen, scale, impl):
        seen.append((q.shape, cu_seqlens.tolist(), max_seqlen, impl))
        return real(q, k, v, cu_seqlens, max_seqlen, scale, impl=impl)

    monkeypatch.setattr(naflex_blocks, "varlen_attention", spy)
    with torch.no_grad():
        model(pack(images()))
    assert len(seen) == 2  # one call per block, the whole packed batch at once
    lens = [6 + 4, 4 + 4, 1 + 4, 10 + 4]  # patches + 4 registers per image
    for shape, cu, max_len, impl in seen:
        assert shape == (sum(lens), 2, 16) and max_len == 14 and impl == model.cfg.varlen_impl
        assert cu == [0, 10, 18, 23, 37]


def test_intermediates():
    model = model_for("gap")
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=[0, 1], return_prefix_tokens=True)
        assert rel(final, model.forward_features(x)) <= 1e-6
        assert inter[0][0].shape == (2, 32, 2, 3) and inter[0][1].shape == (2, 4, 32)
        rows, _ = model.forward_intermediates(pack(list(x)), indices=1, output_fmt="NLC")
        assert rel(rows, model.forward_features(pack(list(x)))) <= 1e-6
        with pytest.raises(ValueError, match="NLC"):
            model.forward_intermediates(pack(list(x)))


def test_max_patches_resizes_the_siglip2_way():
    imgs = images([(256, 64), (32, 48), (40, 40)])
    with pytest.warns(UserWarning, match="resized 2 image"):
        p = pack(imgs, patch_size=16, max_patches=12)
    assert p.grid_sizes[1] == (2, 3)  # fits and is whole patches: left as it is
    for h, w in (p.grid_sizes[0], p.grid_sizes[2]):
        assert h * w <= 12
    assert p.grid_sizes[0][0] > 2 * p.grid_sizes[0][1]  # tall stays tall
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pack(imgs[1:2], patch_size=16, max_patches=12)
    for hw in [(512, 128), (30, 1000), (16, 16), (1000, 1000)]:
        th, tw = size_for_max_patches(*hw, 16, 64)
        assert th % 16 == 0 and tw % 16 == 0 and (th // 16) * (tw // 16) <= 64
        assert (th // 16 + 1) * (tw // 16 + 1) > 64  # no larger grid of the same shape fits


@pytest.mark.parametrize("bad, err, match", [
    ([], ValueError, "empty"),
    (torch.randn(3, 32, 32), TypeError, "list"),
    ([torch.randn(3, 32, 32), "img"], TypeError, r"images\[1\]"),
    ([torch.randn(3, 8, 32)], ValueError, "smaller than one 16x16 patch"),
    ([torch.randn(3, 32, 32), torch.randn(1, 32, 32)], ValueError, "channel"),
    ([torch.randn(3, 32, 32), torch.randn(3, 32, 32, dtype=torch.float64)], TypeError, "mixed dtypes"),
    ([torch.randn(32, 32)], ValueError, r"\(C, H, W\)"),
    ([torch.randn(3, 40, 32)], ValueError, "multiple of the patch size"),
    ([torch.zeros(3, 32, 32, dtype=torch.uint8)], TypeError, "floating"),
])
def test_pack_rejects_bad_input(bad, err, match):
    with pytest.raises(err, match=match):
        pack(bad, patch_size=16)


def test_model_rejects_bad_input():
    model = model_for("gap")
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="channel count or patch size"):
        model(pack([torch.randn(1, 32, 32)]))
    with pytest.raises(ValueError, match="patch_size=8"):
        model(pack([torch.randn(3, 32, 32)], patch_size=8))
    with pytest.raises(ValueError, match="smaller than one"):
        model(torch.randn(1, 3, 8, 32))
    with pytest.raises(TypeError, match="Packed"):
        model([torch.randn(3, 32, 32)])
    with pytest.raises(ValueError, match="patch_valid"):
        model({"patches": torch.randn(1, 4, 768), "patch_coord": torch.zeros(1, 4, 2, dtype=torch.long)})
    with pytest.raises(TypeError, match="dtype"):
        model(pack([torch.randn(3, 32, 32, dtype=torch.float64)]))


def test_registered_names_and_parameter_counts():
    assert fastvit.list_models("naflexvit*") == sorted(PARAM_COUNTS)
    for name, count in PARAM_COUNTS.items():
        with torch.device("meta"):
            model = fastvit.create_model(name)
        assert isinstance(model, NaFlexVit)
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_create_model_options():
    model = fastvit.create_model("naflexvit_base_patch16_siglip.v2_webli", depth=1, embed_dim=64, num_heads=2)
    assert model.num_classes == 0 and model.pretrained_cfg["hf_hub_id"] == "timm/naflexvit_base_patch16_siglip.v2_webli"
    with pytest.raises(TypeError, match="unknown NaFlexVit option"):
        fastvit.create_model("naflexvit_base_patch16_gap", rope_type="axial")
    assert fastvit.get_config("naflexvit_base_patch16_par_gap").pos_embed_ar_preserving


def test_features_only_and_gradient_checkpointing():
    model = model_for("siglip_map").train()
    x = torch.randn(2, 3, 32, 48)
    feats = fastvit.create_model("naflexvit_base_patch16_gap", features_only=True, out_indices=(0, 1), **{
        k: v for k, v in TINY.items() if k != "num_classes"})
    assert [tuple(f.shape) for f in feats(x)] == [(2, 32, 2, 3)] * 2
    packed = pack(list(x) + [torch.randn(3, 16, 64)])
    model(packed).square().sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(packed).square().sum().backward()
    for n, p in model.named_parameters():
        assert rel(p.grad, want[n]) <= 1e-6, n


def test_fused_kernels_on_packed_rows():
    """fastvit's Triton LayerNorm / GEMM epilogues (interpreter on the CPU) on the packed rows as they are."""
    ref = model_for("siglip_map", depth=1)
    fused = create_naflex("naflexvit_base_patch16_siglip", **{**TINY, "depth": 1, "norm_impl": "triton",
                                                               "linear_impl": "triton"}).eval()
    fused.load_state_dict(ref.state_dict())
    packed = pack(images([(32, 48), (16, 16)]))
    with torch.no_grad():
        assert rel(fused(packed), ref(packed)) <= 1e-5


@pytest.mark.parametrize("over, match", [
    (dict(global_pool="token"), "class_token"), (dict(global_pool=""), "global_pool"),
    (dict(pos_embed="rope"), "pos_embed"), (dict(pos_embed_interp_mode="nearest"), "interp_mode"),
    (dict(embed_dim=30, num_heads=4), "divisible"), (dict(varlen_impl="flash"), "varlen_impl"),
    (dict(attn_drop_rate=0.1), "attn_drop_rate"),
])
def test_config_rejects_what_it_does_not_build(over, match):
    with pytest.raises(ValueError, match=match):
        NaFlexVit(**{**TINY, **over})


def test_bf16_pack_and_model():
    imgs = [torch.randn(3, 100, 37).bfloat16(), torch.randn(3, 16, 16).bfloat16()]
    with pytest.warns(UserWarning, match="resized 1 image"):
        packed = pack(imgs, max_patches=8)
    assert packed.patches.dtype == torch.bfloat16 and packed.grid_sizes == ((4, 2), (1, 1))
    model = model_for("reg1_map").to(torch.bfloat16)
    out = model(packed)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 5) and torch.isfinite(out).all()
    assert rel(out.float(), model.float()(packed.to(dtype=torch.float32))) <= 0.05
