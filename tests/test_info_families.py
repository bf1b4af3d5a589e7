"""``fastvit info --model`` for every family ``fastvit.list_models()`` returns: the eva family (rotary
attention, SwiGLU, the prefix + native grid's tokens) and the naflexvit family (varlen attention, tokens
per image at the pretrained_cfg's input size); the did-you-mean searches all families. In-process CLI."""

import pytest
import torch

import fastvit
from fastvit import cli, dispatch


def _info(capsys, model, *extra):
    rc = cli.main(["info", "--model", model, "--batch", "2", *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _ops(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines() if "candidates on CUDA:" in line]


@pytest.fixture
def cpu(monkeypatch):
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    if torch.cuda.is_available():
        pytest.skip("the CPU wording")


def test_info_eva02_reports_rope_swiglu_and_its_tokens(capsys, cpu):
    rc, out, err = _info(capsys, "eva02_base_patch14_224")
    assert rc == 0, err
    cfg = fastvit.get_config("eva02_base_patch14_224")
    tokens = 1 + (224 // 14) ** 2  # class token + 16x16 patches
    assert cfg.num_prefix_tokens == 1 and cfg.grid_size == (16, 16)
    assert f"auto on cpu for eva02_base_patch14_224, batch 2, fp32, {tokens} tokens (1 prefix + 16x16 patches" in out
    assert _ops(out) == ["layer_norm", "rope_attention", "linear_swiglu", "linear_residual"]
    assert "rope_attention    candidates on CUDA: sdpa-rotate (torch), triton (kernel)" in out


@pytest.mark.parametrize("name, ops", [
    ("vit_base_patch16_dinov3", ["layer_norm", "rope_attention", "linear_gelu", "linear_residual"]),  # 4 regs, 256px
    ("vit_pe_core_tiny_patch16_384", ["layer_norm", "rope_attention", "linear_gelu", "linear_residual"]),
])
def test_info_eva_family_tokens_are_prefix_plus_grid(capsys, cpu, name, ops):
    rc, out, err = _info(capsys, name)
    assert rc == 0, err
    cfg = fastvit.get_config(name)
    model = fastvit.create_model(name, depth=1)  # the count the model itself makes: its embedding's rows
    with torch.no_grad():
        n = model.forward_features(torch.zeros(1, 3, *cfg.img_size)).shape[1]
    assert f"fp32, {n} tokens ({cfg.num_prefix_tokens} prefix + " in out
    assert _ops(out) == ops


def test_info_eva_without_rope_is_plain_attention(capsys, cpu):
    rc, out, err = _info(capsys, "eva_giant_patch14_224") if "eva_giant_patch14_224" in fastvit.list_models() \
        else pytest.skip("no rope-less eva preset")
    assert rc == 0, err
    assert "attention" in _ops(out) and "rope_attention" not in _ops(out)


def test_info_naflex_reports_varlen_per_image(capsys, cpu):
    name = "naflexvit_base_patch16_gap"
    rc, out, err = _info(capsys, name)
    assert rc == 0, err
    size = fastvit.create_model(name, depth=1).pretrained_cfg["input_size"]
    grid = size[1] // 16, size[2] // 16
    tokens = 4 + grid[0] * grid[1]  # 4 registers + the patches
    assert (f"fp32, {tokens} tokens (per image, which may be any size: 4 prefix + {grid[0]}x{grid[1]} patches at the "
            f"pretrained_cfg's input size {size[1]}x{size[2]})") in out
    assert _ops(out) == ["layer_norm_fork", "layer_norm", "varlen_attention", "linear_gelu", "linear_residual"]
    assert "varlen_attention  candidates on CUDA: torch (torch), padded (torch), torch_varlen (torch), triton (kernel)" in out


@pytest.mark.parametrize("name", fastvit.list_models("*eva02*")[:2] + fastvit.list_models("naflexvit*")
                         + fastvit.list_models("vit_*dinov3*")[:1] + ["vit_tiny_patch16_224", "naflexvit_base_patch16_siglip.v2_webli",
                                                                        "eva02_base_patch14_448.mim_in22k_ft_in22k_in1k"])
def test_info_runs_for_names_of_every_family(capsys, cpu, name):
    rc, out, err = _info(capsys, name)
    assert rc == 0 and not err and f"auto on cpu for {name}, batch 2" in out


@pytest.mark.parametrize("typo, want", [("eva02_bse_patch14_224", "eva02_base_patch14_224"),
                                        ("naflexvit_base_patch16_gapp", "naflexvit_base_patch16_gap")])
def test_info_did_you_mean_searches_every_family(capsys, typo, want):
    rc, out, err = _info(capsys, typo)
    assert rc == 2 and f"unknown model {typo!r}" in err and repr(want) in err.split("Did you mean")[1]
    assert out == ""


@pytest.mark.parametrize("name, tokens, want", [
    ("naflexvit_base_patch16_gap", "580 tokens (per image", {"layer_norm_fork", "layer_norm", "varlen_attention",
                                                             "linear_gelu", "linear_residual"}),
    ("eva02_tiny_patch14_224", "257 tokens (1 prefix + 16x16", {"layer_norm", "rope_attention", "linear_swiglu",
                                                                "linear_residual"}),
])
def test_info_family_on_cuda_lists_what_a_forward_dispatched(monkeypatch, tmp_path, name, tokens, want):
    """The CUDA path, with a dispatcher that calls this CPU a GPU and times without running: one block's
    forward records every dispatched op, each with its choice (torch: the faster by the fake timer)."""
    from fastvit.auto_report import auto_report
    from fastvit.layers.auto import OPS
    from fastvit.layers.rope_attention import ROPE_ATTENTION_CANDIDATES
    from fastvit.layers.varlen import VARLEN_CANDIDATES

    order = {}
    for table in (*OPS.values(), ROPE_ATTENTION_CANDIDATES, VARLEN_CANDIDATES):
        for i, c in enumerate(table):
            order.setdefault(c.fn, i + (100 if c.kind == "kernel" else 0))

    def timer(fn, args):  # the table's first (a torch candidate) is fastest; kernels slowest
        return 1e-3 * (1 + order.get(fn, 50))

    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)
    d = dispatch.Dispatcher(timer=timer, cache_dir=tmp_path, on_cuda=lambda args: True,
                            device_name=lambda args: "FakeGPU", versions={"test": "1"}, check=False)
    with dispatch.using(d):
        lines = auto_report(name, 1, "fp32", "cpu")
    assert f"auto on FakeGPU for {name}, batch 1, fp32, {tokens}" in "\n".join(lines)
    chosen = {line.split()[0]: line.split()[3] for line in lines if " -> " in line}
    assert set(chosen) == want and set(chosen.values()) <= {"torch", "sdpa-rotate"}  # the fake timer's fastest
