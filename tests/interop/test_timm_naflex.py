"""fastvit's NaFlexVit against real timm 1.0.29, for every name of timm's ``naflexvit`` module.

Each of the 8 names (each is its own option combination) shallow and narrow (2 blocks, width 64
or 52 with 4 heads, a 4x4 position grid so that the batch's grids are resampled up and down):
logits, forward_features and forward_intermediates within 1e-5 relative (fp32) on an image batch
and on a padded dict batch from timm's own ``Patchify`` + ``NaFlexCollator`` (valid entries);
``from_timm`` and strict state-dict round trips both ways. Every name at full size on the meta
device: timm's keys, shapes and parameter count. SigLIP 2's resize rule against transformers'."""

import pytest
import torch

import fastvit
from fastvit.checkpoints.timm_naflex import from_timm_naflex, load_timm_naflex, to_timm_naflex_state_dict
from fastvit.naflex import NAFLEX_PRESETS, create_naflex, pack, size_for_max_patches
from interop_helpers import assert_rel, perturb

NAMES = sorted(NAFLEX_PRESETS)
SIZES = [(32, 48), (96, 16), (16, 16), (80, 80)]  # grids 2x3, 6x1, 1x1, 5x5 around a 4x4 table


def _small(name: str) -> dict:
    width = 52 if "so150m2" in name else 64  # so150m2's 13 heads of 64 -> 4 heads of 13
    return dict(depth=2, embed_dim=width, num_heads=4, pos_embed_grid_size=(4, 4), num_classes=7)


@pytest.fixture(scope="module", params=NAMES)
def pair(request, timm):
    name = request.param
    t = perturb(timm.create_model(name, **_small(name)), seed=NAMES.index(name)).eval()
    m = from_timm_naflex(t, norm_impl="torch", linear_impl="torch").eval()
    return name, t, m


def _images():
    g = torch.Generator().manual_seed(5)
    return [torch.randn(3, h, w, generator=g) for h, w in SIZES]


def _timm_dict(timm_mod, images):
    from timm.data.naflex_dataset import NaFlexCollator
    from timm.data.naflex_transforms import Patchify

    patchify = Patchify(16)
    batch, _ = NaFlexCollator()([(patchify(img), 0) for img in images])
    return batch


def test_strict_round_trips(pair):
    name, t, m = pair
    assert type(m).__name__ == "NaFlexVit" and fastvit.from_timm(t, norm_impl="torch", linear_impl="torch").cfg == m.cfg
    own = create_naflex(name, **_small(name))
    load_timm_naflex(own, t.state_dict())
    for a, b in zip(own.state_dict().values(), t.state_dict().values()):
        assert torch.equal(a, b)
    sd = to_timm_naflex_state_dict(m)
    assert t.load_state_dict(sd, strict=True) is not None
    with pytest.raises(KeyError, match="missing"):
        load_timm_naflex(own, {k: v for k, v in sd.items() if not k.startswith("head.")})


def test_image_batch_matches_timm(pair):
    name, t, m = pair
    x = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(3))  # a 3x5 grid, resampled
    with torch.no_grad():
        assert_rel(m(x), t(x), what=f"{name} logits")
        assert_rel(m.forward_features(x), t.forward_features(x), what=f"{name} features")
        for kw in (dict(indices=[0, 1], return_prefix_tokens=t.num_prefix_tokens > 0), dict(indices=1, norm=True,
                   output_fmt="NLC")):
            got, want = m.forward_intermediates(x, **kw), t.forward_intermediates(x, **kw)
            assert_rel(got[0], want[0], what=f"{name} intermediates final {kw}")
            for a, b in zip(got[1], want[1]):
                assert_rel(list(a) if isinstance(a, tuple) else a, list(b) if isinstance(b, tuple) else b,
                           what=f"{name} intermediates {kw}")


def test_timm_dict_batch_matches_timm(pair, timm):
    name, t, m = pair
    images = _images()
    batch = _timm_dict(timm, images)
    valid = batch["patch_valid"]
    npre = t.num_prefix_tokens
    with torch.no_grad():
        assert_rel(m(batch), t(batch), what=f"{name} dict logits")
        got = m.forward_features(batch)
        want = t.forward_features(batch["patches"], patch_coord=batch["patch_coord"], patch_valid=valid)
        rows = torch.cat([torch.ones(valid.shape[0], npre, dtype=torch.bool), valid], 1)
        assert_rel(got["patches"][rows], want["patches"][rows], what=f"{name} dict features (valid rows)")
        assert_rel(m.forward_head(got), t.forward_head(want["patches"], patch_valid=valid), what=f"{name} dict head")
        gi = m.forward_intermediates(batch, indices=2, output_fmt="NLC", return_prefix_tokens=npre > 0)
        ti = t.forward_intermediates(batch, indices=2, output_fmt="NLC", return_prefix_tokens=npre > 0)
        assert_rel(gi[0][rows], ti[0][rows], what=f"{name} dict intermediates final")
        for a, b in zip(gi[1], ti[1]):
            a, b = (a, None) if not isinstance(a, tuple) else a, (b, None) if not isinstance(b, tuple) else b
            assert_rel(a[0][valid], b[0][valid], what=f"{name} dict intermediates")
            if npre:
                assert_rel(a[1], b[1], what=f"{name} dict intermediate prefixes")
        # the packed batch of the same images gives timm's dict logits too
        assert_rel(m(pack(images)), t(batch), what=f"{name} packed vs timm dict")


@pytest.mark.parametrize("name", NAMES)
def test_full_size_parameters(name, timm):
    with torch.device("meta"):
        t = timm.create_model(name)
        m = fastvit.create_model(name)
    shapes = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == shapes
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in t.parameters())
    assert m.num_classes == t.num_classes and m.pretrained_cfg["architecture"] == name


def test_siglip2_resize_rule(transformers):
    from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches

    for (h, w), budget in [((512, 128), 256), ((30, 1000), 64), ((17, 17), 1), ((1000, 999), 1024), ((224, 224), 196),
                           ((37, 501), 100)]:
        assert size_for_max_patches(h, w, 16, budget) == tuple(get_image_size_for_max_num_patches(h, w, 16, budget)), (h, w)
