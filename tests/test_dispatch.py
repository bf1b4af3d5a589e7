"""fastvit.dispatch: measured choices, their caches and policies, on the CPU with a fake timer.

A fake timer returns a table's seconds for each candidate function (after
calling it once, so a candidate that raises raises there as it would under the
real timer) and counts its calls; an injected device predicate makes CPU
tensors count as CUDA inputs where the GPU path is under test.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fastvit import dispatch
from fastvit.dispatch import Candidate, Dispatcher


def t_fn(x):
    return x + 1


def t2_fn(x):
    return x + 3


def k_fn(x):
    return x + 2


def k2_fn(x):
    return x + 4


def boom(x):
    raise RuntimeError("kernel exploded")


class FakeTimer:
    def __init__(self, seconds):
        self.seconds = dict(seconds)  # fn -> seconds
        self.calls = []

    def __call__(self, fn, args):
        self.calls.append(fn)
        fn(*args)
        return self.seconds[fn]


TORCH, KERNEL = Candidate("torch", t_fn, "torch"), Candidate("triton", k_fn, "kernel")
CANDS = (TORCH, KERNEL)
VERSIONS = {"torch": "2.13", "triton": "3.9", "fastvit": "0.1.0"}
X = (torch.zeros(2, 3),)


def make(tmp_path, seconds, **kw):
    """A dispatcher on fake timings. Its candidates tell themselves apart by their values (x + 1, x + 2, ...),
    which the correctness gate would rightly reject, so these tests of the timing and caching logic turn the
    gate off; test_dispatch_gate.py tests the gate."""
    kw.setdefault("check", False)
    kw.setdefault("cache_dir", tmp_path)
    kw.setdefault("on_cuda", lambda args: True)
    kw.setdefault("device_name", lambda args: "NVIDIA H200")
    kw.setdefault("versions", VERSIONS)
    timer = FakeTimer(seconds)
    return Dispatcher(timer=timer, **kw), timer


@pytest.fixture(autouse=True)
def _no_env_policy(monkeypatch):
    monkeypatch.delenv("FASTVIT_DISPATCH", raising=False)


def test_faster_candidate_wins(tmp_path):
    d, timer = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    assert d.choose("op", (1, 64), CANDS, X) is KERNEL
    assert timer.calls == [t_fn, k_fn]
    d, _ = make(tmp_path / "b", {t_fn: 0.5, k_fn: 1.0})
    assert d.choose("op", (1, 64), CANDS, X) is TORCH
    # among several torch candidates the fastest, margin or not
    t2 = Candidate("torch2", t2_fn, "torch")
    d, _ = make(tmp_path / "c", {t_fn: 1.0, t2_fn: 0.99, k_fn: 2.0})
    assert d.choose("op", (1,), (TORCH, t2, KERNEL), X) is t2
    [rec] = d.choices()
    assert rec["chosen"] == "torch2" and rec["source"] == "measured" and rec["times"] == {"torch": 1.0, "torch2": 0.99, "triton": 2.0}
    assert rec["op"] == "op" and rec["key"] == [1] and rec["device"] == "NVIDIA H200" and rec["kind"] == "torch"


def test_ties_are_stable(tmp_path):
    # equal times: torch; a kernel ahead by less than the margin: still torch; by more: the kernel
    margin = dispatch.MARGIN
    assert 0 < margin < 0.2
    for kernel_s, want in ((1.0, TORCH), (1.0 - margin / 2, TORCH), (1.0 - 2 * margin, KERNEL)):
        d, _ = make(tmp_path / str(kernel_s), {t_fn: 1.0, k_fn: kernel_s})
        assert d.choose("op", (1,), CANDS, X) is want, kernel_s
    # the torch candidate wins a tie even when declared after the kernel
    d, _ = make(tmp_path / "rev", {t_fn: 1.0, k_fn: 1.0})
    assert d.choose("op", (1,), (KERNEL, TORCH), X) is TORCH
    # equal candidates of one kind keep declaration order
    k2 = Candidate("triton2", k2_fn, "kernel")
    for order in ((KERNEL, k2), (k2, KERNEL)):
        d, _ = make(tmp_path / order[0].name, {t_fn: 1.0, k_fn: 0.5, k2_fn: 0.5})
        assert d.choose("op", (1,), (TORCH, *order), X) is order[0]
    # a custom margin
    d, _ = make(tmp_path / "m", {t_fn: 1.0, k_fn: 0.85}, margin=0.2)
    assert d.choose("op", (1,), CANDS, X) is TORCH
    with pytest.raises(ValueError, match="margin"):
        Dispatcher(margin=1.5)


def test_timer_per_call(tmp_path):
    d, timer = make(tmp_path, {})
    other = FakeTimer({t_fn: 1.0, k_fn: 0.5})
    with dispatch.using(d):
        assert dispatch.choose("op", (1,), CANDS, X, timer=other) is KERNEL
    assert timer.calls == [] and other.calls == [t_fn, k_fn]


def test_memory_cache_reuses_the_choice(tmp_path):
    d, timer = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    for _ in range(3):
        assert d.choose("op", (1, 64), CANDS, X) is KERNEL
    assert len(timer.calls) == 2
    d.choose("op", (2, 64), CANDS, X)  # a new key is measured
    assert len(timer.calls) == 4
    assert [r["key"] for r in d.choices()] == [[1, 64], [2, 64]]


def test_disk_cache_is_read_back_by_a_new_dispatcher(tmp_path):
    d, timer = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    assert d.choose("op", ("bfloat16", 256, 768), CANDS, X) is KERNEL
    files = list(tmp_path.glob("dispatch-*.json"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))  # written atomically: no temporary left
    doc = json.loads(files[0].read_text())
    assert doc["versions"] == VERSIONS
    [(entry_key, entry)] = doc["entries"].items()
    assert json.loads(entry_key) == ["op", "NVIDIA H200", ["bfloat16", 256, 768], "inference"]
    assert entry["chosen"] == "triton" and entry["times"] == {"torch": 1.0, "triton": 0.5}
    # a fresh dispatcher (a new process) times nothing
    d2, timer2 = make(tmp_path, {})
    assert d2.choose("op", ("bfloat16", 256, 768), CANDS, X) is KERNEL
    assert timer2.calls == []
    [rec] = d2.choices()
    assert rec["source"] == "cache" and rec["times"] == {"torch": 1.0, "triton": 0.5}
    # a cached name that no longer supports the call is measured again
    picky = Candidate("triton", k_fn, "kernel", lambda x: "not today")
    d3, timer3 = make(tmp_path, {t_fn: 1.0})
    assert d3.choose("op", ("bfloat16", 256, 768), (TORCH, picky), X) is TORCH
    assert d3.choices()[0]["reasons"] == {"triton": "not today"}


def test_cache_dir_location(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTVIT_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dispatch.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FASTVIT_CACHE_DIR")
    assert dispatch.cache_dir() == tmp_path / "xdg" / "fastvit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dispatch.cache_dir() == tmp_path / "home" / ".cache" / "fastvit"
    # the default dispatcher writes there
    monkeypatch.setenv("FASTVIT_CACHE_DIR", str(tmp_path / "explicit"))
    d = Dispatcher(timer=FakeTimer({t_fn: 1.0, k_fn: 0.1}), on_cuda=lambda a: True, device_name=lambda a: "G", versions=VERSIONS,
                   check=False)
    d.choose("op", (1,), CANDS, X)
    assert len(list((tmp_path / "explicit").glob("dispatch-*.json"))) == 1


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00", b'{"format": "fastvit-dispatch/1", "versions": {}, "entries": []}', b"[1, 2]"])
def test_corrupt_cache_is_ignored_with_a_warning(tmp_path, garbage):
    d, _ = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    path = d.disk.path
    if b"versions" in garbage:  # well-formed, our versions, but entries of the wrong type
        garbage = garbage.replace(b'"versions": {}', b'"versions": ' + json.dumps(VERSIONS).encode())
    path.write_bytes(garbage)
    with pytest.warns(dispatch.DispatchCacheWarning, match="ignoring the unreadable cache file") as caught:
        assert d.choose("op", (1,), CANDS, X) is KERNEL
    assert str(path) in str(caught[0].message) and issubclass(caught[0].category, (UserWarning, RuntimeWarning))
    assert json.loads(path.read_text())["entries"]  # rewritten, valid
    d2, timer2 = make(tmp_path, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert d2.choose("op", (1,), CANDS, X) is KERNEL
    assert timer2.calls == []


def test_unwritable_cache_only_warns(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    d, _ = make(blocker / "sub", {t_fn: 1.0, k_fn: 0.5})
    with pytest.warns(dispatch.DispatchCacheWarning, match="cannot write the cache file"):
        assert d.choose("op", (1,), CANDS, X) is KERNEL
    assert d.choose("op", (1,), CANDS, X) is KERNEL  # kept in memory


def test_forced_policy_wins_over_the_cache(tmp_path, monkeypatch):
    d, _ = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    assert d.choose("op", (1,), CANDS, X) is KERNEL  # cached: kernel
    monkeypatch.setenv("FASTVIT_DISPATCH", "torch")
    d2, timer2 = make(tmp_path, {})
    assert d2.choose("op", (1,), CANDS, X) is TORCH
    assert d2.choices()[0]["source"] == "policy" and d2.choices()[0]["policy"] == "torch"
    d3, _ = make(tmp_path / "t", {t_fn: 0.5, k_fn: 1.0})
    monkeypatch.delenv("FASTVIT_DISPATCH")
    assert d3.choose("op", (1,), CANDS, X) is TORCH  # cached: torch
    monkeypatch.setenv("FASTVIT_DISPATCH", "kernel")
    assert d3.choose("op", (1,), CANDS, X) is KERNEL  # the same dispatcher follows the new policy
    monkeypatch.setenv("FASTVIT_DISPATCH", " Measure ")
    assert d3.choose("op", (1,), CANDS, X) is TORCH
    assert timer2.calls == []
    # an explicit policy argument
    d4, timer4 = make(tmp_path / "p", {}, policy="kernel")
    assert d4.choose("op", (1,), CANDS, X) is KERNEL and timer4.calls == []
    # kernel policy with no supporting kernel: torch, with the reason
    picky = Candidate("triton", k_fn, "kernel", lambda x: "head dim 300")
    assert d4.choose("op", (2,), (TORCH, picky), X) is TORCH
    assert d4.choices()[-1]["reasons"] == {"triton": "head dim 300"}
    # torch policy never runs a kernel, even when the torch candidate declines the call
    d5, _ = make(tmp_path / "q", {}, policy="torch")
    shy = Candidate("torch", t_fn, "torch", lambda x: "not this one")
    assert d5.choose("op", (1,), (KERNEL, shy), X) is shy


@pytest.mark.parametrize("value", ["fast", "kernels", "1"])
def test_bad_policy_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("FASTVIT_DISPATCH", value)
    with pytest.raises(ValueError, match="FASTVIT_DISPATCH.*measure, kernel, torch"):
        dispatch.policy()
    with pytest.raises(ValueError, match="measure, kernel, torch"):
        Dispatcher(policy=value)
    d = Dispatcher(cache_dir=None, on_cuda=lambda a: True, device_name=lambda a: "G", versions=VERSIONS)
    with pytest.raises(ValueError, match="valid: measure, kernel, torch"):
        d.choose("op", (1,), CANDS, X)


def test_unsupported_candidates_are_skipped_with_their_reason(tmp_path):
    seen = []

    def supports(x):
        seen.append(x)
        return "head_dim 300 is too large"

    picky = Candidate("triton", k_fn, "kernel", supports)
    d, timer = make(tmp_path, {t_fn: 1.0, k_fn: 0.001, k2_fn: 0.5})
    assert d.choose("op", (1,), (TORCH, picky), X) is TORCH
    assert timer.calls == [] and seen == [X[0]]  # supports() sees the call's args; one candidate left: nothing timed
    rec = d.choices()[0]
    assert rec["source"] == "only" and rec["reasons"] == {"triton": "head_dim 300 is too large"} and rec["times"] == {}
    # with two left, the unsupported one is never timed
    k2 = Candidate("triton2", k2_fn, "kernel")
    assert d.choose("op", (2,), (TORCH, picky, k2), X) is k2
    assert timer.calls == [t_fn, k2_fn]
    # a supports() that raises disqualifies only its candidate
    broken = Candidate("triton", k_fn, "kernel", lambda x: 1 / 0)
    assert d.choose("op", (3,), (TORCH, broken), X) is TORCH
    assert "ZeroDivisionError" in d.choices()[-1]["reasons"]["triton"]


def test_versions_and_gpu_names_key_the_cache(tmp_path):
    d, _ = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    d.choose("op", (1,), CANDS, X)
    for kw in ({"versions": {**VERSIONS, "triton": "3.10"}}, {"versions": {**VERSIONS, "fastvit": "0.2.0"}},
               {"versions": {**VERSIONS, "torch": "2.14"}}, {"device_name": lambda a: "NVIDIA A100-SXM4-80GB"}):
        other, timer = make(tmp_path, {t_fn: 0.5, k_fn: 1.0}, **kw)
        assert other.choose("op", (1,), CANDS, X) is TORCH, kw  # measured afresh: the other entry is not used
        assert len(timer.calls) == 2
    # the first environment's entry is still there and still used
    again, timer = make(tmp_path, {})
    assert again.choose("op", (1,), CANDS, X) is KERNEL and timer.calls == []
    assert len(list(tmp_path.glob("dispatch-*.json"))) == 4  # one file per set of versions
    # a file whose recorded versions are not ours is not used, even under our name
    path = again.disk.path
    doc = json.loads(path.read_text())
    doc["versions"] = {**VERSIONS, "torch": "1.0"}
    path.write_text(json.dumps(doc))
    fresh, timer = make(tmp_path, {t_fn: 0.5, k_fn: 1.0})
    assert fresh.choose("op", (1,), CANDS, X) is TORCH and len(timer.calls) == 2


def test_raising_candidate_loses(tmp_path):
    bad = Candidate("triton", boom, "kernel")
    d, timer = make(tmp_path, {t_fn: 1.0, boom: 0.001})
    assert d.choose("op", (1,), (TORCH, bad), X) is TORCH
    rec = d.choices()[0]
    assert rec["times"] == {"torch": 1.0, "triton": None}
    assert rec["reasons"]["triton"].startswith("raised RuntimeError: kernel exploded")

    def nan_timer(fn, args):
        return float("nan") if fn is k_fn else 1.0

    d2 = Dispatcher(timer=nan_timer, cache_dir=None, on_cuda=lambda a: True, device_name=lambda a: "G", versions=VERSIONS,
                    check=False)
    assert d2.choose("op", (1,), CANDS, X) is TORCH
    assert "nan" in d2.choices()[0]["reasons"]["triton"]
    # every candidate raising: the torch one is returned (calling it shows the real error)
    d3 = Dispatcher(timer=lambda fn, a: 1 / 0, cache_dir=None, on_cuda=lambda a: True, device_name=lambda a: "G", versions=VERSIONS)
    assert d3.choose("op", (1,), (bad, TORCH), X) is TORCH


def test_off_cuda_is_always_torch(tmp_path, monkeypatch):
    timer = FakeTimer({t_fn: 1.0, k_fn: 0.1})
    d = Dispatcher(timer=timer, cache_dir=tmp_path, versions=VERSIONS)  # the default predicate: CPU tensors are not CUDA
    monkeypatch.setenv("FASTVIT_DISPATCH", "kernel")
    assert d.choose("op", (1,), (KERNEL, TORCH), X) is TORCH
    monkeypatch.delenv("FASTVIT_DISPATCH")
    assert d.choose("op", (1,), CANDS, X) is TORCH
    assert timer.calls == [] and not list(tmp_path.iterdir())
    rec = d.choices()[-1]
    assert rec["device"] == "cpu" and rec["source"] == "policy" and "off CUDA" in rec["reasons"]["triton"]


def test_bad_candidates_and_keys(tmp_path):
    d, _ = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    with pytest.raises(ValueError, match="at least one torch candidate"):
        d.choose("op", (1,), (KERNEL,), X)
    with pytest.raises(ValueError, match="unique"):
        d.choose("op", (1,), (TORCH, Candidate("torch", k_fn, "kernel")), X)
    with pytest.raises(TypeError, match="Candidate"):
        d.choose("op", (1,), (TORCH, k_fn), X)
    with pytest.raises(TypeError, match="Candidate"):
        d.choose("op", (1,), (), X)
    with pytest.raises(TypeError, match="dispatch key"):
        d.choose("op", (object(),), CANDS, X)
    with pytest.raises(TypeError, match="dispatch key: expected a tuple"):
        d.choose("op", 5, CANDS, X)
    with pytest.raises(ValueError, match="kind"):
        Candidate("x", t_fn, "cuda")
    with pytest.raises(TypeError, match="callable"):
        Candidate("x", None, "torch")
    assert dispatch.normalize_key((torch.bfloat16, [1, (2, None)], torch.device("cpu"))) == ("bfloat16", (1, (2, None)), "cpu")


def test_bucket():
    assert [dispatch.bucket(n) for n in (0, 1, 2, 3, 197, 256, 257, 197 * 33, 197 * 64)] == [1, 1, 2, 4, 256, 256, 512, 8192, 16384]
    assert dispatch.bucket(True) is None and dispatch.bucket(2.0) is None


class Toy(torch.nn.Module):
    dispatches = True

    def forward(self, x):
        key = (dispatch.dtype_name(x.dtype), dispatch.bucket(x.shape[0]), x.shape[-1])
        return dispatch.choose("toy", key, CANDS, (x,)).fn(x)


def test_no_measuring_under_torch_compile(tmp_path):
    d, timer = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    with dispatch.using(d):
        torch._dynamo.reset()
        compiled = torch.compile(Toy(), backend="eager", fullgraph=True)
        x = torch.zeros(3, 4)
        assert torch.equal(compiled(x), x + 1)  # nothing recorded: torch, and nothing timed
        assert timer.calls == [] and d.choices() == []
        assert torch.equal(Toy()(x), x + 2)  # eager: measured, the kernel
        torch._dynamo.reset()
        compiled = torch.compile(Toy(), backend="eager", fullgraph=True)
        assert torch.equal(compiled(x), x + 2)  # the recorded choice
        assert len(timer.calls) == 2
    torch._dynamo.reset()


def test_no_measuring_during_cuda_graph_capture(tmp_path, monkeypatch):
    d, timer = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert d.choose("op", (1,), CANDS, X) is TORCH  # nothing recorded: torch, untimed
    assert timer.calls == [] and d.choices() == []
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert d.choose("op", (1,), CANDS, X) is KERNEL
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert d.choose("op", (1,), CANDS, X) is KERNEL and len(timer.calls) == 2  # the recorded choice


def test_fastvit_compile_makes_the_choices_first(tmp_path):
    import fastvit

    d, timer = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    with dispatch.using(d):
        torch._dynamo.reset()
        compiled = fastvit.compile(Toy(), backend="eager")
        x = torch.zeros(3, 4)
        assert torch.equal(compiled(x), x + 2)  # prepared eagerly, then traced with the kernel
        assert len(timer.calls) == 2
        assert torch.equal(compiled(x), x + 2) and len(timer.calls) == 2  # same signature: no second eager pass
        y = torch.zeros(9, 4)  # a new row bucket: prepared (measured) again
        assert torch.equal(compiled(y), y + 2) and len(timer.calls) == 4
    # off CUDA (the default predicate) the hook does nothing
    d2, timer2 = make(tmp_path / "cpu", {t_fn: 1.0, k_fn: 0.5}, on_cuda=dispatch.cuda_inputs)
    with dispatch.using(d2):
        torch._dynamo.reset()
        compiled = fastvit.compile(Toy(), backend="eager")
        assert torch.equal(compiled(x), x + 1) and timer2.calls == []
    torch._dynamo.reset()


def test_prepare_restores_modes_and_runs_without_grad(tmp_path):
    seen = []

    class Probe(Toy):
        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return super().forward(x)

    model = torch.nn.Sequential(Probe(), torch.nn.Dropout(0.5))
    model.train()
    model[1].eval()
    d, _ = make(tmp_path, {t_fn: 1.0, k_fn: 0.5})
    with dispatch.using(d):
        made = dispatch.prepare(model, torch.zeros(2, 4), grad=False)
    assert seen == [(False, False)]
    assert [m.training for m in model.modules()] == [True, True, False]
    assert [r["chosen"] for r in made] == ["triton"]
    # by default, as the model is set: a model in train mode is prepared for training calls, in its own modes
    with dispatch.using(d):
        dispatch.prepare(model, torch.zeros(2, 4))
        model.eval()
        dispatch.prepare(model, torch.zeros(2, 4))
    assert seen[1:] == [(True, True), (False, False)]
    with pytest.raises(TypeError, match="nn.Module"):
        dispatch.prepare(lambda x: x, torch.zeros(1))


def test_dispatch_imports_no_triton():
    # the package's own files import neither triton nor fastvit.kernels
    import ast

    folder = Path(dispatch.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(("triton", "fastvit.kernels")) and "kernels" not in name, (path.name, name)
    code = "import sys, fastvit.dispatch, fastvit.layers.auto; assert 'triton' not in sys.modules, 'triton imported'"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_default_timer_uses_the_benchmark_timing():
    calls = []

    def step(x):
        calls.append(1)
        return x * 2

    seconds = dispatch.default_timer(step, (torch.ones(4),))
    assert 0 < seconds < 1
    # a first call, the warm-up, then ROUNDS rounds of equally many calls, each round >= ROUND_S
    from fastvit.dispatch import dispatcher

    rounds = len(calls) - 1 - dispatcher.WARMUP
    assert rounds >= dispatcher.ROUNDS and rounds % dispatcher.ROUNDS == 0


def test_software_versions_key_the_default_cache(tmp_path, monkeypatch):
    import fastvit

    v = dispatch.software_versions()
    assert v["torch"] == torch.__version__ and v["fastvit"] == fastvit.__version__ and v["triton"]
    first = Dispatcher(cache_dir=tmp_path).disk.path
    monkeypatch.setattr(fastvit, "__version__", "9.9.9")
    assert Dispatcher(cache_dir=tmp_path).disk.path != first
