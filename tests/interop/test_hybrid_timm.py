"""Hybrid ViT (ResNetV2 stem) against real timm: names, counts, outputs in memory and from files.

Runs in the interop environment (real timm); skips cleanly where timm is absent:
    PYTHONPATH=$PWD /work/venv-interop/bin/python -m pytest tests/interop/test_hybrid_timm.py -q
The transformer is cut to 2 blocks (``depth=2`` on both sides) where outputs are
compared, so the full backbones run at their native sizes within seconds.
"""

import pytest
import torch

timm = pytest.importorskip("timm")

import fastvit  # noqa: E402

pytestmark = pytest.mark.interop

HYBRIDS = ["vit_small_r26_s32_224", "vit_base_r50_s16_224", "vit_base_r50_s16_384", "vit_large_r50_s32_384"]


def rel_err(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def pair(name, **kw):
    torch.manual_seed(0)
    ref = timm.create_model(name, **kw).eval()
    with torch.no_grad():  # timm inits GroupNorm to (1, 0) and zero-inits nothing here: perturb so every weight matters
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return ref


@pytest.mark.parametrize("name", HYBRIDS)
def test_names_shapes_and_parameter_count_equal_timm(name):
    with torch.device("meta"):
        ref = timm.create_model(name)
        ours = fastvit.create_model(name)
    a, b = ref.state_dict(), ours.state_dict()
    assert sorted(a) == sorted(b)
    assert {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}
    n = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in ours.parameters()) == n == fastvit.get_config(name).num_params()


@pytest.mark.parametrize("name", HYBRIDS)
def test_from_timm_matches_in_memory(name):
    ref = pair(name, depth=2)
    ours = fastvit.from_timm(ref, attn_impl="eager")
    assert ours.cfg.hybrid_layers == tuple(len(s.blocks) for s in ref.patch_embed.backbone.stages)
    size = ref.patch_embed.img_size
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        err = rel_err(ours.forward_features(x), ref.forward_features(x))
        assert err < 1e-5, f"forward_features relative error {err:.2e}"
        if ours.cfg.num_classes:
            assert rel_err(ours(x), ref(x)) < 1e-5


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loads_timm_state_dict_files(tmp_path, suffix):
    name = "vit_small_r26_s32_224"
    ref = pair(name, depth=2)
    path = tmp_path / f"hybrid{suffix}"
    if suffix == ".pth":
        torch.save(ref.state_dict(), path)
    else:
        safetensors = pytest.importorskip("safetensors.torch")
        safetensors.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
    ours = fastvit.create_model(name, pretrained=str(path), depth=2, attn_impl="sdpa").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert rel_err(ours(x), ref(x)) < 1e-5
    back = fastvit.to_timm_state_dict(ours)
    fresh = timm.create_model(name, depth=2).eval()
    fresh.load_state_dict(back)  # and back into timm, strict
    with torch.no_grad():
        assert rel_err(fresh(x), ref(x)) < 1e-12


def test_dynamic_resolution_and_intermediates_match_timm():
    """Another input size: the backbone, token grid and blocks as timm's at that size. fastvit resamples the
    position embedding without antialiasing (Hugging Face's rule), timm's dynamic mode with it, so timm's
    model at the new size gets fastvit's resampled embedding; everything else is compared as it is."""
    name = "vit_base_r50_s16_224"
    ref = pair(name, depth=3)
    ours = fastvit.from_timm(ref, attn_impl="sdpa")
    ours.cfg = ours.cfg.replace(dynamic_img_size=True)
    at_size = timm.create_model(name, depth=3, img_size=(256, 288)).eval()
    sd = dict(ref.state_dict())
    sd["pos_embed"] = fastvit.resample_pos_embed(ref.pos_embed.detach(), (16, 18), (14, 14), 1)
    at_size.load_state_dict(sd)
    x = torch.randn(1, 3, 256, 288)  # a 16 x 18 grid from the native 14 x 14
    with torch.no_grad():
        assert rel_err(ours.forward_features(x), at_size.forward_features(x)) < 1e-5
        final_r, inter_r = at_size.forward_intermediates(x, indices=2, output_fmt="NCHW")
        final_o, inter_o = ours.forward_intermediates(x, indices=2, output_fmt="NCHW")
    assert rel_err(final_o, final_r) < 1e-5
    assert [tuple(t.shape) for t in inter_o] == [tuple(t.shape) for t in inter_r] == [(1, 768, 16, 18)] * 2
    for a, b in zip(inter_o, inter_r):
        assert rel_err(a, b) < 1e-5


def test_set_img_size_matches_timm_at_new_resolution():
    name = "vit_small_r26_s32_224"
    ref = pair(name, depth=2)
    ours = fastvit.from_timm(ref, attn_impl="eager")
    ours.set_img_size(288)
    big = timm.create_model(name, depth=2, img_size=288).eval()
    sd = dict(ref.state_dict())
    sd["pos_embed"] = ours.pos_embed.detach().clone()  # both resample from the same grid; compare the rest exactly
    big.load_state_dict(sd)
    x = torch.randn(1, 3, 288, 288)
    with torch.no_grad():
        assert rel_err(ours(x), big(x)) < 1e-5


def test_unsupported_hybrid_is_refused_clearly():
    # the 8x8 projection of vit_tiny_r_s16_p8 converts since issue 22 (tests/interop/test_timm_arch.py);
    # one whose kernel overlaps (kernel != stride) has no fastvit equivalent
    ref = timm.create_model("vit_tiny_r_s16_p8_224", depth=1)
    ref.patch_embed.proj = torch.nn.Conv2d(64, 192, 8, stride=4)
    with pytest.raises(ValueError, match="kernel = stride"):
        fastvit.from_timm(ref)
