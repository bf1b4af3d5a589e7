import pytest
import torch

import fastvit
from fastvit.config import ViTConfig
from fastvit.presets import PRESETS


def test_vit_base_parameter_count_is_exact():
    model = fastvit.create_model("vit_base_patch16_224")
    assert sum(p.numel() for p in model.parameters()) == 86_567_656


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_closed_form_parameter_count(name):
    cfg = fastvit.get_config(name)
    with torch.device("meta"):  # no memory, no init cost
        model = fastvit.VisionTransformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()


@pytest.mark.parametrize(
    "overrides",
    [dict(num_classes=0), dict(global_pool="avg", class_token=False), dict(representation_size=128),
     dict(qkv_bias=False), dict(distilled=True, num_classes=10), dict(in_chans=1, img_size=(64, 96), patch_size=16)],
)
def test_closed_form_count_with_options(overrides):
    cfg = fastvit.get_config("vit_tiny_patch16_224", **overrides)
    with torch.device("meta"):
        model = fastvit.VisionTransformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()


def test_preset_sizes():
    expected = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16), "huge": (1280, 32, 16),
                "giant": (1536, 40, 24), "so400m": (1152, 27, 16), "xsmall": (256, 10, 4), "medium": (512, 12, 8),
                "betwixt": (640, 12, 10), "gigantic": (1664, 48, 16), "giantopt": (1536, 40, 16)}
    # timm's names that give a size word other widths: CLIP's giant (ViT-bigG is "gigantic") and base-plus
    special = {"vit_giant_patch14_clip_224": (1408, 40, 16), "vit_base_patch16_plus_clip_240": (896, 12, 14)}
    # the further timm architectures (fastvit.presets_sbb / _research / _hybrid) use size words for
    # other depths and layouts (18x2, mediumd, so150m2, ...): their sizes are pinned to timm's by
    # tests/test_presets_timm.py and the interop parameter counts
    from fastvit import presets_hybrid, presets_research, presets_sbb

    further = {*presets_sbb.PRESETS, *presets_research.PRESETS, *presets_hybrid.PRESETS}
    for name in fastvit.presets.list_models("vit_*"):  # the ViT presets (the eva family has its own sizes)
        if name in further:
            continue
        size = name.split("_")[1]
        cfg = fastvit.get_config(name)
        assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == special.get(name, expected[size]), name


def test_required_presets_exist():
    required = {
        "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_small_patch32_224", "vit_base_patch8_224",
        "vit_base_patch16_224", "vit_base_patch32_224", "vit_base_patch16_384", "vit_large_patch16_224",
        "vit_large_patch14_224", "vit_huge_patch14_224",
    }
    assert required <= set(fastvit.list_models())


@pytest.mark.parametrize("name,tokens", [("vit_base_patch16_224", 197), ("vit_large_patch14_224", 257), ("vit_base_patch16_384", 577)])
def test_token_counts(name, tokens):
    assert fastvit.get_config(name).num_tokens == tokens


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="vit_base_patch16_224"):
        fastvit.create_model("vit_base_patch16_244")


def test_unknown_override_is_named():
    with pytest.raises(TypeError, match="embed_dimm"):
        fastvit.get_config("vit_tiny_patch16_224", embed_dimm=3)


@pytest.mark.parametrize(
    "bad,match",
    [(dict(embed_dim=100, num_heads=3), "divisible by num_heads"), (dict(img_size=12), "smaller than one patch"),
     (dict(global_pool="mean"), "global_pool"), (dict(class_token=False), "class_token"), (dict(drop_path_rate=1.5), "drop_path_rate")],
)
def test_bad_config_values(bad, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**bad)


def test_switch_names_match_the_layers_tables():
    """config names the implementation switches without importing the layers (config sits below
    them); the names and the layers' tables must be the same sets."""
    from fastvit import config
    from fastvit.layers.attention import BACKENDS
    from fastvit.layers.impls import LINEAR_IMPLS, NORM_IMPLS

    assert set(config.ATTN_IMPLS) == set(BACKENDS)
    assert set(config.NORM_IMPLS) == set(NORM_IMPLS)
    assert set(config.LINEAR_IMPLS) == set(LINEAR_IMPLS)
