"""Bad configs, bad inputs and model state: a clear ValueError / TypeError where the value enters,
nothing half-changed; the same errors compiled as eager; every configuration pickles."""

from __future__ import annotations

import copy
import io
import itertools
import pickle
import sys
import types

import pytest
import torch

import fastvit
from fastvit import ViTConfig

SMALL = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=5)


def small_model(**overrides):
    torch.manual_seed(0)
    return fastvit.VisionTransformer(ViTConfig(**{**SMALL, **overrides})).eval()


def state(model):
    return copy.deepcopy(model.cfg), {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before):
    cfg, tensors = before
    assert model.cfg == cfg
    now = model.state_dict()
    assert now.keys() == tensors.keys() and all(torch.equal(now[k], tensors[k]) for k in tensors)


# -- ViTConfig ------------------------------------------------------------------------------------

BAD_FIELDS = [
    # (field, value, exception, the words the message must hold)
    ("img_size", 0, ValueError, "img_size must be positive"),
    ("img_size", -224, ValueError, "img_size must be positive"),
    ("img_size", (224, 0), ValueError, "img_size must be positive"),
    ("img_size", (224,), TypeError, "img_size must be a positive int or a pair"),
    ("img_size", (224, 224, 3), TypeError, "img_size must be a positive int or a pair"),
    ("img_size", "224", TypeError, "img_size"),
    ("img_size", 224.0, TypeError, "img_size"),
    ("img_size", None, TypeError, "img_size"),
    ("img_size", True, TypeError, "img_size"),
    ("patch_size", 0, ValueError, "patch_size must be a positive int"),
    ("patch_size", 16.0, TypeError, "patch_size must be a positive int"),
    ("in_chans", -3, ValueError, "in_chans must be a positive int"),
    ("embed_dim", 0, ValueError, "embed_dim must be a positive int"),
    ("depth", 0, ValueError, "depth must be a positive int"),
    ("depth", True, TypeError, "depth must be a positive int"),
    ("num_heads", -1, ValueError, "num_heads must be a positive int"),
    ("num_classes", -1, ValueError, "num_classes must be an int >= 0"),
    ("num_classes", 10.5, TypeError, "num_classes"),
    ("mlp_ratio", 0, ValueError, "mlp_ratio must be a finite number > 0"),
    ("mlp_ratio", -4.0, ValueError, "mlp_ratio must be a finite number > 0"),
    ("mlp_ratio", float("nan"), ValueError, "mlp_ratio"),
    ("mlp_ratio", float("inf"), ValueError, "mlp_ratio"),
    ("mlp_ratio", 1e-4, ValueError, "mlp_ratio=0.0001 gives an MLP of 0 features"),
    ("mlp_ratio", "4", TypeError, "mlp_ratio"),
    ("norm_eps", 0.0, ValueError, "norm_eps must be a finite number > 0"),
    ("norm_eps", -1e-6, ValueError, "norm_eps"),
    ("drop_rate", -0.1, ValueError, r"drop_rate must be a number in \[0, 1\)"),
    ("drop_rate", 1.0, ValueError, "drop_rate"),
    ("attn_drop_rate", float("nan"), ValueError, "attn_drop_rate"),
    ("drop_path_rate", "0.1", TypeError, "drop_path_rate"),
    ("representation_size", -8, ValueError, "representation_size"),
    ("representation_size", 8.5, TypeError, "representation_size"),
    ("qkv_bias", "no", TypeError, "qkv_bias must be True or False"),
    ("class_token", None, TypeError, "class_token"),
    ("dynamic_img_size", "yes", TypeError, "dynamic_img_size"),
    ("fc_norm", "avg", TypeError, "fc_norm"),
    ("attn_impl", "fastest", ValueError, "unknown attn_impl 'fastest'"),
    ("norm_impl", "apex", ValueError, "unknown norm_impl"),
    ("linear_impl", None, TypeError, "linear_impl must be a string"),
]


@pytest.mark.parametrize("field,value,exc,match", BAD_FIELDS, ids=lambda v: repr(v)[:20])
def test_config_rejects_bad_values_naming_the_field(field, value, exc, match):
    with pytest.raises(exc, match=match):
        ViTConfig(**{**SMALL, field: value})
    with pytest.raises(exc, match=match):  # and through every other door
        fastvit.get_config("vit_tiny_patch16_224", **{field: value})
    with pytest.raises(exc, match=match):
        ViTConfig(**SMALL).replace(**{field: value})


def test_config_accepts_the_edges():
    cfg = ViTConfig(**{**SMALL, "img_size": (8, 24), "mlp_ratio": 1 / 32, "drop_rate": 0.0, "drop_path_rate": 0.999,
                       "representation_size": 0, "num_classes": 0, "norm_eps": 1e-12})
    assert cfg.img_size == (8, 24) and cfg.mlp_hidden_dim == 1
    fastvit.VisionTransformer(cfg)(torch.randn(1, 3, 8, 24))


def test_model_takes_only_a_config():
    with pytest.raises(TypeError, match="ViTConfig"):
        fastvit.VisionTransformer(dict(SMALL))


# -- set_img_size / reset_classifier: validated first, nothing half-changed ------------------------


@pytest.mark.parametrize("size,exc", [(0, ValueError), (-16, ValueError), ((16, 0), ValueError), ((0, 0), ValueError),
                                      (4, ValueError), ("32", TypeError), (32.0, TypeError), (None, TypeError),
                                      ((16,), TypeError)])
def test_set_img_size_rejects_bad_sizes(size, exc):
    model = small_model()
    before = state(model)
    with pytest.raises(exc, match="img_size"):
        model.set_img_size(size)
    assert_same_state(model, before)
    model.set_img_size((16, 32))  # and the model still works
    assert model(torch.randn(1, 3, 16, 32)).shape == (1, 5)


@pytest.mark.parametrize("num_classes,pool,exc", [(-1, "avg", ValueError), (3, "map", ValueError), (3, "mean", ValueError), (2.5, None, TypeError)])
def test_reset_classifier_validates_before_changing(num_classes, pool, exc):
    model = small_model()
    before = state(model)
    with pytest.raises(exc):
        model.reset_classifier(num_classes, pool)
    assert_same_state(model, before)


def test_reset_classifier_pooling_keeps_cfg_describing_the_model():
    model = small_model()
    model.reset_classifier(3, "avg")
    assert model.cfg.global_pool == "avg" and model.cfg.num_classes == 3
    rebuilt = fastvit.VisionTransformer(model.cfg)  # cfg still describes the norms this model has
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(rebuilt.eval()(x), model(x))


def test_resample_pos_embed_rejects_degenerate_grids():
    pos = torch.randn(1, 5, 8)
    for new, exc in (((0, 2), ValueError), ((2, -1), ValueError), ((2,), TypeError), ((2.0, 2), TypeError)):
        with pytest.raises(exc, match="new_size"):
            fastvit.resample_pos_embed(pos, new, (2, 2), 1)
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        fastvit.resample_pos_embed(pos, (2, 2), None, 5)
    with pytest.raises(ValueError, match="interpolation"):
        fastvit.resample_pos_embed(pos, (3, 3), (2, 2), 1, interpolation="cubic")


# -- inputs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3, 0, 16), (1, 3, 16, 0), (1, 3, 0, 0)])
def test_dynamic_img_size_rejects_empty_sides(shape):
    model = small_model(dynamic_img_size=True)
    with pytest.raises(ValueError, match="smaller than one 8x8 patch"):
        model(torch.randn(shape))


def test_sparse_input_is_a_type_error():
    with pytest.raises(TypeError, match="dense"):
        small_model()(torch.randn(1, 3, 16, 16).to_sparse())


@pytest.mark.parametrize("impl", [dict(), dict(norm_impl="triton", linear_impl="triton")])
def test_model_on_the_meta_device(impl):
    """Shape inference on the meta device: the input check must not ask autocast about 'meta'."""
    with torch.device("meta"):
        model = fastvit.VisionTransformer(ViTConfig(**SMALL, attn_impl="sdpa", **impl))
        out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 5) and out.device.type == "meta"
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn(2, 4, 16, 16, device="meta"))
    with pytest.raises(TypeError, match="does not match the model"):  # not autocast's "unknown device type"
        model(torch.randn(2, 3, 16, 16, device="meta", dtype=torch.float64))


# -- torch.compile: the eager errors ----------------------------------------------------------------

BAD_INPUTS = [
    (lambda: torch.randn(1, 4, 16, 16), ValueError, "input channels"),
    (lambda: torch.randn(1, 3, 24, 24), ValueError, "expected image size 16x16"),
    (lambda: torch.randn(3, 16, 16), ValueError, "4-D"),
    (lambda: torch.randn(0, 3, 16, 16), ValueError, "non-empty batch"),
    (lambda: torch.zeros(1, 3, 16, 16, dtype=torch.int64), TypeError, "floating-point"),
    (lambda: torch.randn(1, 3, 16, 16, dtype=torch.float64), TypeError, "does not match the model"),
    (lambda: [[0.0]], TypeError, "torch.Tensor"),
]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_model_raises_the_eager_errors(fresh_dynamo):
    model = small_model()
    compiled = fastvit.compile(model, backend="eager")  # fullgraph=True, as fastvit.compile always is
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(compiled(x), model(x))
    for make, exc, match in BAD_INPUTS:
        with pytest.raises(exc, match=match):
            model(make())
        with pytest.raises(exc, match=match):
            compiled(make())
    with pytest.raises(ValueError, match="input channels"):
        compiled(x=torch.randn(1, 4, 16, 16))
    torch.testing.assert_close(compiled(x), model(x))  # still good after the errors
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_compiled_dynamic_model_rejects_empty_sides(fresh_dynamo):
    compiled = fastvit.compile(small_model(dynamic_img_size=True), backend="eager")
    assert compiled(torch.randn(1, 3, 16, 24)).shape == (1, 5)
    with pytest.raises(ValueError, match="smaller than one"):
        compiled(torch.randn(1, 3, 0, 16))


# -- pickling, torch.save, deepcopy ---------------------------------------------------------------

IMPL_GRID = list(itertools.product(("auto", "eager", "sdpa", "triton"), ("torch", "triton"), ("torch", "triton")))


@pytest.mark.parametrize("attn,norm,linear", IMPL_GRID)
def test_every_configuration_pickles_and_deepcopies(attn, norm, linear):
    model = small_model(attn_impl=attn, norm_impl=norm, linear_impl=linear, drop_path_rate=0.1)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies = [pickle.loads(pickle.dumps(model)), copy.deepcopy(model), torch.load(buffer, weights_only=False)]
    for clone in copies:
        assert clone.cfg == model.cfg
        assert all(torch.equal(a, b) for a, b in zip(clone.state_dict().values(), model.state_dict().values()))
    if attn in ("eager", "sdpa"):  # runs here without the interpreter's cost
        x = torch.randn(1, 3, 16, 16)
        for clone in copies:
            torch.testing.assert_close(clone(x), model(x))


@pytest.mark.parametrize("impl,module,attr", [("flash_attn", "flash_attn", "flash_attn_func"),
                                              ("xformers", "xformers.ops", "memory_efficient_attention")])
def test_optional_backends_pickle(monkeypatch, impl, module, attr):
    """flash_attn / xformers are not installed here: a stand-in package lets the model be built."""
    parts = module.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        stub = types.ModuleType(name)
        setattr(stub, attr, lambda *a, **k: None)
        monkeypatch.setitem(sys.modules, name, stub)
        if i:
            setattr(sys.modules[".".join(parts[:i])], parts[i], stub)
    model = small_model(attn_impl=impl)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.blocks[0].attn.attn_fn.args[0].__name__ == f"{impl}_attention"
    copy.deepcopy(model)


@pytest.mark.parametrize("tokens,exc,match", [(lambda: torch.randn(2, 1, 32), ValueError, "at least 2 token"),
                                              (lambda: torch.randn(2, 5, 31), ValueError, r"\(B, tokens, 32\)"),
                                              (lambda: torch.randn(5, 32), ValueError, r"\(B, tokens, 32\)"),
                                              (lambda: "tokens", TypeError, "token tensor")])
def test_forward_head_checks_its_tokens(tokens, exc, match):
    model = small_model(distilled=True)
    assert model.forward_head(model.forward_features(torch.randn(2, 3, 16, 16))).shape == (2, 5)
    with pytest.raises(exc, match=match):
        model.forward_head(tokens())
