"""The attention backward's spill record against the compiler, its pruning, and every
backward configuration forced one by one through interpreter parity.

tests/kernels/test_aot.py compiles every entry the autotuner can launch and fails
any that spills; here every entry recorded to spill (and so pruned) is compiled and
must still spill. Together: the pruned set is exactly what the compile check
measures to spill at the models' head dims (see fastvit.kernels.attention_spills).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_flash_attention_kernel import _check_parity, _qkv_do

from fastvit.kernels import attention_spills as spills
from fastvit.kernels import flash_attention as attn
from fastvit.aot import attention as aot
from fastvit.kernels import tuning

ARCHS = ("sm80", "sm90")
HEAD_DIMS = tuple(d for d, *_ in aot.MODEL_SHAPES + aot.WIDE_SHAPES)
BWD_TUNERS = {"attention_bwd_dkdv": attn.KERNELS["bwd_dkdv"], "attention_bwd_dq": attn.KERNELS["bwd_dq"]}
TUNERS = {"attention_fwd": attn.KERNELS["fwd"], **BWD_TUNERS}
TABLES = {"attention_fwd": attn.FWD_CONFIGS, "attention_bwd_dkdv": attn.DKDV_CONFIGS, "attention_bwd_dq": attn.DQ_CONFIGS}

_CHILD = """
import json, sys
from fastvit.aot import attention as flash_attention_aot
from fastvit.aot import compile_case, resource_usage
part, parts = map(int, sys.argv[1:3])
tiers = tuple(sys.argv[3].split(","))
out = {}
for case in flash_attention_aot.pruned_cases(tiers)[part::parts]:
    compiled = compile_case(case)
    out[str(case)] = dict(usage=resource_usage(compiled.asm["cubin"]), shared=compiled.metadata.shared,
                          mma="mma.sync" in compiled.asm["ptx"])
print(json.dumps(out))
"""


def _config(entry: dict):
    import triton

    meta, launch = tuning.split(entry)
    return triton.Config(meta, **launch)


def _entries(table: dict, arch: str) -> list[dict]:
    return table[arch] + [e for e in table["default"] if e not in table[arch]]


@pytest.mark.parametrize("tier", ["core", pytest.param("wide", marks=pytest.mark.slow)])
def test_pruned_entries_still_spill(tier):
    """Compiled as the check compiles them (bf16 and fp16), every recorded entry spills
    more than the check tolerates, so none is pruned that the check would pass."""
    from fastvit.aot import SPILL_TOLERANCE

    cases = aot.pruned_cases((tier,))
    assert cases
    if tier == "core":  # at the models' usual head dims only the sm_80 backward spills anywhere
        assert all(c.arch == "sm80" and not c.name.startswith("attention_fwd") for c in cases)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    parts = 2
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, str(i), str(parts), tier], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(parts)]  # fmt: skip
    reports = {}
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
        reports.update(json.loads(out.strip().splitlines()[-1]))
    assert set(reports) == {str(c) for c in cases}
    for name, report in reports.items():
        assert report["usage"] is not None, "cuobjdump (shipped with Triton) not found"
        assert max(report["usage"]["stack"], report["usage"]["local"]) > SPILL_TOLERANCE, (name, report)


def test_record_names_only_shipped_entries_at_measured_head_dims():
    """No stale record: each names an entry of its kernel's table for its arch, in a tile
    class that some head dim of the check reaches (so the test above compiles it)."""
    for (arch, kernel, tile_class), entries in spills.SPILLS.items():
        shipped = {spills.entry_key(e) for e in _entries(TABLES[kernel], arch)}
        assert set(entries) <= shipped, (arch, kernel, set(entries) - shipped)
        assert any(spills.tile_class(d, arch, kernel) == tile_class for d in HEAD_DIMS), (arch, kernel, tile_class)
        assert all(b > 16 for b in entries.values())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kernel", sorted(TUNERS))
def test_autotuner_prunes_exactly_the_recorded_entries(kernel, arch, monkeypatch):
    """The kernel's early_config_prune, on a GPU of ``arch``, keeps exactly the entries the
    compile check compiles at each head dim (all of them where every one is recorded to spill);
    with FASTVIT_AUTOTUNE=0 only the first of those, in table order."""
    tuner = TUNERS[kernel]
    assert tuner.early_config_prune.kernel == kernel
    monkeypatch.setattr(tuning, "current_arch", lambda: arch)
    configs = [_config(e) for e in _entries(TABLES[kernel], arch)]
    keys = [spills.entry_key(dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)) for c in configs]
    for head_dim in HEAD_DIMS:
        monkeypatch.setattr(tuning, "autotune_enabled", lambda: True)
        kept = tuner.early_config_prune(configs, {}, HEAD_DIM=head_dim, BLOCK_D=64, BLOCK_D2=0)
        got = [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in kept]
        checked = {
            (c.constexprs["BLOCK_M"], c.constexprs["BLOCK_N"], c.num_warps, c.num_stages)
            for c in aot.aot_cases() if c.arch == arch and c.name.startswith(f"{kernel}-bf16-d{head_dim}-")
        }  # fmt: skip
        recorded = {key[3:] for key in aot.known_spills() if key[:3] == (arch, head_dim, kernel)}
        if recorded == set(keys):  # every entry spills: nothing is pruned, nothing compiles clean
            assert got == keys and not checked, (head_dim, got, checked)
        else:
            assert got and set(got) == checked, (head_dim, got, checked)
            assert set(keys) - set(got) == recorded
        assert got == [k for k in keys if k in set(got)]  # table order kept
        monkeypatch.setattr(tuning, "autotune_enabled", lambda: False)
        alone = tuner.early_config_prune(configs, {}, HEAD_DIM=head_dim, BLOCK_D=64, BLOCK_D2=0)
        assert [spills.entry_key(dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)) for c in alone] == got[:1]


def test_autotune_off_on_a_gpu_holds_the_table_only_where_a_prune_narrows_it(monkeypatch):
    """FASTVIT_AUTOTUNE=0 on a GPU: one entry of the GPU's table for an unpruned kernel, the whole
    table for a pruned one (its prune then keeps one); the interpreter always runs the default."""
    table = {"sm80": [dict(BLOCK_M=1), dict(BLOCK_M=2)], "default": [dict(BLOCK_M=3), dict(BLOCK_M=4)]}
    monkeypatch.setattr(tuning, "interpreting", lambda: False)
    monkeypatch.setenv("FASTVIT_AUTOTUNE", "0")
    assert tuning.selected_entries(table, "sm80") == [dict(BLOCK_M=1)]
    assert tuning.selected_entries(table, "sm80", pruned=True) == table["sm80"]
    assert tuning.selected_entries(table, "sm70") == [dict(BLOCK_M=3)]
    monkeypatch.setenv("FASTVIT_AUTOTUNE", "1")
    assert tuning.selected_entries(table, "sm80") == table["sm80"]
    monkeypatch.setattr(tuning, "interpreting", lambda: True)
    assert tuning.selected_entries(table, "sm80", pruned=True) == [dict(BLOCK_M=3)]


def test_autotune_off_on_sm80_launches_a_spill_free_dq_tile_at_head_dim_72(monkeypatch):
    """The case the default entry used to get wrong: alone, the dQ launch at 72 on sm_80 is clean."""
    monkeypatch.setattr(tuning, "current_arch", lambda: "sm80")
    monkeypatch.setattr(tuning, "autotune_enabled", lambda: False)
    tuner = TUNERS["attention_bwd_dq"]
    configs = [_config(e) for e in _entries(TABLES["attention_bwd_dq"], "sm80")]
    (alone,) = tuner.early_config_prune(configs, {}, HEAD_DIM=72, BLOCK_D=128, BLOCK_D2=0)
    entry = dict(alone.kwargs, num_warps=alone.num_warps, num_stages=alone.num_stages)
    assert spills.spill_bytes("sm80", "attention_bwd_dq", 72, entry) is None
    assert spills.spill_bytes("sm80", "attention_bwd_dq", 72, TABLES["attention_bwd_dq"]["default"][0]) is not None


def test_wider_dkdv_tiles_are_checked_at_head_dim_64_on_sm80():
    """A 128-key dK/dV block with 32 or more query rows is compiled (and so spill-free) at 64."""
    wide = {(c.constexprs["BLOCK_M"], c.constexprs["BLOCK_N"]) for c in aot.aot_cases()
            if c.arch == "sm80" and c.name.startswith("attention_bwd_dkdv-bf16-d64-")}  # fmt: skip
    assert {(64, 128), (32, 128)} <= wide


def test_spill_helpers_validate_and_never_prune_everything():
    entry = dict(BLOCK_M=64, BLOCK_N=128, num_warps=8, num_stages=2)
    assert spills.spill_bytes("sm80", "attention_bwd_dkdv", 72, entry) == 5448
    assert spills.spill_bytes("sm90", "attention_bwd_dkdv", 72, entry) is None
    assert spills.spill_bytes("sm80", "attention_bwd_dkdv", 64, entry) is None
    assert spills.spill_free([entry], "sm80", "attention_bwd_dkdv", 72) == [entry]  # all recorded: keep all
    assert spills.spill_bytes("sm80", "attention_fwd", 64, entry) is None
    with pytest.raises(ValueError, match="expected kernel in"):
        spills.spill_bytes("sm80", "attention_probs", 64, entry)
    with pytest.raises(ValueError, match="expected kernel in"):
        spills.tile_class(64, "sm80", "attention")
    with pytest.raises(ValueError, match="expected kernel in"):
        spills.early_prune("attention_bwd")
    with pytest.raises(ValueError, match="BLOCK_M, BLOCK_N, num_warps and num_stages"):
        spills.spill_bytes("sm80", "attention_bwd_dq", 64, dict(BLOCK_M=64))


def _forced_cases():
    """(kernel, arch, entry) for every backward entry of every table, default included."""
    seen, cases = set(), []
    for kernel in BWD_TUNERS:
        table = TABLES[kernel]
        for arch in ARCHS:
            for entry in _entries(table, arch):
                key = (kernel, arch, spills.entry_key(entry))
                if key not in seen:
                    seen.add(key)
                    cases.append(pytest.param(kernel, arch, entry, id=f"{kernel}-{arch}-m{entry['BLOCK_M']}"
                                              f"n{entry['BLOCK_N']}w{entry['num_warps']}s{entry['num_stages']}"))
    return cases


@pytest.mark.parametrize("kernel, arch, entry", _forced_cases())
def test_forced_backward_config_parity(kernel, arch, entry, device, monkeypatch):
    """Each entry forced alone (the other backward kernel on its default), with ``arch``'s head
    tiles (sm_80: one padded tile; sm_90: 64 + 16), on NaN-poisoned outputs under the 2x/3x rule.
    133 tokens cover several query and key blocks and a partial last one; head dim 72 a masked tile."""
    from fastvit.gpucheck.configs import forced

    tiles = attn.backward_head_tiles
    monkeypatch.setattr(attn, "backward_head_tiles", lambda d, _arch: tiles(d, arch))
    other = next(k for k in BWD_TUNERS if k != kernel)
    config = _config(entry)
    first = _config(TABLES[other]["default"][0])
    with forced(TUNERS[kernel], config, [(TUNERS[other], first)]):
        _check_parity(*_qkv_do(1, 1, 133, 133, 72, torch.float16, device))
        assert TUNERS[kernel].best_config is config and TUNERS[other].best_config is first  # what ran


def test_a_launch_on_sm80_drops_the_spilling_candidate(device, monkeypatch):
    """End to end: given a spilling and a clean dK/dV candidate at head dim 72 on an sm_80 GPU,
    the autotuner launches the clean one without benchmarking (one candidate left)."""
    if device == "cuda":
        pytest.skip("the GPU's own arch decides what is pruned")
    tuner = TUNERS["attention_bwd_dkdv"]
    spilling = _config(dict(BLOCK_M=32, BLOCK_N=128, num_warps=8, num_stages=2))
    clean = _config(dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2))
    monkeypatch.setattr(tuning, "current_arch", lambda: "sm80")
    monkeypatch.setattr(tuner, "cache", {})
    monkeypatch.setattr(tuner, "configs", [spilling, clean])
    monkeypatch.setattr(tuner, "_bench", lambda *a, **k: pytest.fail("benchmarked a pruned candidate"))
    _check_parity(*_qkv_do(1, 1, 20, 20, 72, torch.float16, device))
    assert tuner.best_config is clean
