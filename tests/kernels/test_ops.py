"""Each fused op's declaration (fastvit.kernels.ops): complete, consistent with the kernels,
the one source of the compile check's and the benchmarks' ops, and answerable without Triton."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastvit.kernels import ops, reference, registry

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "fastvit" / "kernels"
PASSES = ("fwd", "bwd", "bwd_dq", "bwd_dkdv", "bwd_delta")
# Op files following the naming scheme in full (the GEMM files get theirs with issue 14's rework).
SCHEME_MODULES = ("flash_attention", "flash_attention_bwd", "norm", "attention_probs", "rms", "swiglu",
                  "varlen_attention_op", "varlen_attention_bwd")


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    full_env.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _collect(*args: str) -> dict[str, list[str]]:
    """file -> node names (``test_x[id]``) that pytest collects from the AOT check and the kernel benchmarks."""
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "tests/kernels/test_aot.py", "benchmarks/test_kernels.py", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found: dict[str, list[str]] = {"tests/kernels/test_aot.py": [], "benchmarks/test_kernels.py": []}
    for line in proc.stdout.splitlines():
        if "::" in line:
            path, name = line.split("::", 1)
            found[path].append(name)
    return found


@pytest.fixture(scope="module")
def collected() -> dict[str, dict[str, list[str]]]:
    """What pytest collects there by default ("not slow") and with every marker ("-m ''")."""
    return {"default": _collect(), "all": _collect("-m", "")}


# -- the declarations are complete ---------------------------------------------------------


def test_every_op_file_is_declared():
    """The op files (those registering torch.library ops or listing KERNELS, but for the backward
    files only their op file imports and the compile cases) are exactly the declared modules, and each declaration's functions are its module's,
    exported by fastvit.kernels where ``exported``."""
    import fastvit.kernels as kernels

    def is_op_file(path):
        text = path.read_text()
        own = "torch.library.custom_op(" in text or re.search(r"^KERNELS = \{", text, re.M)
        return own and not path.stem.endswith(("_aot", "_bwd"))

    op_files = sorted(p.stem for p in KERNELS.glob("*.py") if is_op_file(p))
    assert op_files == sorted({op.module.rpartition(".")[2] for op in ops.OPS.values()})
    public = set()
    for name, op in ops.OPS.items():
        assert op.name == name and ops.declaration(name) is op and registry.get(name) is op
        module = importlib.import_module(op.module)
        for fn in op.functions:
            assert callable(getattr(module, fn)), fn
            if op.exported:
                assert getattr(kernels, fn) is getattr(module, fn), fn
        public.update(op.functions if op.exported else ())
        # one reference per op, in reference.py; the op file defines none of its own
        assert op.reference.__module__ == "fastvit.kernels.reference" and op.reference.__name__.endswith("_ref")
        base = op.reference.__name__.removesuffix("_ref")
        assert name == base or name.startswith(base + "_"), (name, op.reference.__name__)
        own_refs = [n for n, o in vars(module).items() if n.endswith("_ref") and getattr(o, "__module__", "") == op.module]
        assert not own_refs, (op.module, own_refs)
        assert set(op.auto_dtypes) <= set(op.dtypes) and set(op.tolerance.atol) >= set(op.dtypes)
        assert op.description and op.describe().startswith(f"{name}: ")
        # the op's kernels, as its file lists them for the compile check and the GPU check (mlp_residual
        # launches linear's)
        kernels_of = getattr(module, "KERNELS", None) if name != "mlp_residual" else {"fwd": None}
        assert kernels_of and all(k is None or _kernel_like(k) for k in kernels_of.values()), name
    assert public == set(kernels.__all__)
    assert ops.by_module()["fastvit.kernels.norm"] == ("layer_norm", "add_layer_norm")
    assert sorted(n for names in ops.by_module().values() for n in names) == sorted(ops.OPS)
    assert ops.declaration("attention").auto_dtypes == (torch.float16, torch.bfloat16)


def test_declarations_refuse_unknown_ops_and_arguments():
    with pytest.raises(ValueError, match="unknown op 'softmax'"):
        ops.supports("softmax", device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="unknown op"):
        ops.declaration("layernorm")
    with pytest.raises(TypeError):
        ops.supports("attention", device="cuda", dtype=torch.float16, head_dim=64, causal=True)
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        ops.supports("layer_norm", device="cuda", dtype="bf16", width=768)
    with pytest.raises(TypeError, match="head_dim must be an int"):
        ops.supports("attention", device="cuda", dtype=torch.float16, head_dim=True)
    with pytest.raises(TypeError, match="device must be"):
        ops.supports("linear_gelu", device=0, dtype=torch.float16, in_features=8, out_features=8)
    # the old name answers the same
    assert registry.supports is ops.supports and registry.describe is ops.describe


def test_declared_limits_are_what_supports_enforces():
    """The limits a declaration states are the ones its supports() checks: just inside passes, just outside fails."""
    for name, op in ops.OPS.items():
        for arg, (low, high) in op.limits.items():
            call = _SUPPORTS_CALLS[name] | {arg: low}
            assert op.supports_fn(device="cuda", **call) is None, (name, arg, low)
            assert op.supports_fn(device="cuda", **call | {arg: low - 1}) is not None, (name, arg)
            if high is not None:
                assert op.supports_fn(device="cuda", **call | {arg: high}) is None
                assert f"{arg} {high + 1}" in op.supports_fn(device="cuda", **call | {arg: high + 1})
        for dtype in op.dtypes:
            assert op.supports_fn(device="cuda", **_SUPPORTS_CALLS[name] | {"dtype": dtype}) is None
        assert "float64" in op.supports_fn(device="cuda", **_SUPPORTS_CALLS[name] | {"dtype": torch.float64})


def test_tolerance_accepts_the_kernel_and_rejects_a_wrong_result():
    """The correctness gate's bound (flash-attention rule): an fp16 result as close as PyTorch's own
    passes; one shifted by a few ulps of the output's scale, or NaN, fails."""
    tol = ops.declaration("layer_norm").tolerance
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(64, 96, generator=g), torch.rand(96, generator=g) + 0.5, torch.randn(96, generator=g)
    truth = reference.layer_norm_ref(x, w, b)
    baseline = reference.layer_norm_ref(x.half(), w.half(), b.half(), upcast=False)
    assert tol.within(baseline, truth, baseline)
    wrong = baseline.clone()
    wrong[3, 5] += 0.25
    assert not tol.within(wrong, truth, baseline)
    wrong[3, 5] = float("nan")
    assert not tol.within(wrong, truth, baseline)
    assert tol.within(baseline[:0], truth[:0], baseline[:0])


_SUPPORTS_CALLS = {
    "attention": dict(dtype=torch.float16, head_dim=64), "attention_probs": dict(dtype=torch.float16, head_dim=64),
    "layer_norm": dict(dtype=torch.float16, width=768), "add_layer_norm": dict(dtype=torch.float16, width=768),
    "linear_gelu": dict(dtype=torch.float16, in_features=768, out_features=3072),
    "linear_residual": dict(dtype=torch.float16, in_features=3072, out_features=768),
    "linear_gelu_tma": dict(dtype=torch.float16, in_features=768, out_features=3072, capability=(9, 0)),
    "linear_residual_tma": dict(dtype=torch.float16, in_features=3072, out_features=768, capability=(9, 0)),
    "mlp_residual": dict(dtype=torch.float16, in_features=768, hidden_features=3072),
    "rope_attention": dict(dtype=torch.float16, head_dim=64, seq_len=201, num_prefix=5),
    "rms_norm": dict(dtype=torch.float16, width=1024),
    "linear_swiglu": dict(dtype=torch.float16, in_features=768, out_features=2048),
    "varlen_attention": dict(dtype=torch.float16, head_dim=64),
}


def _kernel_like(obj) -> bool:
    return type(obj).__name__ in ("JITFunction", "InterpretedFunction", "Autotuner", "Heuristics")


@pytest.mark.parametrize("module_name", SCHEME_MODULES)
def test_naming_scheme(module_name):
    """Kernels ``_<op>_<pass>_kernel``, launchers ``<op>_<pass>``, torch.library ops
    ``fastvit::<op>_<pass>`` held as ``<op>_<pass>_op``: ops are the declared ones."""
    module = importlib.import_module(f"fastvit.kernels.{module_name}")
    names = {*ops.OPS, *(fn for op in ops.OPS.values() for fn in op.functions)}  # ops and variants
    shape = re.compile(rf"^({'|'.join(sorted(names))})_({'|'.join(PASSES)})$")
    kernels = [name for name, obj in vars(module).items() if _kernel_like(obj) and name.endswith("_kernel")]
    for name in kernels:
        assert name.startswith("_") and shape.match(name[1:].removesuffix("_kernel")), name
    custom = {name: obj for name, obj in vars(module).items() if type(obj).__name__ == "CustomOpDef"}
    for name, op in custom.items():
        namespace, _, qual = op._qualname.partition("::")
        assert namespace == "fastvit" and shape.match(qual) and name == f"{qual}_op", (name, op._qualname)
    launchers = {"flash_attention": ("attention_fwd", "attention_bwd"), "norm": ("layer_norm_fwd", "layer_norm_bwd"),
                 "attention_probs": ("attention_probs_fwd",),
                 "varlen_attention_op": ("varlen_attention_fwd", "varlen_attention_bwd")}
    for name in launchers.get(module_name, ()):
        assert callable(getattr(module, name)) and shape.match(name)
    assert kernels or custom, f"{module_name}: no kernel or op found to check"
    assert set(getattr(module, "CONFIGS", {})) <= set(PASSES) and set(getattr(module, "KERNELS", {})) <= set(PASSES)


def test_describe_lines_and_fastvit_info(capsys):
    lines = ops.describe()
    assert len(lines) == len(ops.OPS)
    for line, op in zip(lines, ops.OPS.values()):
        assert line.startswith(f"{op.name}: ") and all(fn in line for fn in op.functions)
    assert any("head_dim 1-128" in line for line in lines) and any("width 0-4096" in line for line in lines)
    from fastvit import cli

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {line}" in out.splitlines() for line in lines)


# -- every declared op is compiled and benchmarked ----------------------------------------


def test_every_op_has_compile_cases_that_the_aot_check_compiles(collected):
    from fastvit.aot import cases as aot_cases, attention as flash_attention_aot, linear as linear_aot, norm as norm_aot
    from fastvit.aot import rope_attention as rope_attention_aot
    from fastvit.aot import swiglu as swiglu_aot
    from fastvit.aot import varlen_attention as varlen_attention_aot

    assert list(aot_cases.CASES) == list(ops.OPS)
    per_op = {op: aot_cases.cases_of(op) for op in ops.OPS}
    for op, cases in per_op.items():
        assert any(case.tier == "core" for case in cases), f"{op} has no compile case in the default run"
    # the split between the ops of a file loses nothing and duplicates nothing
    shipped = [*flash_attention_aot.aot_cases(), *flash_attention_aot.probs_cases(), *norm_aot.aot_cases(),
               *linear_aot.aot_cases(), *rope_attention_aot.aot_cases(), *swiglu_aot.aot_cases(),
               *varlen_attention_aot.aot_cases()]  # fmt: skip
    declared = [str(c) for cases in per_op.values() for c in cases]
    assert sorted(declared) == sorted(str(c) for c in shipped)
    assert [str(c) for c in aot_cases.all_cases()] == list(dict.fromkeys(declared))
    # tests/kernels/test_aot.py compiles exactly these: the core ones by default, the rest with -m slow
    aot = "tests/kernels/test_aot.py"
    default, everything = collected["default"][aot], collected["all"][aot]
    case_ids = lambda ids: {i[len("test_aot_compiles["):-1] for i in ids if i.startswith("test_aot_compiles[")}  # noqa: E731
    assert case_ids(everything) == set(declared)
    for op, cases in per_op.items():
        assert {str(c) for c in cases if c.tier == "core"} <= case_ids(default), op


def _kernel_cases():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module("kernel_cases")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_every_op_is_benchmarked_against_pytorch(collected):
    kernel_cases = _kernel_cases()
    assert list(kernel_cases.CASES) == list(ops.OPS)
    cases = kernel_cases.bench_cases()
    bench = "benchmarks/test_kernels.py"
    assert sorted(collected["all"][bench]) == sorted(c.test_id for c in cases)
    default = set(collected["default"][bench])
    baseline = ("torch", "sdpa-")  # PyTorch's own ops: the baseline every kernel must beat
    for name in ops.OPS:
        own = kernel_cases.CASES[name]()
        assert own and all(case.op == name for case in own), name
        assert any(case.test_id in default for case in own), f"{name}: no benchmark case in the default run"
        for group in {case.bench for case in own}:
            providers = {case.values["provider"] for case in cases if case.bench == group}
            assert any(p.startswith(baseline) for p in providers), (name, group, providers)
    assert len({c.test_id for c in cases}) == len(cases)


# -- supports() agrees with what the kernels accept (interpreter, tiny shapes) ------------

F32, F16 = torch.float32, torch.float16


_DEVICE = {0: "cpu"}  # where the kernel calls below run: set per test by the device fixture


def _t(*shape, dtype=F32, seed=0):
    g = torch.Generator().manual_seed(seed + len(shape) * 7 + sum(shape))
    return torch.randn(*shape, generator=g).to(device=_DEVICE[0], dtype=dtype)


def _attention(d, n_kv=5, dtype=F32):
    q, k, v = _t(1, 2, 6, d, dtype=dtype), _t(1, 2, n_kv, d, dtype=dtype, seed=1), _t(1, 2, n_kv, d, dtype=dtype, seed=2)
    from fastvit.kernels import attention

    return attention(q, k, v), reference.attention_ref(q, k, v)


def _attention_probs(d, dtype=F32):
    from fastvit.kernels.attention_probs import attention_probs

    q, k = _t(1, 2, 6, d, dtype=dtype), _t(1, 2, 7, d, dtype=dtype, seed=1)
    lse = torch.logsumexp(torch.matmul(q.double(), k.double().transpose(-2, -1)) * d**-0.5, -1).float()
    return attention_probs(q, k, lse), reference.attention_probs_ref(q, k, lse)


def _rope_attention(d, n=9, num_prefix=1, dtype=F32):
    from fastvit.kernels import rope_attention

    q, k, v = _t(1, 2, n, d, dtype=dtype), _t(1, 2, n, d, dtype=dtype, seed=1), _t(1, 2, n, d, dtype=dtype, seed=2)
    angle = _t(max(0, n - num_prefix), d // 2, seed=3) * 3
    args = (q, k, v, angle.sin(), angle.cos())
    return rope_attention(*args, num_prefix=num_prefix), reference.rope_attention_ref(*args, num_prefix)


def _layer_norm(width, dtype=F32, weight_dtype=None, out_dtype=None):
    from fastvit.kernels import layer_norm

    x, w, b = _t(3, width, dtype=dtype), _t(width, dtype=weight_dtype or dtype, seed=1), _t(width, dtype=weight_dtype or dtype, seed=2)
    out = layer_norm(x, w, b, 1e-6, out_dtype=out_dtype)
    return out, reference.layer_norm_ref(x, w, b, 1e-6)


def _add_layer_norm(width, dtype=F32):
    from fastvit.kernels import add_layer_norm

    x, y, w, b = _t(3, width, dtype=dtype), _t(3, width, dtype=dtype, seed=3), _t(width, dtype=dtype), _t(width, dtype=dtype, seed=2)
    return add_layer_norm(x, y, w, b, 1e-6)[1], reference.add_layer_norm_ref(x, y, w, b, 1e-6)[1]


def _linear(op, k, n, dtype=F32, approximate="none", residual_dtype=None):
    import fastvit.kernels as kernels

    x, w, b = _t(5, k, dtype=dtype), _t(n, k, dtype=dtype, seed=1) * max(k, 1) ** -0.5, _t(n, dtype=dtype, seed=2)
    if "gelu" in op:
        return getattr(kernels, op)(x, w, b, approximate), reference.linear_gelu_ref(x, w, b, approximate)
    r = _t(5, n, dtype=residual_dtype or dtype, seed=3)
    return getattr(kernels, op)(x, w, b, r), reference.linear_residual_ref(x, w, b, r)


def _rms_norm(width, dtype=F32, weight_dtype=None, out_dtype=None):
    from fastvit.kernels import rms_norm

    x, w = _t(3, width, dtype=dtype), _t(width, dtype=weight_dtype or dtype, seed=1)
    return rms_norm(x, w, 1e-6, out_dtype=out_dtype), reference.rms_norm_ref(x, w, 1e-6)


def _linear_swiglu(k, n, dtype=F32, bias=True):
    from fastvit.kernels import linear_swiglu

    x = _t(5, k, dtype=dtype)
    wg, wx = (_t(n, k, dtype=dtype, seed=s) * max(k, 1) ** -0.5 for s in (1, 2))
    bg, bx = (_t(n, dtype=dtype, seed=s) for s in (3, 4)) if bias else (None, None)
    return linear_swiglu(x, wg, bg, wx, bx), reference.linear_swiglu_ref(x, wg, bg, wx, bx)
def _varlen_attention(d, dtype=F32, cu_dtype=torch.int32):
    from fastvit.kernels import varlen_attention

    q, k, v = _t(9, 2, d, dtype=dtype), _t(9, 2, d, dtype=dtype, seed=1), _t(9, 2, d, dtype=dtype, seed=2)
    cu = torch.tensor([0, 4, 4, 9], dtype=cu_dtype, device=_DEVICE[0])
    return varlen_attention(q, k, v, cu, 5), reference.varlen_attention_ref(q, k, v, cu)


def _mlp(d, h, dtype=F32, residual_dtype=None):
    from fastvit.kernels import mlp_residual

    x, r = _t(4, d, dtype=dtype), _t(4, d, dtype=residual_dtype or dtype, seed=5)
    w1, b1, w2, b2 = _t(h, d, dtype=dtype, seed=1) * d**-0.5, _t(h, dtype=dtype, seed=2), _t(d, h, dtype=dtype, seed=3) * h**-0.5, _t(d, dtype=dtype, seed=4)
    return mlp_residual(x, w1, b1, w2, b2, r), reference.mlp_residual_ref(x, w1, b1, w2, b2, r)


# (op, supports() keywords, the same call run through the kernel -> (out, fp64 reference))
ACCEPTED = [
    ("attention", dict(dtype=F32, head_dim=72, kv_len=5), lambda: _attention(72)),
    ("attention", dict(dtype=F32, head_dim=3, kv_len=1), lambda: _attention(3, n_kv=1)),
    ("attention_probs", dict(dtype=F32, head_dim=24), lambda: _attention_probs(24)),
    ("rope_attention", dict(dtype=F32, head_dim=72, seq_len=9, num_prefix=1, table_shape=(8, 36)),
     lambda: _rope_attention(72)),
    ("layer_norm", dict(dtype=F32, width=100), lambda: _layer_norm(100)),
    ("layer_norm", dict(dtype=F16, width=40, weight_dtype=F32, out_dtype=F32), lambda: _layer_norm(40, F16, F32, F32)),
    ("add_layer_norm", dict(dtype=F32, width=48), lambda: _add_layer_norm(48)),
    ("linear_gelu", dict(dtype=F32, in_features=24, out_features=40, approximate="tanh"),
     lambda: _linear("linear_gelu", 24, 40, approximate="tanh")),
    ("linear_gelu", dict(dtype=F32, in_features=0, out_features=6), lambda: _linear("linear_gelu", 0, 6)),
    ("linear_residual", dict(dtype=F32, in_features=20, out_features=12, residual_dtype=F32),
     lambda: _linear("linear_residual", 20, 12)),
    ("linear_gelu_tma", dict(dtype=F32, in_features=16, out_features=8), lambda: _linear("linear_gelu_tma", 16, 8)),
    ("linear_residual_tma", dict(dtype=F32, in_features=8, out_features=12), lambda: _linear("linear_residual_tma", 8, 12)),
    ("mlp_residual", dict(dtype=F32, in_features=16, hidden_features=24), lambda: _mlp(16, 24)),
    ("rms_norm", dict(dtype=F32, width=100), lambda: _rms_norm(100)),
    ("rms_norm", dict(dtype=F16, width=40, weight_dtype=F32, out_dtype=F32), lambda: _rms_norm(40, F16, F32, F32)),
    ("linear_swiglu", dict(dtype=F32, in_features=24, out_features=40), lambda: _linear_swiglu(24, 40)),
    ("linear_swiglu", dict(dtype=F32, in_features=0, out_features=6), lambda: _linear_swiglu(0, 6, bias=False)),
    ("varlen_attention", dict(dtype=F32, head_dim=72), lambda: _varlen_attention(72)),
]  # fmt: skip
# (op, keywords, the reason's words, the kernel call and the error it raises)
REFUSED = [
    ("attention", dict(dtype=F32, head_dim=129), "head_dim 129", lambda: _attention(129), ValueError),
    ("attention", dict(dtype=torch.float64, head_dim=8), "float64", lambda: _attention(8, dtype=torch.float64), TypeError),
    ("attention", dict(dtype=F32, head_dim=8, kv_len=0), "kv_len 0", lambda: _attention(8, n_kv=0), ValueError),
    ("attention_probs", dict(dtype=F32, head_dim=130), "head_dim 130", lambda: _attention_probs(130), ValueError),
    ("rope_attention", dict(dtype=F32, head_dim=6, seq_len=9, num_prefix=10), "num_prefix 10",
     lambda: _rope_attention(6, num_prefix=10), ValueError),
    ("layer_norm", dict(dtype=F32, width=4097), "width 4097", lambda: _layer_norm(4097), ValueError),
    ("layer_norm", dict(dtype=F32, width=8, weight_dtype=F16), "weight_dtype", lambda: _layer_norm(8, F32, F16), TypeError),
    ("layer_norm", dict(dtype=torch.float64, width=8), "float64", lambda: _layer_norm(8, torch.float64), TypeError),
    ("layer_norm", dict(dtype=F32, width=8, out_dtype=torch.int8), "out_dtype", lambda: _layer_norm(8, out_dtype=torch.int8), TypeError),
    ("add_layer_norm", dict(dtype=F32, width=5000), "width 5000", lambda: _add_layer_norm(5000), ValueError),
    ("linear_gelu", dict(dtype=F32, in_features=8, out_features=8, approximate="sigmoid"), "approximate",
     lambda: _linear("linear_gelu", 8, 8, approximate="sigmoid"), ValueError),
    ("linear_gelu", dict(dtype=torch.float64, in_features=8, out_features=8), "float64",
     lambda: _linear("linear_gelu", 8, 8, torch.float64), TypeError),
    ("linear_residual", dict(dtype=F32, in_features=8, out_features=8, residual_dtype=F16), "residual_dtype",
     lambda: _linear("linear_residual", 8, 8, residual_dtype=F16), TypeError),
    ("linear_gelu_tma", dict(dtype=F16, in_features=6, out_features=8), "16 bytes",
     lambda: _linear("linear_gelu_tma", 6, 8, F16), ValueError),
    ("linear_residual_tma", dict(dtype=F32, in_features=8, out_features=3), "16 bytes",
     lambda: _linear("linear_residual_tma", 8, 3), ValueError),
    ("mlp_residual", dict(dtype=F32, in_features=8, hidden_features=8, residual_dtype=F16), "residual_dtype",
     lambda: _mlp(8, 8, residual_dtype=F16), TypeError),
    ("rms_norm", dict(dtype=F32, width=4097), "width 4097", lambda: _rms_norm(4097), ValueError),
    ("rms_norm", dict(dtype=F32, width=8, weight_dtype=F16), "weight_dtype", lambda: _rms_norm(8, F32, F16), TypeError),
    ("rms_norm", dict(dtype=torch.float64, width=8), "float64", lambda: _rms_norm(8, torch.float64), TypeError),
    ("linear_swiglu", dict(dtype=torch.float64, in_features=8, out_features=8), "float64",
     lambda: _linear_swiglu(8, 8, torch.float64), TypeError),
    ("varlen_attention", dict(dtype=F32, head_dim=129), "head_dim 129", lambda: _varlen_attention(129), ValueError),
    ("varlen_attention", dict(dtype=F32, head_dim=8, cu_seqlens_dtype=torch.int64), "cu_seqlens_dtype",
     lambda: _varlen_attention(8, cu_dtype=torch.int64), ValueError),
]  # fmt: skip


@pytest.mark.parametrize("op,call,run", ACCEPTED, ids=[f"{a[0]}-{i}" for i, a in enumerate(ACCEPTED)])
def test_an_accepted_call_runs(op, call, run, device, monkeypatch):
    """On CUDA, or on the CPU through the interpreter (tests/conftest.py sets it without a GPU)."""
    monkeypatch.setitem(_DEVICE, 0, device)
    reason = ops.supports(op, device=device, **call)
    if device == "cuda" and reason is not None and "sm_90" in reason:
        pytest.skip(reason)
    assert reason is None
    out, ref = run()
    assert out.shape == ref.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref.double(), atol=2e-3 if out.dtype == F16 else 1e-4, rtol=1e-3)


@pytest.mark.parametrize("op,call,words,run,error", REFUSED, ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSED)])
def test_a_refused_call_raises(op, call, words, run, error, device, monkeypatch):
    monkeypatch.setitem(_DEVICE, 0, device)
    reason = ops.supports(op, device=device, **call)
    assert reason is not None and words in reason, reason
    with pytest.raises(error):
        run()


def test_device_rule_and_routed_calls():
    """Off CUDA only the interpreter runs the kernels; what the layers route elsewhere says why."""
    from fastvit.layers.attention import get_attention_backend, triton_unsupported

    common = dict(dtype=torch.bfloat16, head_dim=64)
    assert ops.supports("attention", device="cuda", **common) is None
    assert "on cpu" in ops.supports("attention", device="cpu", interpret=False, **common)
    assert ops.supports("attention", device=torch.device("cpu"), interpret=True, **common) is None
    assert triton_unsupported("cpu", torch.bfloat16, 64) == ops.supports("attention", device="cpu",
                                                                             interpret=False, **common)  # fmt: skip
    assert triton_unsupported("cuda", torch.bfloat16, 72) is None  # every head dim the kernel takes, 72 included
    dropout = triton_unsupported("cuda", torch.bfloat16, 64, dropout_p=0.1)
    assert "dropout" in dropout
    # a call the kernel refuses (attention dropout) is routed to SDPA by the triton backend
    q, k, v = _t(1, 2, 5, 8), _t(1, 2, 5, 8, seed=1), _t(1, 2, 5, 8, seed=2)
    torch.manual_seed(0)
    routed = get_attention_backend("triton")(q, k, v, dropout_p=0.5)
    torch.manual_seed(0)
    torch.testing.assert_close(routed, torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.5))
    assert "sm_90" in ops.supports("linear_gelu_tma", device="cuda", dtype=F16, in_features=64, out_features=64,
                                        capability=(8, 0))  # fmt: skip
    assert ops.supports("linear_gelu_tma", device="cuda", dtype=F16, in_features=64, out_features=64,
                             capability=(9, 0)) is None  # fmt: skip
    assert "dropout" in ops.supports("linear_residual", device="cuda", dtype=F16, in_features=8, out_features=8,
                                          dropout_p=0.1)  # fmt: skip


def test_gelu_approximations_match_the_epilogue():
    from fastvit.kernels.gemm_epilogue import GELU_EPILOGUE

    assert set(ops.GELU_APPROXIMATIONS) == set(GELU_EPILOGUE)


def test_eager_attention_is_the_reference():
    from fastvit.layers.attention import eager_attention

    q, k, v = _t(2, 3, 9, 16), _t(2, 3, 9, 16, seed=1), _t(2, 3, 9, 16, seed=2)
    got = eager_attention(q, k, v, scale=0.3)
    assert torch.equal(got, reference.attention_ref(q, k, v, 0.3, upcast=False))
    torch.testing.assert_close(got.double(), reference.attention_ref(q, k, v, 0.3), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got, torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3), atol=1e-6, rtol=1e-5)


# -- without Triton -----------------------------------------------------------------------

_NO_TRITON = """
import sys
sys.modules["triton"] = None  # `import triton` now raises ImportError
import torch
import fastvit
import fastvit.kernels as kernels
from fastvit import shapes
from fastvit.kernels import ops
from fastvit.layers.attention import triton_unsupported
calls = {
    "attention": dict(dtype=torch.float16, head_dim=64), "attention_probs": dict(dtype=torch.float16, head_dim=64),
    "layer_norm": dict(dtype=torch.float16, width=768), "add_layer_norm": dict(dtype=torch.float16, width=768),
    "linear_gelu": dict(dtype=torch.float16, in_features=768, out_features=3072),
    "linear_residual": dict(dtype=torch.float16, in_features=3072, out_features=768),
    "linear_gelu_tma": dict(dtype=torch.float16, in_features=768, out_features=3072, capability=(9, 0)),
    "linear_residual_tma": dict(dtype=torch.float16, in_features=3072, out_features=768, capability=(9, 0)),
    "mlp_residual": dict(dtype=torch.float16, in_features=768, hidden_features=3072),
    "rope_attention": dict(dtype=torch.float16, head_dim=64, seq_len=201, num_prefix=5),
    "rms_norm": dict(dtype=torch.float16, width=1024),
    "linear_swiglu": dict(dtype=torch.float16, in_features=768, out_features=2048),
    "varlen_attention": dict(dtype=torch.float16, head_dim=64),
}
assert set(calls) == set(ops.OPS), sorted(ops.OPS)
for op, call in calls.items():
    assert ops.supports(op, device="cuda", **call) == "triton is not installed", op
assert triton_unsupported("cuda", torch.float16, 64) == "triton is not installed"
assert all(line.endswith("unavailable (triton is not installed)") for line in ops.describe())
assert shapes.widths("core") and kernels.__all__ and shapes.head_dims("wide")
assert sys.modules["triton"] is None
assert not any(name.startswith("triton.") for name in sys.modules), [n for n in sys.modules if n.startswith("triton.")]
print("ok", len(calls))
"""


def test_supports_answers_without_triton():
    proc = _run_python(_NO_TRITON)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok", str(len(ops.OPS))]


def test_the_gpu_check_times_every_default_benchmark(collected):
    """gpu-check's kernels step runs benchmarks/test_kernels.py in -k groups: together they select every
    benchmark the default run collects (a new benchmark function must join a group to be measured)."""
    from _pytest.mark.expression import Expression

    from fastvit.gpucheck.steps import GPU_KERNEL_GROUPS

    groups = [Expression.compile(expr) for _, expr in GPU_KERNEL_GROUPS]
    names = collected["default"]["benchmarks/test_kernels.py"]
    assert names
    missed = [n for n in names if not any(g.evaluate(lambda word, n=n: word.lower() in n.lower()) for g in groups)]
    assert not missed, missed
