"""timm's create_model contract on fastvit: name.tag, pretrained_cfg, timm-format folders
(``save_pretrained`` / ``local-dir:``), the Hub through an offline cache built here, head and
input-channel adaptation, ``features_only``.

Hub tests build a cache in a temporary folder in huggingface_hub's layout (tests/hub_layout.py)
with fastvit's own writer and run offline; they skip where huggingface_hub is not installed (the
interop run has it, and checks the same against timm itself in tests/interop/test_timm_contract.py).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import fastvit
from fastvit.checkpoints.pretrained_cfgs import UnknownModelError
from hub_layout import add_repo, use_cache

SMALL = dict(depth=1, embed_dim=32, num_heads=2)


def _hub():
    return pytest.importorskip("huggingface_hub")


def _same_weights(a, b, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    assert {k for k in sa if not k.startswith(skip)} == {k for k in sb if not k.startswith(skip)}
    for k in sa:
        if not k.startswith(skip):
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


# -- names, tags, pretrained_cfg --------------------------------------------------------------------

def test_list_pretrained_patterns():
    every = fastvit.list_pretrained()
    assert every and all(n.split(".")[0] in fastvit.list_models() for n in every)  # both families
    tags = fastvit.list_pretrained("vit_base_patch16_224")  # no tag part: all that name's tags
    assert tags and all(n.startswith("vit_base_patch16_224.") for n in tags)
    assert "vit_base_patch16_224.augreg2_in21k_ft_in1k" in tags
    assert fastvit.list_pretrained("vit_base_patch16_224.augreg*") == [t for t in tags if ".augreg" in t]
    no_clip = fastvit.list_pretrained("vit_base*", exclude_filters="*clip*")
    assert no_clip and not any("clip" in n for n in no_clip)
    assert set(fastvit.list_pretrained(["deit3*", "deit_*"])) == set(fastvit.list_pretrained("deit*"))
    # natural order: patch8 before patch16 before patch32
    order = [n.split(".")[0] for n in fastvit.list_pretrained("vit_base_patch*_224")]
    assert order.index("vit_base_patch8_224") < order.index("vit_base_patch16_224") < order.index("vit_base_patch32_224")
    with pytest.raises(TypeError):
        fastvit.list_pretrained(3)


def test_tag_sets_pretrained_cfg_and_head():
    default = fastvit.create_model("vit_base_patch16_224", **SMALL)
    assert default.pretrained_cfg["tag"] == "augreg2_in21k_ft_in1k"  # timm's default (first) tag
    in21k = fastvit.create_model("vit_base_patch16_224.augreg_in21k", **SMALL)
    assert in21k.pretrained_cfg["tag"] == "augreg_in21k" and in21k.pretrained_cfg["hf_hub_id"] == "timm/vit_base_patch16_224.augreg_in21k"
    assert in21k.num_classes == in21k.pretrained_cfg["num_classes"] == 21843  # the tag's head, as timm builds it
    assert fastvit.create_model("vit_base_patch16_224.augreg_in21k", num_classes=7, **SMALL).num_classes == 7
    # pretrained_cfg as a tag, an overlay changing the input size (a fixed-size model takes it)
    m = fastvit.create_model("vit_tiny_patch16_224", pretrained_cfg="augreg_in21k", **SMALL)
    assert m.pretrained_cfg["tag"] == "augreg_in21k"
    m = fastvit.create_model("vit_tiny_patch16_224", pretrained_cfg_overlay=dict(input_size=(3, 64, 64)), **SMALL)
    assert m.cfg.img_size == (64, 64) and m.pretrained_cfg["input_size"] == (3, 64, 64)
    m = fastvit.create_model("vit_tiny_patch16_224", pretrained_cfg=dict(input_size=(1, 32, 32), num_classes=3), **SMALL)
    assert (m.cfg.in_chans, m.cfg.img_size, m.num_classes) == (1, (224, 224), 3)  # timm's default: not a fixed size
    m = fastvit.create_model("vit_tiny_patch16_224", pretrained_cfg=dict(input_size=(1, 32, 32), fixed_input_size=True), **SMALL)
    assert (m.cfg.in_chans, m.cfg.img_size, m.num_classes) == (1, (32, 32), 1000)
    assert m.pretrained_cfg["architecture"] == "vit_tiny_patch16_224"


def test_bad_names_and_tags_are_refused():
    with pytest.raises(ValueError, match="augreg2_in21k_ft_in1k"):  # the error lists the tags there are
        fastvit.create_model("vit_base_patch16_224.no_such_tag")
    with pytest.raises(RuntimeError):  # timm's exception type too
        fastvit.create_model("vit_base_patch16_224.no_such_tag")
    with pytest.raises(UnknownModelError, match="Apple's FastViT"):
        fastvit.create_model("fastvit_t8")
    with pytest.raises(ValueError, match="unknown model"):
        fastvit.create_model("resnet50")
    with pytest.raises(TypeError):
        fastvit.create_model("vit_tiny_patch16_224", pretrained=3)
    with pytest.raises(ValueError, match="features_only"):
        fastvit.create_model("vit_tiny_patch16_224", out_indices=2, **SMALL)


def test_timm_keywords():
    m = fastvit.create_model("vit_tiny_patch16_224", drop_rate=None, img_size=None, pos_drop_rate=0.1,
                             proj_drop_rate=0.2, patch_drop_rate=0.0, **SMALL)
    assert m.cfg.drop_rate == 0.2 and m.cfg.img_size == (224, 224)  # None: not given (as timm)
    assert fastvit.create_model("vit_tiny_patch16_224", pos_embed="learn", proj_bias=True, **SMALL).cfg.depth == 1
    with pytest.raises(ValueError, match="proj_bias"):
        fastvit.create_model("vit_tiny_patch16_224", proj_bias=False, **SMALL)
    with pytest.raises(ValueError, match="patch_drop_rate"):
        fastvit.create_model("vit_tiny_patch16_224", patch_drop_rate=0.1, **SMALL)
    assert fastvit.create_model("vit_tiny_patch16_224", pretrained=None, **SMALL).num_classes == 1000


def test_no_weights_for_an_untrained_tag():
    with pytest.raises(ValueError, match="no pretrained weights"):
        fastvit.create_model("vit_large_patch14_224", pretrained=True, **SMALL)


# -- timm-format folders (no huggingface_hub needed) -------------------------------------------------

def _saved(tmp_path, name="vit_tiny_patch16_224", **kw):
    model = fastvit.create_model(name, **{**SMALL, **kw}).eval()
    folder = fastvit.save_pretrained(model, tmp_path / "saved")
    return model, folder


def test_save_pretrained_writes_timms_format(tmp_path):
    model, folder = _saved(tmp_path, img_size=64, num_classes=5, global_pool="avg")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_classes"] == 5
    assert config["num_features"] == 32 and config["global_pool"] == "avg"
    assert config["model_args"] == dict(img_size=[64, 64], global_pool="avg", embed_dim=32, depth=1, num_heads=2)
    assert "hf_hub_id" not in config["pretrained_cfg"] and "architecture" not in config["pretrained_cfg"]
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    assert saved.keys() == model.state_dict().keys()
    fastvit.save_pretrained(model, tmp_path / "both", safe_serialization="both")
    assert (tmp_path / "both" / "pytorch_model.bin").is_file() and (tmp_path / "both" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="safe_serialization"):
        fastvit.save_pretrained(model, tmp_path / "x", safe_serialization="yes")
    bare = fastvit.VisionTransformer(fastvit.get_config("vit_tiny_patch16_224", **SMALL))
    with pytest.raises(ValueError, match="architecture"):
        fastvit.save_pretrained(bare, tmp_path / "bare")
    assert not (tmp_path / "bare").exists()  # refused before anything is written


@pytest.mark.parametrize("how", ["local-dir", "pretrained-folder"])
def test_folder_round_trip(tmp_path, how):
    model, folder = _saved(tmp_path, img_size=64, num_classes=5, init_values=1e-5)
    if how == "local-dir":
        loaded = fastvit.create_model(f"local-dir:{folder}", pretrained=True).eval()
    else:
        loaded = fastvit.create_model("vit_tiny_patch16_224", pretrained=str(folder)).eval()
    assert loaded.cfg == model.cfg  # the model_args rebuilt it: size, depth, head, LayerScale
    _same_weights(model, loaded)
    assert loaded.pretrained_cfg["source"] == "local-dir" and loaded.pretrained_cfg["file"] == str(folder)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_training_run_folder(tmp_path):
    """A run folder as `fastvit train` writes it: config.json (architecture, num_classes,
    pretrained_cfg, model_args with fastvit's fields) + model.safetensors."""
    from safetensors.torch import save_file

    model = fastvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=48,
                                 num_heads=3, num_classes=10).eval()
    run = tmp_path / "run"
    run.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors"))
    cfg = dict(input_size=[3, 32, 32], mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5], crop_pct=1.0, num_classes=10)
    (run / "config.json").write_text(json.dumps(dict(
        architecture="vit_tiny_patch16_224", num_classes=10, pretrained_cfg=cfg,
        model_args=dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3))))
    for loaded in (fastvit.create_model("vit_tiny_patch16_224", pretrained=str(run)),
                   fastvit.create_model(f"local-dir:{run}", pretrained=True)):
        assert loaded.cfg == model.cfg
        assert loaded.pretrained_cfg["mean"] == [0.1, 0.2, 0.3] and loaded.pretrained_cfg["num_classes"] == 10
        _same_weights(model, loaded)


def test_head_override_reinitialises_only_the_head(tmp_path):
    model, folder = _saved(tmp_path, num_classes=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: no warning, as timm
        other = fastvit.create_model(f"local-dir:{folder}", pretrained=True, num_classes=3)
    assert other.num_classes == 3 and other.head.weight.shape == (3, 32)
    _same_weights(model, other, skip=("head",))
    headless = fastvit.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0)
    assert isinstance(headless.head, torch.nn.Identity)
    _same_weights(model, headless, skip=("head",))
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(headless.eval()(x), model.eval().forward_head(model.forward_features(x), pre_logits=True))


def test_in_chans_adapts_the_first_convolution(tmp_path):
    model, folder = _saved(tmp_path)
    grey = fastvit.create_model(f"local-dir:{folder}", pretrained=True, in_chans=1)
    w = model.patch_embed.proj.weight
    torch.testing.assert_close(grey.patch_embed.proj.weight, w.sum(1, keepdim=True))
    five = fastvit.create_model(f"local-dir:{folder}", pretrained=True, in_chans=5)
    torch.testing.assert_close(five.patch_embed.proj.weight, torch.cat([w, w[:, :2]], 1) * (3 / 5))


def test_checkpoint_path_loads_after_building(tmp_path):
    model, folder = _saved(tmp_path)
    loaded = fastvit.create_model("vit_tiny_patch16_224", checkpoint_path=str(folder / "model.safetensors"), **SMALL)
    _same_weights(model, loaded)


def test_a_bad_checkpoint_builds_nothing(tmp_path):
    model, folder = _saved(tmp_path)
    with pytest.raises(ValueError, match="shape mismatch"):  # the folder's model_args say 1 block of 32
        fastvit.create_model(f"local-dir:{folder}", pretrained=True, embed_dim=64, num_heads=2)
    with pytest.raises(FileNotFoundError, match="config.json"):
        fastvit.create_model(f"local-dir:{tmp_path / 'nothing'}", pretrained=True)


# -- features_only ----------------------------------------------------------------------------------

def test_features_only_is_timms_getter():
    feats = fastvit.create_model("vit_tiny_patch16_224", features_only=True, depth=4, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    out = feats(x)
    assert isinstance(out, list) and [tuple(o.shape) for o in out] == [(2, 192, 4, 4)] * 3
    assert feats.feature_info.channels() == [192] * 3 and feats.feature_info.reduction() == [16] * 3
    assert feats.feature_info.module_name() == ["blocks.1", "blocks.2", "blocks.3"]
    assert "num_classes" not in feats.pretrained_cfg and "classifier" not in feats.pretrained_cfg
    full = fastvit.create_model("vit_tiny_patch16_224", depth=4, img_size=64).eval()
    full.load_state_dict(feats.model.state_dict(), strict=False)
    ref = full.forward_intermediates(x, indices=3, intermediates_only=True)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)
    some = fastvit.create_model("vit_tiny_patch16_224", features_only=True, depth=4, img_size=64, out_indices=(0, -2))
    assert some.feature_info.module_name() == ["blocks.0", "blocks.2"] and len(some.model.blocks) == 3
    with pytest.raises(ValueError, match="getter"):
        fastvit.create_model("vit_tiny_patch16_224", features_only=True, feature_cls="hook", **SMALL)


# -- FX and export ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kw", [
    ("vit_tiny_patch16_224", {}), ("deit_tiny_distilled_patch16_224", {}),
    ("vit_small_patch14_reg4_dinov2", dict(img_size=56)), ("vit_base_patch16_siglip_224", dict(img_size=64)),
    ("vit_small_r26_s32_224", dict(img_size=64)), ("vit_tiny_patch16_224", dict(dynamic_img_size=True)),
])
def test_symbolic_trace(name, kw):
    model = fastvit.create_model(name, depth=2, **{"embed_dim": 64, "num_heads": 2, **kw}).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, *model.cfg.img_size)
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    if kw.get("dynamic_img_size"):
        y = torch.randn(1, 3, 96, 128)
        torch.testing.assert_close(traced(y), model(y), rtol=0, atol=0)
    with pytest.raises(ValueError, match="input channels"):  # the input check survives tracing
        traced(torch.randn(1, 4, *model.cfg.img_size))


def test_torch_export_still_works():
    model = fastvit.create_model("vit_tiny_patch16_224", depth=1, img_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


# -- the Hub, offline, from a cache built here --------------------------------------------------------

def _cache_with(tmp_path, monkeypatch, name, files=("model.safetensors",), **kw):
    _hub()
    model = fastvit.create_model(name, **{**SMALL, **kw}).eval()
    folder = fastvit.save_pretrained(model, tmp_path / "src", safe_serialization="both")
    cache = tmp_path / "hub"
    add_repo(cache, f"timm/{name}", {f: folder / f for f in ("config.json", *files)})
    use_cache(monkeypatch, cache)
    return model


def test_name_tag_loads_from_the_hub_cache(tmp_path, monkeypatch):
    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    model = _cache_with(tmp_path, monkeypatch, name)
    loaded = fastvit.create_model(name, pretrained=True, **SMALL).eval()
    _same_weights(model, loaded)
    assert loaded.pretrained_cfg["hf_hub_id"] == f"timm/{name}" and loaded.pretrained_cfg["tag"] == "augreg_in21k_ft_in1k"
    # pretrained=True without a tag takes timm's default tag, this one
    default = fastvit.create_model("vit_tiny_patch16_224", pretrained=True, **SMALL)
    assert default.pretrained_cfg["tag"] == "augreg_in21k_ft_in1k"
    _same_weights(model, default)
    hub = fastvit.create_model(f"hf-hub:timm/{name}", pretrained=True).eval()
    _same_weights(model, hub)
    assert hub.pretrained_cfg["source"] == "hf-hub"


def test_offline_without_the_files_names_the_repo(tmp_path, monkeypatch):
    _cache_with(tmp_path, monkeypatch, "vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    with pytest.raises(OSError, match=r"timm/deit_tiny_patch16_224\.fb_in1k.*offline"):
        fastvit.create_model("deit_tiny_patch16_224.fb_in1k", pretrained=True, **SMALL)
    with pytest.raises(OSError, match=r"timm/nothing.*offline"):
        fastvit.create_model("hf-hub:timm/nothing", pretrained=True)


def test_the_bin_file_when_there_is_no_safetensors(tmp_path, monkeypatch):
    name = "deit_tiny_patch16_224.fb_in1k"
    model = _cache_with(tmp_path, monkeypatch, name, files=("pytorch_model.bin",))
    _same_weights(model, fastvit.create_model(name, pretrained=True, **SMALL))


def test_safetensors_comes_first(tmp_path, monkeypatch):
    _hub()
    name = "deit_tiny_patch16_224.fb_in1k"
    a = fastvit.create_model("deit_tiny_patch16_224", **SMALL)
    b = fastvit.create_model("deit_tiny_patch16_224", **SMALL)
    fa = fastvit.save_pretrained(a, tmp_path / "a")
    fb = fastvit.save_pretrained(b, tmp_path / "b", safe_serialization=False)
    cache = tmp_path / "hub"
    add_repo(cache, f"timm/{name}", {"model.safetensors": fa / "model.safetensors",
                                     "pytorch_model.bin": fb / "pytorch_model.bin"})
    use_cache(monkeypatch, cache)
    _same_weights(a, fastvit.create_model(name, pretrained=True, **SMALL))


# -- commands take name.tag ------------------------------------------------------------------------------

def test_commands_take_name_tag(capsys):
    from fastvit.cli import main
    from fastvit.factory import names_weights

    assert fastvit.get_config("vit_base_patch16_224.augreg_in21k") == fastvit.get_config("vit_base_patch16_224")
    assert names_weights("vit_base_patch16_224.augreg_in21k") and names_weights("hf-hub:timm/x") and names_weights("local-dir:/x")
    assert not names_weights("vit_base_patch16_224")
    assert main(["info", "--model", "vit_tiny_patch16_224.augreg_in21k", "--batch", "1"]) == 0
    assert "vit_tiny_patch16_224" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown model"):
        fastvit.get_config("vit_nothing.augreg_in21k")


def test_push_to_hub_uploads_timms_format(monkeypatch):
    hub = _hub()
    from pathlib import Path

    seen = {}

    class FakeApi:  # records what would be uploaded; nothing leaves the machine
        def __init__(self, token=None, **kw):
            seen["token"] = token

        def create_repo(self, repo_id, private=False, exist_ok=True):
            return type("Repo", (), {"repo_id": repo_id})()

        def file_exists(self, repo_id, filename, revision=None):
            return False

        def upload_folder(self, repo_id, folder_path, revision=None, create_pr=False, commit_message=""):
            folder = Path(folder_path)
            seen.update(repo=repo_id, files=sorted(p.name for p in folder.iterdir()),
                        config=json.loads((folder / "config.json").read_text()), readme=(folder / "README.md").read_text())
            return "done"

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    model = fastvit.create_model("vit_tiny_patch16_224", **SMALL)
    assert fastvit.push_to_hub(model, "me/tiny", token="t") == "done"
    assert seen["files"] == ["README.md", "config.json", "model.safetensors", "pytorch_model.bin"]
    assert seen["config"]["architecture"] == "vit_tiny_patch16_224" and seen["token"] == "t"
    assert "hf-hub:me/tiny" in seen["readme"]
