"""Hostile checkpoints: every one raises a clear ValueError / TypeError / KeyError and leaves the
model bit-identical (same tensors, same bytes, same config), with no warning announcing a half-done load.

The bad entry is put on the *last* key the model loads (``head.bias``), so a check that ran only
inside ``load_state_dict`` would already have overwritten everything before it.
"""

from __future__ import annotations

import copy
import signal
import warnings

import numpy as np
import pytest
import torch

import fastvit
from fastvit.checkpoints import convert_state_dict, load_checkpoint

SMALL = dict(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
LAST = "head.bias"


def small_model(**overrides):
    torch.manual_seed(0)
    return fastvit.VisionTransformer(fastvit.ViTConfig(**{**SMALL, **overrides})).eval()


def good_state_dict():
    """Weights that differ from small_model()'s in every element, so any write shows."""
    return {k: v + 1.0 for k, v in small_model().state_dict().items()}


def fingerprint(model):
    """Everything a failed load must not touch: tensor identity, storage, bytes, grad flags, config."""
    return {
        "cfg": copy.deepcopy(model.cfg),
        "tensors": {k: (v.data_ptr(), v.dtype, tuple(v.shape), v.detach().numpy().tobytes(), v.requires_grad)
                    for k, v in model.state_dict(keep_vars=True).items()},
        "ids": {k: id(p) for k, p in model.named_parameters()},
    }


def assert_load_fails_cleanly(model, checkpoint, exc, match, **kw):
    before = fingerprint(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no notice about a load that did not happen
        with pytest.raises(exc, match=match) as info:
            load_checkpoint(model, checkpoint, **kw)
    after = fingerprint(model)
    assert after["cfg"] == before["cfg"]
    assert after["ids"] == before["ids"]
    changed = [k for k in before["tensors"] if after["tensors"].get(k) != before["tensors"][k]]
    assert not changed and after["tensors"].keys() == before["tensors"].keys(), f"a failed load modified {changed}"
    return info.value


@pytest.fixture
def no_hang():
    """A checkpoint that makes the loader loop forever fails here instead of hanging the suite."""
    def timeout(*_):
        raise TimeoutError("load_checkpoint did not return within 20 s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _quantized(t):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates the quantized dtypes
        return torch.quantize_per_tensor(t.float(), 0.1, 0, torch.qint8)


def _nested(t):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nested tensors are a prototype"
        return torch.nested.nested_tensor([t, t])


def _csr(t):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return t.reshape(1, -1).to_sparse_csr()


# name -> (replacement for the last entry, message pattern); all ValueError
BAD_VALUES = {
    "meta": (lambda t: torch.empty_like(t, device="meta"), "meta device"),
    "sparse_coo": (lambda t: t.to_sparse(), "sparse_coo"),
    "sparse_csr": (_csr, "sparse_csr"),
    "quantized": (_quantized, "quantized"),
    "nested": (_nested, "nested"),
    "lazy": (lambda t: torch.nn.UninitializedParameter(), "uninitialized"),
    "complex": (lambda t: t.to(torch.complex64), "complex64"),
    "int64": (lambda t: t.long(), "int64"),
    "bool": (lambda t: t > 0, "bool"),
    "none": (lambda t: None, "NoneType, not a tensor"),
    "list": (lambda t: t.tolist(), "list, not a tensor"),
    "numpy": (lambda t: t.numpy(), "ndarray, not a tensor"),
    "string": (lambda t: "weights", "str, not a tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_uncopyable_entry_is_rejected_before_any_write(case):
    make, match = BAD_VALUES[case]
    sd = good_state_dict()
    sd[LAST] = make(sd[LAST])
    err = assert_load_fails_cleanly(small_model(), sd, ValueError, match)
    assert LAST in str(err), "the message names the entry"


@pytest.mark.parametrize("case", ["meta", "sparse_coo", "nested", "int64"])
def test_uncopyable_entry_in_a_file(tmp_path, case):
    make, match = BAD_VALUES[case]
    sd = good_state_dict()
    sd[LAST] = make(sd[LAST])
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    err = assert_load_fails_cleanly(small_model(), path, ValueError, match)
    assert str(path) in str(err) and LAST in str(err)


def test_non_string_keys():
    sd = good_state_dict()
    sd[7] = torch.zeros(3)
    assert_load_fails_cleanly(small_model(), sd, ValueError, "keys must be strings")
    with pytest.raises(ValueError, match="keys must be strings"):
        convert_state_dict({("a", 1): torch.zeros(1), "blocks.0.attn.qkv.weight": torch.zeros(1)})


def test_a_good_load_still_loads_everything():
    """The control: the same checkpoint without a bad entry loads every tensor bit for bit."""
    model, sd = small_model(), good_state_dict()
    load_checkpoint(model, sd)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


# -- nesting ------------------------------------------------------------------------------------


def _self_referential():
    d = {}
    d["model"] = d
    return d


def _two_cycle():
    a, b = {}, {}
    a["state_dict"], b["model"] = b, a
    return a


def _deep(levels=50):
    d = good_state_dict()
    for _ in range(levels):
        d = {"state_dict": d}
    return d


@pytest.mark.parametrize("make,match", [(_self_referential, "refers to itself"), (_two_cycle, "refers to itself"),
                                        (_deep, "more than 8 levels")])
def test_nested_checkpoints_are_unwrapped_a_bounded_number_of_times(no_hang, make, match):
    assert_load_fails_cleanly(small_model(), make(), ValueError, match)


def test_self_referential_file(tmp_path, no_hang):
    path = tmp_path / "loop.pth"
    torch.save(_self_referential(), path)
    err = assert_load_fails_cleanly(small_model(), path, ValueError, "refers to itself")
    assert str(path) in str(err)


def test_usual_nesting_still_opens(no_hang):
    model, sd = small_model(), good_state_dict()
    load_checkpoint(model, {"epoch": 3, "state_dict": {"model": {f"module.{k}": v for k, v in sd.items()}}})
    assert torch.equal(model.head.bias, sd["head.bias"])


# -- position embeddings, converters, shapes ------------------------------------------------------


@pytest.mark.parametrize("shape,match", [((1, 0, 32), "at least one token"), ((1, 3, 32), "not a square grid"),
                                         ((32,), r"pos_embed: the model expects \(1, 5, 32\)"),
                                         ((2, 5, 32), r"pos_embed: the model expects \(1, 5, 32\)")])
def test_degenerate_position_embedding(shape, match):
    sd = good_state_dict()
    sd["pos_embed"] = torch.zeros(shape)
    assert_load_fails_cleanly(small_model(), sd, ValueError, match)


def test_zero_token_position_embedding_without_class_token():
    model = small_model(class_token=False, global_pool="avg")
    sd = {k: v + 1 for k, v in model.state_dict().items()}
    sd["pos_embed"] = torch.zeros(1, 0, 32)
    assert_load_fails_cleanly(model, sd, ValueError, "pos_embed")


def test_timm_layer_scale_of_the_wrong_shape():
    sd = good_state_dict()
    sd["blocks.1.ls2.gamma"] = torch.ones(7)
    assert_load_fails_cleanly(small_model(), sd, ValueError, r"blocks\.1\.ls2\.gamma.*does not fit")


def _hf(sd):
    out = {}
    for k, v in sd.items():
        if ".attn.qkv." in k:
            i, kind = k.split(".")[1], k.rsplit(".", 1)[1]
            for part, t in zip("qkv", v.chunk(3)):
                out[f"vit.layers.{i}.attention.{part}_proj.{kind}"] = t
    return out


def test_hf_query_key_value_of_different_shapes():
    sd = _hf(good_state_dict())
    sd["vit.layers.1.attention.v_proj.weight"] = torch.zeros(3, 32)
    assert_load_fails_cleanly(small_model(), sd, ValueError, r"blocks\.1\.attn\.qkv\.weight.*one shape", strict=False)


@pytest.mark.parametrize("key,value,match", [
    ("Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel", np.zeros((2, 3, 4), np.float32), "Dense kernel is 2-D"),
    ("embedding/kernel", np.zeros((8, 8), np.float32), r"embedding/kernel: cannot convert"),
    ("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel", np.zeros(3, np.float32), "cannot convert"),
    ("Transformer/encoderblock/LayerNorm_0/scale", np.float32(1.0), "shape mismatch"),  # npz makes it 1-D
])
def test_big_vision_arrays_of_the_wrong_rank(tmp_path, key, value, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **{key: value, "embedding/bias": np.zeros(32, np.float32)})
    err = assert_load_fails_cleanly(small_model(), path, ValueError, match, strict=False)
    assert str(path) in str(err)


def test_big_vision_scanned_scalar_in_memory():
    sd = {"embedding/bias": torch.zeros(32), "Transformer/encoderblock/LayerNorm_0/scale": torch.tensor(1.0)}
    assert_load_fails_cleanly(small_model(), sd, ValueError, "leading block axis", strict=False)


# -- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint,match", [(3, "file path or a state dict"), (None, "file path or a state dict"),
                                              ([("head.bias", torch.zeros(5))], "file path or a state dict")])
def test_checkpoint_of_the_wrong_type(checkpoint, match):
    assert_load_fails_cleanly(small_model(), checkpoint, TypeError, match)


def test_a_module_instead_of_its_state_dict():
    assert_load_fails_cleanly(small_model(), small_model(), TypeError, r"state_dict\(\)")


@pytest.mark.parametrize("kw,exc,match", [(dict(interpolation="cubic"), ValueError, "interpolation"),
                                          (dict(layout="keras"), ValueError, "unknown layout"),
                                          (dict(strict="yes"), TypeError, "strict")])
def test_bad_options(kw, exc, match):
    assert_load_fails_cleanly(small_model(), good_state_dict(), exc, match, **kw)


def test_not_a_fastvit_model():
    with pytest.raises(TypeError, match="VisionTransformer"):
        load_checkpoint(torch.nn.Linear(2, 2), good_state_dict())


def test_empty_checkpoint():
    assert_load_fails_cleanly(small_model(), {}, ValueError, "no tensors")


def test_npz_with_object_arrays(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
    err = assert_load_fails_cleanly(small_model(), path, ValueError, "object arrays")
    assert str(path) in str(err)


def test_antialias_needs_a_mode_that_has_it():
    sd = good_state_dict()
    sd["pos_embed"] = torch.randn(1, 10, 32)  # a 3x3 grid: resampled to the model's 2x2
    assert_load_fails_cleanly(small_model(), sd, ValueError, "antialias", interpolation="area", antialias=True)
    assert_load_fails_cleanly(small_model(), sd, TypeError, "antialias", antialias="yes")
    load_checkpoint(small_model(), sd, interpolation="bilinear", antialias=True)  # the control


class _CopyRefusingTensor(torch.Tensor):
    """A tensor subclass that passes every check but refuses to be copied from (as some
    distributed or lazy tensor types do): it must not get half-way through a load."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("copy_", "to"):
            raise RuntimeError("this tensor cannot be copied")
        return super().__torch_function__(func, types, args, kwargs or {})


def test_tensor_subclass_that_cannot_be_copied():
    sd = good_state_dict()
    sd[LAST] = sd[LAST].as_subclass(_CopyRefusingTensor)
    model = small_model()
    before = fingerprint(model)
    try:  # loads as a plain tensor, or is refused before any write; never half-way
        load_checkpoint(model, sd)
    except ValueError as e:
        assert LAST in str(e)
        after = fingerprint(model)
        assert after["tensors"] == before["tensors"]
    else:
        assert torch.equal(model.head.bias, sd[LAST].as_subclass(torch.Tensor))
        assert torch.equal(model.blocks[0].norm1.weight, sd["blocks.0.norm1.weight"])
