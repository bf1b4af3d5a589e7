"""Hugging Face DINOv2 (with and without registers), CLIP vision (with and without projection)
and SigLIP vision against fastvit, in both directions (issue 14).

Random tiny configs with every parameter perturbed (so zero / one inits cannot hide a swapped
weight); fp32 on the CPU; agreement within 1e-5 relative (max |a - b| / max |b|) for the tokens
after the final norm and the pooled output. Semantics compared:
DINOv2 / SigLIP ``last_hidden_state`` = fastvit ``forward_features``; CLIP's is before
``post_layernorm``, so fastvit's tokens are ``post_layernorm(last_hidden_state)``;
``pooler_output`` = ``forward_head(..., pre_logits=True)``; CLIP's ``image_embeds`` = ``forward``.
"""

import dataclasses
import json

import pytest
import torch

import fastvit
from fastvit.checkpoints import load_checkpoint, to_hf_config, to_hf_state_dict

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
if "reg_tokens" not in {f.name for f in dataclasses.fields(fastvit.ViTConfig)}:
    pytest.skip("needs the issue-14 ViTConfig options", allow_module_level=True)

TOL = 1e-5
TINY = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, image_size=28, patch_size=7)
# case -> (transformers model class, config class, config kwargs, a fastvit preset of the family)
CASES = {
    "dinov2": ("Dinov2Model", "Dinov2Config", dict(layerscale_value=0.5, layer_norm_eps=1e-5), "vit_small_patch14_dinov2"),
    "dinov2_swiglu": ("Dinov2Model", "Dinov2Config", dict(use_swiglu_ffn=True), "vit_giant_patch14_dinov2"),
    "dinov2_registers": ("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig", dict(num_register_tokens=3),
                         "vit_small_patch14_reg4_dinov2"),
    "clip": ("CLIPVisionModel", "CLIPVisionConfig", dict(intermediate_size=96), "vit_base_patch16_clip_quickgelu_224"),
    "clip_projection": ("CLIPVisionModelWithProjection", "CLIPVisionConfig",
                        dict(intermediate_size=80, projection_dim=16, hidden_act="gelu"), "vit_base_patch16_clip_224"),
    "siglip": ("SiglipVisionModel", "SiglipVisionConfig", dict(intermediate_size=88), "vit_base_patch16_siglip_224"),
    "siglip_no_head": ("SiglipVisionModel", "SiglipVisionConfig", dict(intermediate_size=64, vision_use_head=False),
                       "vit_base_patch16_siglip_224"),
}


def rel_err(got, ref):
    assert got.shape == ref.shape, (tuple(got.shape), tuple(ref.shape))
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def perturbed(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return module.eval()


def hf_model(case, seed=0, **overrides):
    cls, config_cls, kw, _ = CASES[case]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**{**TINY, **kw, **overrides})
    return perturbed(getattr(transformers, cls)(config), seed)


def image(size=28, seed=1):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def hf_outputs(hf, x):
    """(tokens after the final norm, pooled output or None) of a transformers model."""
    resize = {} if type(hf).__name__.startswith("Dinov2") else {"interpolate_pos_encoding": True}
    out = hf(pixel_values=x, **resize)
    tokens = out.last_hidden_state
    if type(hf).__name__.startswith("CLIP"):
        post = getattr(hf, "post_layernorm", None) or hf.vision_model.post_layernorm
        tokens = post(tokens)
    pooled = out.image_embeds if hasattr(out, "image_embeds") else out.pooler_output
    return tokens, pooled


def fastvit_outputs(model, x):
    tokens = model.forward_features(x)
    if model.cfg.global_pool == "":
        return tokens, None
    pooled = model(x) if model.cfg.num_classes else model.forward_head(tokens, pre_logits=True)
    return tokens, pooled


def assert_same_outputs(model, hf, x, what):
    with torch.no_grad():
        (t1, p1), (t2, p2) = fastvit_outputs(model, x), hf_outputs(hf, x)
    assert rel_err(t1, t2) <= TOL, f"{what}: tokens {rel_err(t1, t2):.3g}"
    assert (p1 is None) == (p2 is None), what
    if p2 is not None:
        assert rel_err(p1, p2) <= TOL, f"{what}: pooled {rel_err(p1, p2):.3g}"


@pytest.mark.parametrize("case", list(CASES))
def test_from_hf(case):
    hf = hf_model(case)
    model = fastvit.from_hf(hf)
    assert not model.training
    assert_same_outputs(model, hf, image(), case)


def test_options_read_from_the_hf_models():
    cfg = fastvit.from_hf(hf_model("dinov2_registers")).cfg
    assert (cfg.reg_tokens, cfg.no_embed_class, cfg.init_values is not None, cfg.class_token) == (3, True, True, True)
    cfg = fastvit.from_hf(hf_model("dinov2")).cfg
    assert (cfg.norm_eps, cfg.init_values, cfg.reg_tokens, cfg.act_layer) == (1e-5, 0.5, 0, "gelu")
    cfg = fastvit.from_hf(hf_model("dinov2_swiglu")).cfg
    assert (cfg.mlp_layer, cfg.act_layer) == ("swiglu", "silu")
    cfg = fastvit.from_hf(hf_model("clip")).cfg
    assert (cfg.pre_norm, cfg.act_layer, cfg.norm_eps, cfg.num_classes) == (True, "quick_gelu", 1e-5, 0)
    assert fastvit.from_hf(hf_model("clip_projection")).cfg.num_classes == 16
    cfg = fastvit.from_hf(hf_model("siglip")).cfg
    assert (cfg.class_token, cfg.global_pool, cfg.act_layer) == (False, "map", "gelu_tanh")


@pytest.mark.parametrize("case", list(CASES))
def test_save_pretrained_directory(tmp_path, case):
    hf = hf_model(case, seed=2)
    hf.save_pretrained(tmp_path)
    x = image(seed=3)
    # create_model reads config.json for the architecture (eps, activation, sizes, registers, ...)
    model = fastvit.create_model(CASES[case][3], pretrained=str(tmp_path)).eval()
    assert_same_outputs(model, hf, x, f"{case} create_model")
    # load_checkpoint into a model built with the right config
    target = fastvit.VisionTransformer(fastvit.from_hf(hf).cfg).eval()
    assert_same_outputs(load_checkpoint(target, tmp_path), hf, x, f"{case} load_checkpoint")


def _hf_from_export(model):
    """A transformers model built from to_hf_config / to_hf_state_dict alone (strict load)."""
    kw = to_hf_config(model)
    arch, model_type = kw.pop("architectures")[0], kw.pop("model_type")
    config_cls = {"dinov2": "Dinov2Config", "dinov2_with_registers": "Dinov2WithRegistersConfig",
                  "clip_vision_model": "CLIPVisionConfig", "siglip_vision_model": "SiglipVisionConfig"}[model_type]
    hf = getattr(transformers, arch)(getattr(transformers, config_cls)(**kw)).eval()
    hf.load_state_dict(to_hf_state_dict(model), strict=True)
    return hf


@pytest.mark.parametrize("case", list(CASES))
def test_export_round_trip(case):
    source = hf_model(case, seed=4)
    back = _hf_from_export(fastvit.from_hf(source))
    assert type(back) is type(source)
    with torch.no_grad():
        for a, b in zip(hf_outputs(back, image()), hf_outputs(source, image())):
            assert (a is None) == (b is None) and (a is None or rel_err(a, b) <= TOL), case


# fastvit models built from their own configs (not read from HF) -> HF
NATIVE = {
    "dinov2": dict(init_values=0.1),
    "dinov2_registers": dict(init_values=0.1, reg_tokens=2, no_embed_class=True),
    "dinov2_swiglu": dict(init_values=0.1, mlp_layer="swiglu", act_layer="silu", mlp_ratio=16 / 3),
    "clip": dict(pre_norm=True, act_layer="quick_gelu", norm_eps=1e-5, num_classes=0),
    "clip_projection": dict(pre_norm=True, norm_eps=1e-5, num_classes=12),
    "siglip": dict(class_token=False, global_pool="map", act_layer="gelu_tanh"),
}


@pytest.mark.parametrize("case", list(NATIVE))
def test_fastvit_to_hf(case):
    fields = {**dict(img_size=28, patch_size=7, embed_dim=48, depth=2, num_heads=3, num_classes=0), **NATIVE[case]}
    model = perturbed(fastvit.VisionTransformer(fastvit.ViTConfig(**fields)), seed=5)
    if model.cfg.num_classes:
        with torch.no_grad():
            model.head.bias.zero_()  # CLIP's projection has no bias
    assert_same_outputs(model, _hf_from_export(model), image(seed=6), case)


def test_config_json_disagreement_is_refused(tmp_path):
    hf = hf_model("dinov2_registers")
    hf.save_pretrained(tmp_path)
    cfg = fastvit.from_hf(hf).cfg
    plain = fastvit.VisionTransformer(cfg.replace(reg_tokens=0, no_embed_class=False))
    with pytest.raises(ValueError, match="reg_tokens"):
        load_checkpoint(plain, tmp_path)
    clip = hf_model("clip")  # quick_gelu in config.json
    clip.save_pretrained(tmp_path / "clip")
    wrong_act = fastvit.VisionTransformer(fastvit.from_hf(clip).cfg.replace(act_layer="gelu"))
    with pytest.raises(ValueError, match="act_layer"):
        load_checkpoint(wrong_act, tmp_path / "clip")


def test_config_json_eps_is_honoured(tmp_path):
    hf = hf_model("siglip", layer_norm_eps=1e-3)  # a value no weight shows
    hf.save_pretrained(tmp_path)
    target = fastvit.VisionTransformer(fastvit.from_hf(hf).cfg.replace(norm_eps=1e-6)).eval()
    load_checkpoint(target, tmp_path)
    assert target.cfg.norm_eps == 1e-3
    assert_same_outputs(target, hf, image(), "eps")


def test_unknown_activation_refused(tmp_path):
    hf = hf_model("clip")
    hf.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["hidden_act"] = "relu"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        fastvit.create_model("vit_base_patch16_clip_224", pretrained=str(tmp_path))


def test_export_refuses_what_hf_cannot_hold():
    with pytest.raises(ValueError, match="no Hugging Face"):
        to_hf_state_dict(fastvit.VisionTransformer(fastvit.ViTConfig(img_size=28, patch_size=7, embed_dim=48, depth=1,
                                                                     num_heads=3, qk_norm=True, init_values=0.1)))
    with pytest.raises(ValueError, match="family must be one of"):
        to_hf_config(fastvit.from_hf(hf_model("clip")), family="vitt")


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_whole_model_directory_gives_its_vision_tower(tmp_path, family):
    """A CLIPModel / SiglipModel directory: config.json nests vision_config, the text tower is left out."""
    vision = dict(TINY, intermediate_size=96)
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
    if family == "clip":
        config = transformers.CLIPConfig(vision_config=dict(vision, projection_dim=24), text_config=text, projection_dim=24)
        whole = perturbed(transformers.CLIPModel(config))
        tower = perturbed(transformers.CLIPVisionModelWithProjection(
            transformers.CLIPVisionConfig(**vision, projection_dim=24)))
        tower.vision_model.load_state_dict(whole.vision_model.state_dict())
        tower.visual_projection.load_state_dict(whole.visual_projection.state_dict())
        preset = "vit_base_patch16_clip_224"
    else:
        config = transformers.SiglipConfig(vision_config=vision, text_config=text)
        whole = perturbed(transformers.SiglipModel(config))
        tower = perturbed(transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision)))
        tower.load_state_dict(whole.vision_model.state_dict(), strict=True)
        preset = "vit_base_patch16_siglip_224"
    whole.save_pretrained(tmp_path)
    model = fastvit.create_model(preset, pretrained=str(tmp_path)).eval()
    assert_same_outputs(model, tower, image(), family)


def test_transformers_4_dinov2_names(tmp_path):
    """transformers 4.x DINOv2 files (attention.attention.query, attention.output.dense, SwiGLU weights_in /
    weights_out): the same model as 5.x names."""
    hf = hf_model("dinov2_swiglu", seed=7)
    legacy = {}
    for k, v in hf.state_dict().items():
        k = k.replace("attention.q_proj", "attention.attention.query").replace("attention.k_proj", "attention.attention.key")
        k = k.replace("attention.v_proj", "attention.attention.value").replace("attention.o_proj", "attention.output.dense")
        if "mlp.gate_proj" in k:
            continue
        if "mlp.up_proj" in k:
            gate = hf.state_dict()[k.replace("up_proj", "gate_proj")]
            k, v = k.replace("up_proj", "weights_in"), torch.cat([gate, v], dim=0)
        legacy[k.replace("mlp.down_proj", "mlp.weights_out")] = v
    target = fastvit.VisionTransformer(fastvit.from_hf(hf).cfg).eval()
    assert_same_outputs(load_checkpoint(target, legacy), hf, image(), "4.x names")


@pytest.mark.parametrize("case", ["dinov2", "dinov2_registers", "clip", "siglip"])
@pytest.mark.parametrize("size", [14, 42])  # down (antialias matters) and up from 28 px
def test_other_image_size_resamples_as_hf(tmp_path, case, size):
    """A save_pretrained directory at another image size: the position embedding is resampled as the
    HF class itself interpolates it (bicubic; with antialias for Dinov2WithRegistersModel)."""
    hf = hf_model(case, seed=8)
    hf.save_pretrained(tmp_path)
    model = fastvit.create_model(CASES[case][3], pretrained=str(tmp_path), img_size=size).eval()
    patches = (size // 7) ** 2
    assert model.pos_embed.shape[1] == patches + (0 if case in ("siglip", "dinov2_registers") else 1)
    assert_same_outputs(model, hf, image(size, seed=9), f"{case} at {size} px")
