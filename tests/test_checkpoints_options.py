"""A checkpoint whose keys reveal an architecture option configures or refuses: it never loads
into a model that would compute something else (issue 14).

Each option's model is saved and loaded into a model without it (and back): the load must fail
with an error naming the option, before any parameter is written. The exact adaptations
(LayerScale folded into a model without it, patch-only positions padded for the prefix tokens)
must give the source's outputs.
"""

import dataclasses
import warnings

import pytest
import torch

import fastvit
from fastvit.checkpoints import load_checkpoint
from layouts import open_clip_state_dict

if "reg_tokens" not in {f.name for f in dataclasses.fields(fastvit.ViTConfig)}:
    pytest.skip("needs the issue-14 ViTConfig options", allow_module_level=True)

SMALL = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5)


def model(**kw):
    return fastvit.VisionTransformer(fastvit.ViTConfig(**{**SMALL, **kw})).eval()


def perturbed(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return m


def image():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def snapshot(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def assert_unchanged(m, before):
    after = m.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "a failed load wrote parameters"


# option -> (config fields, a word the error must contain)
OPTIONS = {
    "registers": (dict(reg_tokens=2), "reg_tokens"),
    "qk_norm": (dict(qk_norm=True), "qk_norm"),
    "pre_norm": (dict(pre_norm=True), "pre_norm"),
    "no_patch_bias": (dict(patch_bias=False), "patch_bias"),
    "map": (dict(global_pool="map"), "global_pool"),
    "map_no_class_token": (dict(global_pool="map", class_token=False), "global_pool"),
    "no_final_norm": (dict(final_norm=False), "final_norm"),
    "fc_norm": (dict(fc_norm=True), "fc_norm"),
    "swiglu": (dict(mlp_layer="swiglu", act_layer="silu"), "mlp_layer"),
}


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("direction", ["option_into_plain", "plain_into_option"])
def test_revealed_option_refused(tmp_path, option, direction):
    fields, needle = OPTIONS[option]
    src, dst = (model(**fields), model()) if direction == "option_into_plain" else (model(), model(**fields))
    torch.save(perturbed(src).state_dict(), tmp_path / "ckpt.pth")
    before = snapshot(dst)
    with pytest.raises(ValueError, match=needle) as info:
        load_checkpoint(dst, tmp_path / "ckpt.pth")
    assert "ckpt.pth" in str(info.value)
    assert_unchanged(dst, before)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_same_options_load_exactly(tmp_path, option):
    fields, _ = OPTIONS[option]
    src = perturbed(model(**fields))
    torch.save(src.state_dict(), tmp_path / "ckpt.pth")
    dst = load_checkpoint(model(**fields), tmp_path / "ckpt.pth")
    with torch.no_grad():
        torch.testing.assert_close(dst(image()), src(image()), rtol=0, atol=0)


def test_strict_false_warns_about_the_option(tmp_path):
    torch.save(perturbed(model(qk_norm=True)).state_dict(), tmp_path / "ckpt.pth")
    with pytest.warns(UserWarning, match="qk_norm"):
        load_checkpoint(model(), tmp_path / "ckpt.pth", strict=False)


def test_layer_scale_into_a_model_without_it_is_folded(tmp_path):
    src = perturbed(model(init_values=0.1))
    torch.save(src.state_dict(), tmp_path / "ckpt.pth")
    dst = model()
    with pytest.warns(UserWarning, match="folded its LayerScale"):
        load_checkpoint(dst, tmp_path / "ckpt.pth")
    with torch.no_grad():
        torch.testing.assert_close(dst(image()), src(image()), rtol=1e-5, atol=1e-6)
    # the reverse has no gamma to load: refused, naming the option
    torch.save(perturbed(model()).state_dict(), tmp_path / "plain.pth")
    target = model(init_values=0.1)
    before = snapshot(target)
    with pytest.raises(ValueError, match="init_values"):
        load_checkpoint(target, tmp_path / "plain.pth")
    assert_unchanged(target, before)


def test_layer_scale_kept_as_parameters(tmp_path):
    src = perturbed(model(init_values=0.1))
    torch.save(src.state_dict(), tmp_path / "ckpt.pth")
    dst = load_checkpoint(model(init_values=1.0), tmp_path / "ckpt.pth")
    assert torch.equal(dst.blocks[1].ls2.gamma, src.blocks[1].ls2.gamma)


@pytest.mark.parametrize("reg", [0, 3])
def test_no_embed_class_positions(tmp_path, reg):
    # patch-only positions into a model with prefix positions: zeros there, the same sum
    src = perturbed(model(no_embed_class=True, reg_tokens=reg))
    assert src.pos_embed.shape[1] == 16
    torch.save(src.state_dict(), tmp_path / "patch_only.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dst = load_checkpoint(model(reg_tokens=reg), tmp_path / "patch_only.pth")
    assert dst.pos_embed.shape[1] == 16 + 1 + reg
    with torch.no_grad():
        torch.testing.assert_close(dst(image()), src(image()), rtol=1e-5, atol=1e-6)
    # positions for the prefix tokens cannot go where the model has none
    torch.save(perturbed(model(reg_tokens=reg)).state_dict(), tmp_path / "prefix.pth")
    target = model(no_embed_class=True, reg_tokens=reg)
    before = snapshot(target)
    with pytest.raises(ValueError, match="no_embed_class"):
        load_checkpoint(target, tmp_path / "prefix.pth")
    assert_unchanged(target, before)


def test_no_embed_class_resamples_the_patch_grid(tmp_path):
    src = perturbed(model(no_embed_class=True, reg_tokens=2))
    torch.save(src.state_dict(), tmp_path / "ckpt.pth")
    dst = load_checkpoint(model(no_embed_class=True, reg_tokens=2, img_size=48), tmp_path / "ckpt.pth")
    assert dst.pos_embed.shape == (1, 36, 32)
    expected = fastvit.resample_pos_embed(src.pos_embed.detach(), (6, 6), (4, 4), 0)
    torch.testing.assert_close(dst.pos_embed.detach(), expected)


def test_to_timm_state_dict_keeps_the_option_keys():
    m = model(reg_tokens=2, init_values=0.1, qk_norm=True, pre_norm=True, global_pool="map")
    sd = fastvit.to_timm_state_dict(m)
    for key in ("reg_token", "blocks.0.ls1.gamma", "blocks.1.attn.q_norm.weight", "norm_pre.weight", "attn_pool.latent",
                "attn_pool.kv.weight"):
        assert key in sd, key
    assert "patch_embed.proj.bias" not in sd


# -- layouts written here from a known model: OpenCLIP / OpenAI CLIP, the original DINOv2 release ------


def test_open_clip_layout(tmp_path):
    fields = dict(pre_norm=True, act_layer="quick_gelu", norm_eps=1e-5, num_classes=12)
    src = perturbed(model(**fields))
    with torch.no_grad():
        src.head.bias.zero_()  # OpenCLIP's projection has no bias
    torch.save(open_clip_state_dict(src.state_dict(), 2, text_tower=True), tmp_path / "open_clip.pt")
    dst = load_checkpoint(model(**fields), tmp_path / "open_clip.pt")
    with torch.no_grad():
        torch.testing.assert_close(dst(image()), src(image()), rtol=0, atol=0)
    with pytest.raises(ValueError, match="pre_norm"):
        load_checkpoint(model(num_classes=12), tmp_path / "open_clip.pt")


def test_original_dinov2_layout(tmp_path):
    fields = dict(reg_tokens=2, no_embed_class=True, init_values=0.1, mlp_layer="swiglu", act_layer="silu", num_classes=0)
    src = perturbed(model(**fields))
    sd = src.state_dict()
    cls_pos = torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(3))
    ckpt = {("register_tokens" if k == "reg_token" else k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3")): v
            for k, v in sd.items()}
    ckpt["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)  # the release keeps a class-token position
    ckpt["cls_token"] = sd["cls_token"] - cls_pos
    ckpt["mask_token"] = torch.zeros(1, 32)
    torch.save(ckpt, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    dst = load_checkpoint(model(**fields), tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    with torch.no_grad():
        torch.testing.assert_close(dst.forward_features(image()), src.forward_features(image()), rtol=1e-5, atol=1e-6)
