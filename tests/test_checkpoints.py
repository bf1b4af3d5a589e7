"""Checkpoints of other ViT implementations: load, convert in memory, export.

Each layout is checked against the real library where it imports (transformers
here; timm and torchvision only where they import, e.g. the GPU machines) and
otherwise against a file written by an independent writer in this module, from
a known fastvit model: logits must agree. Bad files must raise a clear error
and leave every parameter exactly as it was.
"""

from __future__ import annotations

import importlib
import re
import warnings

import numpy as np
import pytest
import torch

import fastvit
from fastvit.checkpoints import load_checkpoint, to_hf_config, to_hf_state_dict, to_torchvision_state_dict

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

SMALL = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5)
HF_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                image_size=32, patch_size=8, num_labels=5)


def require(name: str):
    """Import an optional library or skip. timm and torchvision fail on these CPU machines
    with a RuntimeError (torchvision::nms), not an ImportError, so importorskip is not enough."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any import failure means "not available here"
        pytest.skip(f"{name} cannot be imported here ({type(e).__name__}: {str(e)[:80]})")


def perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random offsets on every parameter, so zero/one inits cannot hide a swapped weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    return module


# the issue-14 options (registers, LayerScale, ...) in ViTConfig: tests that build such models need them
HAS_OPTIONS = "reg_tokens" in {f.name for f in __import__("dataclasses").fields(fastvit.ViTConfig)}
needs_options = pytest.mark.skipif(not HAS_OPTIONS, reason="needs the issue-14 ViTConfig options")


def fastvit_model(**overrides) -> fastvit.VisionTransformer:
    return fastvit.VisionTransformer(fastvit.ViTConfig(**{**SMALL, **overrides})).eval()


def assert_logits_close(got, expected, rtol=1e-5):
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(after[k], before[k])]
    assert not changed, f"a failed load modified {changed}"


def hf_vit(cls=None, seed=0, **overrides):
    torch.manual_seed(seed)
    cls = cls or transformers.ViTForImageClassification
    config_cls = transformers.DeiTConfig if cls.__name__.startswith("DeiT") else transformers.ViTConfig
    return perturbed(cls(config_cls(**{**HF_SMALL, **overrides})), seed).eval()


@pytest.fixture
def image():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# -- independent writers: fastvit weights under other libraries' names ------------------------


def hf5_to_hf4(state_dict):
    """transformers 5.x names -> 4.x names, written out here independently of fastvit."""
    full = {"q": "query", "k": "key", "v": "value"}
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"layers\.(\d+)\.attention\.([qkv])_proj", lambda m: f"encoder.layer.{m[1]}.attention.attention.{full[m[2]]}", k)
        k = re.sub(r"layers\.(\d+)\.attention\.o_proj", r"encoder.layer.\1.attention.output.dense", k)
        k = re.sub(r"layers\.(\d+)\.mlp\.fc1", r"encoder.layer.\1.intermediate.dense", k)
        k = re.sub(r"layers\.(\d+)\.mlp\.fc2", r"encoder.layer.\1.output.dense", k)
        k = re.sub(r"layers\.(\d+)\.layernorm_", r"encoder.layer.\1.layernorm_", k)
        out[k] = v
    return out


def torchvision_names(model, legacy_mlp=False):
    """fastvit weights under torchvision VisionTransformer names (nn.MultiheadAttention packs q, k, v)."""
    sd = model.state_dict()
    fc1, fc2 = ("linear_1", "linear_2") if legacy_mlp else ("0", "3")
    out = {"class_token": sd["cls_token"], "encoder.pos_embedding": sd["pos_embed"]}
    for kind in ("weight", "bias"):
        out[f"conv_proj.{kind}"] = sd[f"patch_embed.proj.{kind}"]
        out[f"encoder.ln.{kind}"] = sd[f"norm.{kind}"]
        out[f"heads.head.{kind}"] = sd[f"head.{kind}"]
        for i in range(model.cfg.depth):
            p, b = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
            out[f"{p}ln_1.{kind}"] = sd[f"{b}norm1.{kind}"]
            out[f"{p}self_attention.in_proj_{kind}"] = sd[f"{b}attn.qkv.{kind}"]
            out[f"{p}self_attention.out_proj.{kind}"] = sd[f"{b}attn.proj.{kind}"]
            out[f"{p}ln_2.{kind}"] = sd[f"{b}norm2.{kind}"]
            out[f"{p}mlp.{fc1}.{kind}"] = sd[f"{b}mlp.fc1.{kind}"]
            out[f"{p}mlp.{fc2}.{kind}"] = sd[f"{b}mlp.fc2.{kind}"]
    return out


def write_flax_npz(model, path, style="original", scanned=False):
    """fastvit weights as a Google .npz: Dense kernels (in, out), patch kernel (p, p, C, D),
    q/k/v kernels (D, H, Dh), out kernel (H, Dh, D). ``style="big_vision"`` uses big_vision's
    module numbering, a ``params/`` prefix and a position embedding without the class token."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    d, h = model.cfg.embed_dim, model.cfg.num_heads
    mha, ln2, mlp = ("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3") if style == "original" else (
        "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
    w = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0), "embedding/bias": sd["patch_embed.proj.bias"],
         "cls": sd["cls_token"], "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"],
         "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"]}
    if style == "original":
        w["Transformer/posembed_input/pos_embedding"] = sd["pos_embed"]
    else:
        w["pos_embedding"] = sd["pos_embed"][:, 1:]
    blocks = []
    for i in range(model.cfg.depth):
        b = f"blocks.{i}."
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        block = {"LayerNorm_0/scale": sd[b + "norm1.weight"], "LayerNorm_0/bias": sd[b + "norm1.bias"],
                 f"{ln2}/scale": sd[b + "norm2.weight"], f"{ln2}/bias": sd[b + "norm2.bias"],
                 f"{mha}/out/kernel": sd[b + "attn.proj.weight"].T.reshape(h, d // h, d), f"{mha}/out/bias": sd[b + "attn.proj.bias"],
                 f"{mlp}/Dense_0/kernel": sd[b + "mlp.fc1.weight"].T, f"{mlp}/Dense_0/bias": sd[b + "mlp.fc1.bias"],
                 f"{mlp}/Dense_1/kernel": sd[b + "mlp.fc2.weight"].T, f"{mlp}/Dense_1/bias": sd[b + "mlp.fc2.bias"]}
        for j, name in enumerate(("query", "key", "value")):
            block[f"{mha}/{name}/kernel"] = qkv_w[j * d:(j + 1) * d].T.reshape(d, h, d // h)
            block[f"{mha}/{name}/bias"] = qkv_b[j * d:(j + 1) * d].reshape(h, d // h)
        blocks.append(block)
    if scanned:
        w.update({f"Transformer/encoderblock/{k}": np.stack([blk[k] for blk in blocks]) for k in blocks[0]})
    else:
        w.update({f"Transformer/encoderblock_{i}/{k}": v for i, blk in enumerate(blocks) for k, v in blk.items()})
    prefix = "params/" if style == "big_vision" else ""
    np.savez(path, **{prefix + k: np.ascontiguousarray(v) for k, v in w.items()})


# -- Hugging Face transformers ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "directory"])
def test_hf_checkpoint_round_trip(tmp_path, image, fmt):
    hf = hf_vit()
    if fmt == "safetensors":
        path = tmp_path / "model.safetensors"
        safetensors_torch.save_file(hf.state_dict(), path)
    elif fmt == "bin":
        path = tmp_path / "pytorch_model.bin"
        torch.save(hf.state_dict(), path)
    else:
        path = tmp_path / "hf_model"
        hf.save_pretrained(path)
    model = fastvit.create_model("vit_tiny_patch16_224", pretrained=path, **SMALL, norm_eps=hf.config.layer_norm_eps).eval()
    with torch.no_grad():
        assert_logits_close(model(image), hf(pixel_values=image).logits)


def test_hf_4x_names(tmp_path, image):
    hf = hf_vit()
    legacy = hf5_to_hf4(hf.state_dict())
    assert any("attention.attention.query" in k for k in legacy)
    torch.save({"state_dict": legacy}, tmp_path / "legacy.pth")  # nested, as training scripts save
    model = load_checkpoint(fastvit_model(norm_eps=1e-12), tmp_path / "legacy.pth")
    with torch.no_grad():
        assert_logits_close(model(image), hf(pixel_values=image).logits)
    # and the exporter writes the same 4.x names
    assert to_hf_state_dict(model, legacy=True).keys() == legacy.keys()


def test_hf_deit_distilled(tmp_path, image):
    hf = hf_vit(transformers.DeiTForImageClassificationWithTeacher)
    safetensors_torch.save_file(hf.state_dict(), tmp_path / "deit.safetensors")
    model = load_checkpoint(fastvit_model(distilled=True, norm_eps=1e-12), tmp_path / "deit.safetensors")
    with torch.no_grad():
        expected = hf(pixel_values=image).logits  # mean of the class and distillation heads
        assert_logits_close(model(image), expected)
        assert_logits_close(fastvit.from_hf(hf)(image), expected)


def test_pos_embed_resampled_like_hf_interpolate_pos_encoding(tmp_path):
    # HF 5.x interpolate_pos_encoding: F.interpolate(size=(new grid), mode="bicubic", align_corners=False), no antialias.
    hf = hf_vit(image_size=224, patch_size=16, num_hidden_layers=1)
    safetensors_torch.save_file(hf.state_dict(), tmp_path / "vit224.safetensors")
    x = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(2))
    model = fastvit_model(img_size=384, patch_size=16, depth=1, norm_eps=1e-12)
    load_checkpoint(model, tmp_path / "vit224.safetensors")
    assert model.pos_embed.shape == (1, 1 + 24 * 24, 32)
    with torch.no_grad():
        expected = hf(pixel_values=x, interpolate_pos_encoding=True).logits
        assert_logits_close(model(x), expected)
        # timm's loader resamples with antialias=True: a different (also valid) embedding
        timm_style = load_checkpoint(fastvit_model(img_size=384, patch_size=16, depth=1, norm_eps=1e-12),
                                     tmp_path / "vit224.safetensors", antialias=True)
        assert not torch.allclose(timm_style.pos_embed, model.pos_embed, atol=1e-4)


def test_from_hf_classifier(image):
    hf = hf_vit()
    model = fastvit.from_hf(hf, attn_impl="eager")
    assert model.cfg.num_classes == 5 and model.cfg.norm_eps == hf.config.layer_norm_eps and not model.training
    assert model.blocks[0].attn.attn_impl == "eager"
    with torch.no_grad():
        assert_logits_close(model(image), hf(pixel_values=image).logits)


def test_from_hf_base_model(image):
    hf = hf_vit(transformers.ViTModel)
    model = fastvit.from_hf(hf)
    assert model.cfg.num_classes == 0 and model.cfg.representation_size == 32
    with torch.no_grad():
        out = hf(pixel_values=image)
        assert_logits_close(model.forward_features(image), out.last_hidden_state)
        assert_logits_close(model(image), out.pooler_output)  # pooler = fastvit's pre_logits (Linear + tanh)


def test_from_hf_keeps_mode_dtype():
    hf = hf_vit().double().train()
    model = fastvit.from_hf(hf)
    assert model.training and model.pos_embed.dtype == torch.float64
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():  # dropout probabilities are 0: train mode computes the same
        torch.testing.assert_close(model(x), hf(pixel_values=x).logits)


def test_from_hf_rejects_other_activation():
    with pytest.raises(ValueError, match="hidden_act"):
        fastvit.from_hf(hf_vit(hidden_act="gelu_new"))


def test_to_hf_state_dict_loads_into_transformers(image):
    model = perturbed(fastvit_model(norm_eps=1e-12))
    kwargs = to_hf_config(model)
    hf = getattr(transformers, kwargs.pop("architectures")[0])(transformers.ViTConfig(**kwargs)).eval()
    hf.load_state_dict(to_hf_state_dict(model), strict=True)
    with torch.no_grad():
        assert_logits_close(hf(pixel_values=image).logits, model(image))


# -- torchvision ---------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy_mlp", [False, True], ids=["mlp.0", "mlp.linear_1"])
def test_torchvision_layout(tmp_path, image, legacy_mlp):
    source = perturbed(fastvit_model())
    torch.save(torchvision_names(source, legacy_mlp), tmp_path / "vit_b_16.pth")
    model = load_checkpoint(fastvit_model(), tmp_path / "vit_b_16.pth")
    with torch.no_grad():
        torch.testing.assert_close(model(image), source(image), rtol=0, atol=0)
    if not legacy_mlp:
        assert to_torchvision_state_dict(source).keys() == torchvision_names(source).keys()


def test_from_torchvision(tmp_path, image):
    require("torchvision")
    from torchvision.models.vision_transformer import VisionTransformer as TvViT

    for representation in (None, 16):
        torch.manual_seed(0)
        tv = perturbed(TvViT(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=128,
                             num_classes=5, representation_size=representation)).eval()
        with torch.no_grad():
            expected = tv(image)
            model = fastvit.from_torchvision(tv)
            assert model.cfg.representation_size == representation
            assert_logits_close(model(image), expected)
            torch.save(tv.state_dict(), tmp_path / "tv.pth")
            loaded = load_checkpoint(fastvit_model(representation_size=representation), tmp_path / "tv.pth")
            assert_logits_close(loaded(image), expected)
            back = TvViT(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=128,
                         num_classes=5, representation_size=representation).eval()
            back.load_state_dict(to_torchvision_state_dict(model), strict=True)
            assert_logits_close(back(image), expected)


# -- big_vision / Google .npz --------------------------------------------------------------------


@pytest.mark.parametrize("style,scanned", [("original", False), ("big_vision", False), ("big_vision", True)])
def test_big_vision_npz(tmp_path, image, style, scanned):
    source = perturbed(fastvit_model())
    if style == "big_vision":  # big_vision has no position for the class token: zeros are the same
        with torch.no_grad():
            source.pos_embed[:, 0] = 0
    write_flax_npz(source, tmp_path / "vit.npz", style, scanned)
    model = load_checkpoint(fastvit_model(), tmp_path / "vit.npz")
    with torch.no_grad():
        torch.testing.assert_close(model(image), source(image), rtol=0, atol=0)


def test_big_vision_npz_matches_timm_loader(tmp_path, image):
    require("timm")
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    source = perturbed(fastvit_model())
    write_flax_npz(source, tmp_path / "vit.npz")
    reference = TimmViT(**SMALL).eval()
    reference.load_pretrained(str(tmp_path / "vit.npz"))  # timm's own _load_weights
    model = load_checkpoint(fastvit_model(), tmp_path / "vit.npz")
    with torch.no_grad():
        assert_logits_close(model(image), reference(image))
        assert_logits_close(model(image), source(image))


# -- timm ----------------------------------------------------------------------------------------


def test_timm_layout_folds_layer_scale(tmp_path, image):
    source = perturbed(fastvit_model())
    sd = source.state_dict()
    g = torch.Generator().manual_seed(4)
    ckpt = dict(sd)  # timm DeiT III style: unscaled projections + LayerScale
    for i in range(2):
        for which, target in (("1", f"blocks.{i}.attn.proj"), ("2", f"blocks.{i}.mlp.fc2")):
            gamma = torch.rand(32, generator=g) + 0.5
            ckpt[f"blocks.{i}.ls{which}.gamma"] = gamma
            ckpt[f"{target}.weight"] = sd[f"{target}.weight"] / gamma[:, None]
            ckpt[f"{target}.bias"] = sd[f"{target}.bias"] / gamma
    safetensors_torch.save_file(ckpt, tmp_path / "deit3.safetensors")
    model = load_checkpoint(fastvit_model(), tmp_path / "deit3.safetensors")
    with torch.no_grad():
        assert_logits_close(model(image), source(image))


TIMM_VARIANTS = {
    "token": {},
    "avg_fc_norm": dict(global_pool="avg"),
    "avg_no_class_token": dict(global_pool="avg", class_token=False),
    "layer_scale_no_embed_class": pytest.param(dict(init_values=0.1, no_embed_class=True), marks=needs_options),
    "registers": pytest.param(dict(reg_tokens=2, no_embed_class=True, init_values=0.1), marks=needs_options),
    "qk_norm_map": pytest.param(dict(qk_norm=True, class_token=False, global_pool="map"), marks=needs_options),
    "clip_pre_norm_quick_gelu": pytest.param(dict(pre_norm=True, act_layer="quick_gelu"), marks=needs_options),
    "no_final_norm": pytest.param(dict(final_norm=False), marks=needs_options),
    "no_qkv_bias": dict(qkv_bias=False),
    "distilled": dict(distilled=True),
}


@pytest.mark.parametrize("kwargs", [v if isinstance(v, dict) else v for v in TIMM_VARIANTS.values()], ids=list(TIMM_VARIANTS))
def test_from_timm(tmp_path, image, kwargs):
    require("timm")
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    kwargs = dict(kwargs)
    cls = VisionTransformerDistilled if kwargs.pop("distilled", False) else TimmViT
    torch.manual_seed(0)
    tm = perturbed(cls(**SMALL, **kwargs)).eval()
    with torch.no_grad():
        expected = tm(image)
        model = fastvit.from_timm(tm)
        assert not model.training
        assert_logits_close(model(image), expected)
        torch.save(tm.state_dict(), tmp_path / "timm.pth")
        loaded = load_checkpoint(fastvit.VisionTransformer(model.cfg).eval(), tmp_path / "timm.pth")
        assert_logits_close(loaded(image), expected)
        back = cls(**SMALL, **kwargs).eval()
        back.load_state_dict(fastvit.to_timm_state_dict(model), strict=True)
        assert_logits_close(back(image), expected)


def test_from_timm_rejects_unsupported():
    require("timm")
    from torch import nn
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    # (bias-free projections and parallel-scaling blocks convert since issue 22: tests/test_presets_timm.py)
    with pytest.raises(ValueError, match="ReLU"):
        fastvit.from_timm(TimmViT(**SMALL, act_layer=nn.ReLU))
    with pytest.raises(ValueError, match="no position embedding"):
        fastvit.from_timm(TimmViT(**SMALL, pos_embed="none"))
    with pytest.raises(ValueError, match="one scale norm without the other"):
        fastvit.from_timm(TimmViT(**SMALL, scale_attn_norm=True))


# -- the classifier head -------------------------------------------------------------------------


def test_other_class_count_head_reinitialised(tmp_path, image):
    source = perturbed(fastvit_model(num_classes=10))
    torch.save(source.state_dict(), tmp_path / "in10.pth")
    model = fastvit_model(num_classes=5)
    old_head = model.head.weight.clone()
    with pytest.warns(UserWarning, match=r"classifier head \(10 classes.*re-initialised"):
        load_checkpoint(model, tmp_path / "in10.pth")
    ours, theirs = model.state_dict(), source.state_dict()
    for k in ours:
        if not k.startswith("head."):
            assert torch.equal(ours[k], theirs[k]), k
    assert torch.equal(model.head.bias, torch.zeros(5))
    assert not torch.equal(model.head.weight, old_head) and 0.01 < model.head.weight.std() < 0.03
    with torch.no_grad():  # the body computes what the source's does
        torch.testing.assert_close(model.forward_head(model.forward_features(image), pre_logits=True),
                                   source.forward_head(source.forward_features(image), pre_logits=True))


def test_headless_model_drops_head_and_pooler(tmp_path, image):
    hf = hf_vit(transformers.ViTModel)  # pooler (pre-logits) but no classifier
    torch.save(hf.state_dict(), tmp_path / "in21k.bin")
    model = fastvit_model(num_classes=0, norm_eps=1e-12)
    with pytest.warns(UserWarning, match="pre-logits"):
        load_checkpoint(model, tmp_path / "in21k.bin")
    with torch.no_grad():
        assert_logits_close(model(image), hf(pixel_values=image).last_hidden_state[:, 0])


# -- bad files: clear errors, parameters untouched -----------------------------------------------


def _truncated(path, sd, save):
    save(sd, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bad_file(case, tmp_path, good):
    """Write the bad checkpoint ``case``; return (path, expected exception, message pattern)."""
    if case == "missing_file":
        return tmp_path / "absent.safetensors", FileNotFoundError, "not found"
    if case == "truncated_pth":
        _truncated(tmp_path / "t.pth", good, torch.save)
        return tmp_path / "t.pth", ValueError, "truncated or corrupt"
    if case == "truncated_safetensors":
        _truncated(tmp_path / "t.safetensors", good, safetensors_torch.save_file)
        return tmp_path / "t.safetensors", ValueError, "truncated or corrupt"
    if case == "truncated_npz":
        write_flax_npz(fastvit_model(), tmp_path / "full.npz")
        data = (tmp_path / "full.npz").read_bytes()
        (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
        return tmp_path / "t.npz", ValueError, "truncated or corrupt"
    if case == "wrong_width":
        torch.save(fastvit_model(embed_dim=48).state_dict(), tmp_path / "w.pth")
        return tmp_path / "w.pth", ValueError, r"patch_embed\.proj\.weight: the model expects \(32, 3, 8, 8\), the checkpoint has \(48, 3, 8, 8\)"
    if case == "wrong_depth":
        torch.save(fastvit_model(depth=3).state_dict(), tmp_path / "d.pth")
        return tmp_path / "d.pth", KeyError, r"unexpected keys.*blocks\.2\.norm1\.weight"
    if case == "last_key_missing":
        torch.save({k: v for k, v in good.items() if k != "norm.bias"}, tmp_path / "m.pth")
        return tmp_path / "m.pth", KeyError, r"missing keys.*norm\.bias"
    if case == "last_block_wrong_shape":
        bad = dict(good, **{"blocks.1.mlp.fc2.weight": torch.zeros(32, 64)})
        torch.save(bad, tmp_path / "s.pth")
        return tmp_path / "s.pth", ValueError, r"blocks\.1\.mlp\.fc2\.weight: the model expects \(32, 128\), the checkpoint has \(32, 64\)"
    if case == "unknown_layout":
        torch.save({"encoder.weight": torch.zeros(3), "decoder.bias": torch.zeros(3)}, tmp_path / "u.pth")
        return tmp_path / "u.pth", ValueError, "unknown checkpoint layout"
    if case == "non_tensor_pickle":
        torch.save({"model": good, "config": ValueError("an arbitrary object")}, tmp_path / "p.pth")
        return tmp_path / "p.pth", ValueError, r"weights_only=True"
    if case == "whole_module_pickle":
        torch.save(fastvit_model(), tmp_path / "module.pth")
        return tmp_path / "module.pth", ValueError, r"weights_only=True"
    if case == "integer_tensor":
        torch.save(dict(good, **{"pos_embed": torch.zeros(1, 17, 32, dtype=torch.int64)}), tmp_path / "i.pth")
        return tmp_path / "i.pth", ValueError, "floating-point"
    if case == "unknown_suffix":
        torch.save(good, tmp_path / "weights.h5")
        return tmp_path / "weights.h5", ValueError, "unknown checkpoint suffix"
    raise AssertionError(case)


BAD_CASES = ["missing_file", "truncated_pth", "truncated_safetensors", "truncated_npz", "wrong_width", "wrong_depth",
             "last_key_missing", "last_block_wrong_shape", "unknown_layout", "non_tensor_pickle",
             "whole_module_pickle", "integer_tensor", "unknown_suffix"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_file_raises_and_changes_nothing(tmp_path, case):
    good = perturbed(fastvit_model(), seed=3).state_dict()
    path, exc, pattern = _bad_file(case, tmp_path, good)
    model = fastvit_model()
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no half-done load announces anything either
        with pytest.raises(exc, match=pattern) as info:
            load_checkpoint(model, path)
    if case not in ("wrong_width", "wrong_depth", "last_key_missing", "last_block_wrong_shape", "integer_tensor"):
        assert str(path) in str(info.value), "the message names the file"
    assert_unchanged(model, before)


def test_strict_false_loads_the_rest(tmp_path):
    source = perturbed(fastvit_model())
    torch.save({k: v for k, v in source.state_dict().items() if k != "norm.bias"}, tmp_path / "partial.pth")
    model = fastvit_model()
    old_bias = model.norm.bias.clone()
    with pytest.warns(UserWarning, match=r"strict=False, missing keys.*norm\.bias"):
        load_checkpoint(model, tmp_path / "partial.pth", strict=False)
    assert torch.equal(model.norm.bias, old_bias) and torch.equal(model.norm.weight, source.norm.weight)
