"""fastvit gives timm's numbers: logits, features and intermediates within 1e-5 (relative, fp32)
for every preset family, at the native size and others, through from_timm and checkpoint files."""

import copy

import pytest
import torch

import fastvit
from interop_helpers import assert_rel, image, perturb

# (timm name, depth): one per preset family; depth cut so the CPU run stays short.
FAMILIES = [
    ("vit_tiny_patch16_224", 2), ("vit_small_patch32_224", 2), ("vit_base_patch16_224", 1),
    ("vit_base_patch8_224", 1), ("vit_large_patch14_224", 1), ("vit_huge_patch14_224", 1),
    ("vit_tiny_patch16_384", 1), ("deit_tiny_patch16_224", 2), ("deit_tiny_distilled_patch16_224", 2),
]
IDS = [name for name, _ in FAMILIES]
# loading a file at another resolution: one plain, one 384, one distilled, one wide/patch-14 family
RESIZE_FAMILIES = {"vit_tiny_patch16_224", "vit_tiny_patch16_384", "deit_tiny_distilled_patch16_224", "vit_large_patch14_224"}


def other_size(model) -> tuple[int, int]:
    """A non-square size, neither the native one nor a multiple of its grid: 10 x 14 patches."""
    p = model.patch_embed.patch_size[0]
    return (10 * p, 14 * p)


def timm_model(timm, name, depth, seed=0, **kw):
    torch.manual_seed(seed)
    return perturb(timm.create_model(name, pretrained=False, depth=depth, **kw), seed).eval()


def compare_all(fv, tm, x, what):
    with torch.no_grad():
        assert_rel(fv(x), tm(x), what=f"{what} logits")
        feats = tm.forward_features(x)
        assert_rel(fv.forward_features(x), feats, what=f"{what} forward_features")
        assert_rel(fv.forward_head(feats, pre_logits=True), tm.forward_head(feats, pre_logits=True), what=f"{what} pre_logits")
        kw = dict(indices=None, norm=True, return_prefix_tokens=True)
        assert_rel(fv.forward_intermediates(x, **kw), tm.forward_intermediates(x, **kw), what=f"{what} intermediates")


@pytest.mark.parametrize("name,depth", FAMILIES, ids=IDS)
def test_from_timm_native_dynamic_and_set_input_size(timm, name, depth):
    tm = timm_model(timm, name, depth)
    fv = fastvit.from_timm(tm)
    assert fv.cfg.pos_embed_resample == "timm"
    batch = 1 if fv.embed_dim >= 768 else 2
    compare_all(fv, tm, image(*fv.cfg.img_size, batch=batch), "native")

    size = other_size(fv)
    tm_dyn = timm_model(timm, name, depth, dynamic_img_size=True)
    tm_dyn.load_state_dict(tm.state_dict())
    fv_dyn = fastvit.from_timm(tm_dyn)
    assert fv_dyn.dynamic_img_size
    compare_all(fv_dyn, tm_dyn, image(*size, batch=batch), f"dynamic {size}")

    tm2, fv2 = copy.deepcopy(tm), copy.deepcopy(fv)
    tm2.set_input_size(img_size=size)
    fv2.set_input_size(img_size=size)
    assert fv2.patch_embed.grid_size == tm2.patch_embed.grid_size and fv2.patch_embed.img_size == tuple(tm2.patch_embed.img_size)
    assert_rel(fv2.pos_embed, tm2.pos_embed, what="set_input_size pos_embed")
    compare_all(fv2, tm2, image(*size, batch=batch), f"set_input_size {size}")


@pytest.mark.parametrize("name,depth", FAMILIES, ids=IDS)
def test_checkpoint_files_and_export(timm, tmp_path, name, depth):
    safetensors_torch = pytest.importorskip("safetensors.torch")  # installed in .venv-interop: never skips there
    tm = timm_model(timm, name, depth, seed=3)
    path = tmp_path / "timm.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, path)
    fv = fastvit.create_model(name, pretrained=str(path), depth=depth).eval()
    x = image(*fv.cfg.img_size, batch=1)
    with torch.no_grad():
        assert_rel(fv(x), tm(x), what="file load, logits")

    # export: strict load back into timm's model, same numbers
    back = timm.create_model(name, pretrained=False, depth=depth).eval()
    back.load_state_dict(fastvit.to_timm_state_dict(fv), strict=True)
    with torch.no_grad():
        assert_rel(back(x), tm(x), what="exported to timm")
    if name not in RESIZE_FAMILIES:
        return
    # another resolution: timm's own file loader (checkpoint_filter_fn) resamples with antialias
    native = fv.cfg.img_size[0]
    new = 224 if native == 384 else 384 if fv.embed_dim < 768 else native - 4 * fv.cfg.patch_size
    ref = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), custom_load=False),
                            depth=depth, img_size=new).eval()
    got = fastvit.create_model(name, pretrained=str(path), depth=depth, img_size=new).eval()
    assert_rel(got.pos_embed, ref.pos_embed, what=f"pos_embed resampled {native}->{new}")
    with torch.no_grad():
        assert_rel(got(image(new, new, batch=1)), ref(image(new, new, batch=1)), what=f"logits at {new}")


def test_big_vision_npz_at_another_size_matches_timm_loader(timm, tmp_path):
    """A Google .npz at 32 px loaded into a 48 px model: timm's load_pretrained resamples bilinearly."""
    from test_checkpoints import write_flax_npz
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    small = dict(patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5)
    source = perturb(fastvit.VisionTransformer(fastvit.ViTConfig(img_size=32, **small)), seed=5).eval()
    write_flax_npz(source, tmp_path / "vit.npz")
    ref = TimmViT(img_size=48, **small).eval()
    ref.load_pretrained(str(tmp_path / "vit.npz"))
    model = fastvit.load_checkpoint(fastvit.VisionTransformer(fastvit.ViTConfig(img_size=48, **small)).eval(), tmp_path / "vit.npz")
    assert model.cfg.pos_embed_resample == "timm"  # the timm model it fills then resamples as timm
    assert_rel(model.pos_embed, ref.pos_embed, what="npz pos_embed")
    with torch.no_grad():
        assert_rel(model(image(48, 48)), ref(image(48, 48)), what="npz logits at 48")


def test_timm_checkpoint_384_into_224(timm, tmp_path):
    """The issue's case: a 384 checkpoint into a 224 model (downsampling, where antialias matters most)."""
    tm = timm_model(timm, "vit_tiny_patch16_384", 1, seed=7)
    torch.save(tm.state_dict(), tmp_path / "vit384.pth")
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=True, depth=1,
                            pretrained_cfg_overlay=dict(file=str(tmp_path / "vit384.pth"), custom_load=False)).eval()
    got = fastvit.create_model("vit_tiny_patch16_224", pretrained=str(tmp_path / "vit384.pth"), depth=1).eval()
    x = image(224, 224)
    with torch.no_grad():
        assert_rel(got(x), ref(x), what="384 -> 224 logits")
        plain = fastvit.load_checkpoint(fastvit.create_model("vit_tiny_patch16_224", depth=1).eval(),
                                        tmp_path / "vit384.pth", antialias=False)
        assert (plain(x) - ref(x)).abs().max() > 1e-4, "antialias=False must give another embedding"
