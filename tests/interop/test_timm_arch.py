"""Every architecture of timm 1.0.29's vision_transformer, vision_transformer_hybrid and deit
modules against real timm: a preset under its name, the same parameters (count and names, built
on the meta device), timm's default-tag pretrained_cfg, and conversion both ways within 1e-5.

Outputs are compared for one name per distinct option combination, with the transformer cut to
one or two blocks (``depth=`` on both sides), so the whole file runs in well under a minute.
"""

import pytest
import torch

import fastvit

MODULES = ("vision_transformer", "vision_transformer_hybrid", "deit")
# one name per distinct option combination (block layout, attention, norm, stem, pooling, MLP)
CONVERTED = [
    "vit_base_patch16_rpn_224", "vit_small_patch16_18x2_224", "vit_base_patch16_xp_224", "vit_dwee_patch16_reg1_gap_256",
    "vit_pwee_patch16_reg1_gap_256", "vit_dpwee_patch16_reg1_gap_256", "test_vit4", "vit_tiny_r_s16_p8_224",
    "vit_small_resnet50d_s16_224", "vit_small_resnet26d_224", "vit_base_mci_224", "flexivit_small",
    "vit_so150m_patch16_reg4_map_256", "vit_so150m2_patch16_reg1_gap_256", "vit_giant_patch14_reg1_tipsv2",
    "vit_intern300m_patch14_448", "vit_base_patch16_224_miil", "vit_medium_patch16_gap_240", "eva_large_patch14_196",
    "deit_base_distilled_patch16_384",
]
CFG_FIELDS = ("tag", "input_size", "crop_pct", "crop_mode", "mean", "std", "license", "num_classes", "interpolation",
              "first_conv", "classifier", "fixed_input_size")


def timm_names(timm):
    return sorted({n for m in MODULES for n in timm.list_models(module=m)})


def rel_err(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_every_timm_name_is_a_preset(timm):
    names = timm_names(timm)
    assert len(names) == 187  # timm 1.0.29: 157 + 14 + 16
    assert sorted(set(names) - set(fastvit.list_models())) == []


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameters_equal_timms_for_every_name(timm):
    """Names of every parameter and buffer equal, both models built with two blocks on the meta
    device; timm's full count (one block's count times the depth, from its 1- and 2-block
    builds: the blocks are alike) equals fastvit's closed form at the preset's depth."""
    wrong = []
    for name in timm_names(timm):
        cfg = fastvit.get_config(name)
        with torch.device("meta"):
            one, two, ours = timm.create_model(name, depth=1), timm.create_model(name, depth=2), fastvit.create_model(name, depth=2)
        full = _count(one) + (cfg.depth - 1) * (_count(two) - _count(one))
        if full != cfg.num_params() or _count(two) != _count(ours) or set(two.state_dict()) != set(ours.state_dict()):
            wrong.append((name, full, cfg.num_params(), sorted(set(two.state_dict()) ^ set(ours.state_dict()))[:4]))
    assert not wrong


@pytest.mark.parametrize("name", ["vit_base_patch16_rpn_224", "vit_small_patch16_18x2_224", "vit_dpwee_patch16_reg1_gap_256",
                                  "vit_small_resnet26d_224", "vit_base_mci_224", "vit_tiny_r_s16_p8_224"])
def test_full_depth_count(timm, name):
    """The closed form against timm's full-depth model, for one name of each new part."""
    with torch.device("meta"):
        assert _count(timm.create_model(name)) == fastvit.get_config(name).num_params()


def test_pretrained_cfg_equals_timms(timm):
    from fastvit import presets_hybrid, presets_research, presets_sbb

    wrong = []
    for name in sorted({*presets_sbb.PRESETS, *presets_research.PRESETS, *presets_hybrid.PRESETS}):
        ref = timm.models.get_pretrained_cfg(name).to_dict()
        ours = fastvit.presets.pretrained_cfg_for(name, fastvit.get_config(name))
        diff = {k: (ours.get(k), ref.get(k)) for k in CFG_FIELDS if ours.get(k) != ref.get(k)}
        if diff:
            wrong.append((name, diff))
    assert not wrong


def _timm_model(timm, name, **kw):
    torch.manual_seed(0)
    ref = timm.create_model(name, **kw).eval()
    with torch.no_grad():  # perturb so every weight (LayerScale, lambdas, zero biases) matters
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for key, b in ref.named_buffers():  # BatchNorm statistics of the ResNet-D / MCI stems
            if key.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif key.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return ref


@pytest.mark.parametrize("name", CONVERTED)
def test_conversion_matches_timm(timm, name):
    """from_timm on timm's model, the timm-format state dict into the preset, and fastvit's
    weights back into timm's model: the same logits within 1e-5 each way."""
    cfg = fastvit.get_config(name)
    small = dict(depth=1 if cfg.embed_dim > 700 else 2)
    if cfg.img_size[0] > 256:  # fewer tokens: the same weights at 224 pixels
        small["img_size"] = 224
    ref = _timm_model(timm, name, **small)
    impl = dict(attn_impl="sdpa", norm_impl="torch", linear_impl="torch")
    converted = fastvit.from_timm(ref, **impl)
    preset = fastvit.create_model(name, **small, **impl).eval()
    fastvit.load_checkpoint(preset, ref.state_dict())
    x = torch.randn(2, 3, *preset.cfg.img_size)
    with torch.no_grad():
        want = ref(x)
        assert want.std() > 0
        assert rel_err(converted(x), want) < 1e-5
        assert rel_err(preset(x), want) < 1e-5
        back = timm.create_model(name, **small).eval()
        back.load_state_dict(fastvit.to_timm_state_dict(preset), strict=True)
        assert rel_err(back(x), want) < 1e-5
    for field in ("block_type", "attn_layer", "norm_layer", "hybrid_stem", "hybrid_layers", "num_parallel"):
        assert getattr(converted.cfg, field) == getattr(preset.cfg, field), field


def test_what_fastvit_cannot_compute_is_refused_naming_the_part(timm):
    """A timm model outside what fastvit computes is refused, not converted to something else."""
    from timm.models.vision_transformer import VisionTransformer

    half = VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=1, num_heads=2, scale_attn_norm=True)
    with pytest.raises(ValueError, match="one scale norm without the other"):
        fastvit.from_timm(half)
