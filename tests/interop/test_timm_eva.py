"""fastvit's Eva against real timm 1.0.29, for every name of timm's ``eva`` module.

Each distinct option combination among the 60 names (the preset's options, sizes aside) is
checked on its smallest name, shallow (2 blocks; widths above 512 cut to 4 heads of 64): logits,
forward_features and forward_intermediates within 1e-5 relative (fp32) at the native size and, with
``dynamic_img_size``, at a non-square size; ``from_timm_eva`` and strict state-dict round trips
(and a checkpoint file). Every name at full size, built on the meta device: timm's state-dict keys
and shapes, parameter count and pretrained_cfg."""

import pytest
import torch

from fastvit.checkpoints.timm_eva import from_timm_eva, load_timm_eva, to_timm_eva_state_dict
from fastvit.presets_eva import EVA_PRESETS, create_eva, list_eva_models
from interop_helpers import assert_rel, image, perturb

SIZE_KEYS = {"patch_size", "embed_dim", "depth", "num_heads", "img_size", "num_classes", "mlp_ratio",
             "attn_pool_num_heads", "attn_pool_mlp_ratio", "norm_eps"}


def _signature(kw: dict) -> tuple:
    sig = []
    for k, v in sorted(kw.items()):
        if k in SIZE_KEYS:
            continue
        if k == "swiglu_align_to":
            v = bool(v)
        if k == "init_values":
            v = v is not None
        sig.append((k, v))
    return tuple(sig)


def _combos() -> dict[tuple, str]:
    out = {}
    for name in sorted(EVA_PRESETS, key=lambda n: (EVA_PRESETS[n]["embed_dim"], n)):
        out.setdefault(_signature(EVA_PRESETS[name]), name)
    return out


COMBOS = _combos()
REPS = sorted(COMBOS.values())
CFG_KEYS = ("architecture", "tag", "input_size", "crop_pct", "crop_mode", "mean", "std", "num_classes", "interpolation",
            "license", "fixed_input_size", "classifier", "first_conv", "pool_size")


def _small(name: str) -> dict:
    kw = dict(depth=2)
    if EVA_PRESETS[name]["embed_dim"] > 512:
        kw.update(embed_dim=256, num_heads=4)
    elif EVA_PRESETS[name]["embed_dim"] > 256:
        kw.update(embed_dim=192, num_heads=3)
    return kw


def _pair(timm, name, **kw):
    ref = perturb(timm.create_model(name, **kw)).eval()
    ours = create_eva(name, attn_impl="sdpa", **kw).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _check_all(ref, ours, x, what, **kw):
    """Logits, features and forward_intermediates(x, **kw) (final tokens and each block's output)."""
    with torch.no_grad():
        assert_rel(ours(x), ref(x), what=f"{what} logits")
        assert_rel(ours.forward_features(x), ref.forward_features(x), what=f"{what} features")
        got, want = ours.forward_intermediates(x, **kw), ref.forward_intermediates(x, **kw)
        assert_rel(got[0], want[0], what=f"{what} intermediates final {kw}")
        flat = [[t for y in out[1] for t in (y if isinstance(y, tuple) else (y,))] for out in (got, want)]
        assert len(flat[0]) == len(flat[1]) == len(want[1]) * (2 if kw.get("return_prefix_tokens") else 1)
        assert_rel(flat[0], flat[1], what=f"{what} intermediates {kw}")


def test_every_combination_is_covered():
    assert len(EVA_PRESETS) == 60
    assert {_signature(kw) for kw in EVA_PRESETS.values()} == set(COMBOS)


@pytest.mark.parametrize("name", REPS)
def test_matches_timm_native_and_dynamic(timm, name):
    kw = _small(name)
    ref, ours = _pair(timm, name, **kw)
    h, w = ref.pretrained_cfg["input_size"][-2:]
    _check_all(ref, ours, image(h, w, batch=1), f"{name} native")
    dref, dours = _pair(timm, name, dynamic_img_size=True, **kw)
    p = dref.patch_embed.patch_size[0]
    options = dict(indices=[0, -1], norm=True, output_fmt="NLC", return_prefix_tokens=dref.num_prefix_tokens > 0)
    _check_all(dref, dours, image(p * 5, p * 8, seed=3), f"{name} dynamic {p * 5}x{p * 8}", **options)


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "vit_pe_core_tiny_patch16_384", "vit_small_patch16_rope_mixed_ape_224"])
def test_set_input_size_matches_timm(timm, name):
    ref, ours = _pair(timm, name, depth=2)
    p = ref.patch_embed.patch_size[0]
    ref.set_input_size((p * 6, p * 9))
    ours.set_input_size((p * 6, p * 9))
    x = image(p * 6, p * 9)
    with torch.no_grad():
        assert_rel(ours(x), ref(x), what=f"{name} after set_input_size")


@pytest.mark.parametrize("name", ["eva02_small_patch14_224", "vit_small_patch16_dinov3_qkvb", "vit_pe_core_tiny_patch16_384",
                                  "vit_small_patch16_rope_mixed_224", "eva02_base_patch16_clip_224"])
def test_from_timm_and_back(timm, name, tmp_path):
    kw = _small(name)
    ref = perturb(timm.create_model(name, **kw)).eval()
    ours = from_timm_eva(ref, attn_impl="sdpa")
    h, w = ref.pretrained_cfg["input_size"][-2:]
    x = image(h, w)
    with torch.no_grad():
        assert_rel(ours(x), ref(x), what=f"{name} from_timm_eva")
    assert ours.pretrained_cfg["architecture"] == name
    back = timm.create_model(name, **kw)
    back.load_state_dict(to_timm_eva_state_dict(ours), strict=True)
    with torch.no_grad():
        assert_rel(back(x), ref(x), what=f"{name} back to timm")
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    loaded = create_eva(name, pretrained=str(path), attn_impl="sdpa", **kw).eval()
    with torch.no_grad():
        assert_rel(loaded(x), ref(x), what=f"{name} from a timm file")


def test_timm_file_at_another_size_resamples_pos_embed(timm, tmp_path):
    """timm's loader resamples a position embedding saved at another grid (bicubic, antialiased)."""
    ref = perturb(timm.create_model("vit_small_patch16_rope_ape_224", depth=2)).eval()
    path = tmp_path / "m.pth"
    torch.save(ref.state_dict(), path)
    want = timm.create_model("vit_small_patch16_rope_ape_224", depth=2, img_size=160, pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(path))).eval()
    got = create_eva("vit_small_patch16_rope_ape_224", depth=2, img_size=160, pretrained=str(path), attn_impl="sdpa").eval()
    x = image(160, 160)
    with torch.no_grad():
        assert_rel(got(x), want(x), what="resampled pos_embed")


@pytest.mark.parametrize("name", list_eva_models())
def test_keys_params_and_pretrained_cfg_at_full_size(timm, name):
    with torch.device("meta"):
        ref = timm.create_model(name)
        ours = create_eva(name)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    for key in CFG_KEYS:
        assert ours.pretrained_cfg.get(key) == ref.pretrained_cfg.get(key), key
    assert ours.feature_info == ref.feature_info
    assert ours.no_weight_decay() == ref.no_weight_decay()
    assert ours.group_matcher() == ref.group_matcher()
    assert (ours.num_features, ours.num_prefix_tokens, ours.global_pool, ours.num_classes) == \
        (ref.num_features, ref.num_prefix_tokens, ref.global_pool, ref.num_classes)


def _release_layouts(timm):
    """Release-style dicts (Meta's DINOv3 and PE files, EVA's own, OpenCLIP's prefix), made from timm models."""
    dino = timm.create_model("vit_small_patch16_dinov3_qkvb", depth=2)
    sd = {}
    for k, v in dino.state_dict().items():
        k = k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma").replace("reg_token", "storage_tokens")
        if k.endswith("q_bias"):
            v = torch.cat([v, torch.zeros_like(v), dino.state_dict()[k.replace("q_bias", "v_bias")]])
            k = k.replace("q_bias", "qkv.bias")
        elif k.endswith("v_bias"):
            continue
        sd[k] = v
    sd.update({"mask_token": torch.zeros(1, 384), "rope_embed.periods": torch.ones(16),
               "blocks.0.attn.qkv.bias_mask": torch.ones(3 * 384)})
    yield "vit_small_patch16_dinov3_qkvb", sd
    eva = timm.create_model("eva02_base_patch14_224", depth=2, embed_dim=192, num_heads=3)
    swaps = (("mlp.fc1_g", "mlp.w1"), ("mlp.fc1_x", "mlp.w2"), ("mlp.fc2", "mlp.w3"), ("mlp.norm", "mlp.ffn_ln"),
             ("q_proj.bias", "q_bias"), ("v_proj.bias", "v_bias"))
    sd = {}
    for k, v in eva.state_dict().items():
        for a, b in swaps:
            k = k.replace(a, b)
        sd["visual.trunk." + k] = v
    yield "eva02_base_patch14_224", sd
    pe = timm.create_model("vit_pe_core_tiny_patch16_384", depth=2)
    swaps = (("patch_embed.proj", "conv1"), ("blocks.", "transformer.resblocks."), ("norm_pre", "ln_pre"),
             ("norm1", "ln_1"), ("norm2", "ln_2"), ("gamma_1", "ls_1.gamma"), ("attn.qkv.", "attn.in_proj_"),
             ("attn.proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
             ("attn_pool.latent", "attn_pool.probe"), ("attn_pool.norm", "attn_pool.layernorm"),
             ("attn_pool.proj", "attn_pool.attn.out_proj"))
    sd = {}
    for k, v in pe.state_dict().items():
        if k.startswith("attn_pool.kv") or k == "head.bias":
            continue
        if k.startswith("attn_pool.q."):
            kind = k.rsplit(".", 1)[1]
            sd[f"visual.attn_pool.attn.in_proj_{kind}"] = torch.cat([v, pe.state_dict()[f"attn_pool.kv.{kind}"]])
            continue
        if k == "head.weight":
            sd["visual.proj"] = v.T
            continue
        if k in ("cls_token", "pos_embed"):
            sd["visual." + ("class_embedding" if k == "cls_token" else "positional_embedding")] = v[0, 0] if k == "cls_token" else v[0]
            continue
        for a, b in swaps:
            k = k.replace(a, b)
        sd["visual." + k] = v
    yield "vit_pe_core_tiny_patch16_384", sd


def test_release_layouts_read_as_timm_reads_them(timm):
    from timm.models.eva import checkpoint_filter_fn

    from fastvit.checkpoints.timm_eva import timm_eva_keys

    for name, sd in _release_layouts(timm):
        kw = dict(depth=2, embed_dim=192, num_heads=3) if name.startswith("eva02_base") else dict(depth=2)
        ref = timm.create_model(name, **kw)
        ours = create_eva(name, **kw)
        want = checkpoint_filter_fn(dict(sd), ref)
        got = timm_eva_keys(dict(sd), ours)
        assert got.keys() == want.keys(), (name, sorted(set(got) ^ set(want)))
        for k in want:
            assert torch.equal(got[k], want[k]), (name, k)
        load_timm_eva(ours, sd)  # and the result loads strictly


@pytest.mark.parametrize("name", ["vit_betwixt_patch16_rope_reg4_gap_256", "eva02_tiny_patch14_224"])
def test_api_semantics_match_timm(timm, name):
    """Overrides, stop_early / int indices, pre-logits, gradients, a fresh head, pruning and
    dynamic padding behave as timm's."""
    kw = dict(depth=3, num_classes=10, global_pool="token", dynamic_img_size=True, dynamic_img_pad=True)
    ref, ours = _pair(timm, name, **kw)
    p = ref.patch_embed.patch_size[0]
    x = image(p * 4 + 3, p * 6 - 5)  # padded up to whole patches
    with torch.no_grad():
        assert_rel(ours(x), ref(x), what="padded dynamic logits")
        assert_rel(ours.forward_head(ours.forward_features(x), pre_logits=True),
                   ref.forward_head(ref.forward_features(x), pre_logits=True), what="pre_logits")
        for opts in (dict(indices=2, stop_early=True), dict(indices=[1], intermediates_only=True, output_fmt="NCHW")):
            got, want = ours.forward_intermediates(x, **opts), ref.forward_intermediates(x, **opts)
            assert_rel(got if opts.get("intermediates_only") else [got[0], *got[1]],
                       want if opts.get("intermediates_only") else [want[0], *want[1]], what=f"intermediates {opts}")
    ours.train(), ref.train()
    ours(x).square().sum().backward()
    ref(x).square().sum().backward()
    grads = dict(ref.named_parameters())
    for k, v in ours.named_parameters():
        assert_rel(v.grad, grads[k].grad, tol=1e-4, what=f"grad {k}")
    ours.eval(), ref.eval()
    ref.reset_classifier(5, "avg")
    ours.reset_classifier(5, "avg")
    ours.head.load_state_dict(ref.head.state_dict())
    assert ours.prune_intermediate_layers([0, 1]) == ref.prune_intermediate_layers([0, 1])
    with torch.no_grad():
        assert_rel(ours.forward_features(x), ref.forward_features(x), what="pruned features")
        assert_rel(ours(x), ref(x), what="pruned, fresh head")
