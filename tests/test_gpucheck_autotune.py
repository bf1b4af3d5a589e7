"""FASTVIT_AUTOTUNE=0 launches untimed on Triton 3.6 too: its autotuner benchmarks a configuration
left alone after pruning (3.8 skips it), so the attention kernels, which prune at launch, pass the
autotuner a do_bench that times nothing when autotuning is off (:func:`fastvit.kernels.tuning.autotune_do_bench`).
Also: the caches and autotuning results gpu-check shares between steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from fastvit.kernels import flash_attention, flash_attention_bwd, tuning  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@triton.jit
def _add_one(X, Y, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs, mask=offs < n) + 1.0, mask=offs < n)


def _tuned(do_bench, calls):
    def keep_first(configs, nargs, **kwargs):
        return configs[:1]  # what the attention kernels' spill prune does with FASTVIT_AUTOTUNE=0

    def counting(kernel_call, quantiles=None, **kw):
        calls.append(kernel_call)
        return do_bench(kernel_call, quantiles=quantiles, **kw)

    return triton.autotune(configs=[triton.Config({"BLOCK": 16}), triton.Config({"BLOCK": 32})], key=["n"],
                           do_bench=counting, prune_configs_by={"early_config_prune": keep_first})(_add_one)  # fmt: skip


def test_untimed_bench_launches_nothing_and_scores_zero():
    launched = []
    assert tuning._untimed(lambda: launched.append(1), quantiles=(0.5, 0.2, 0.8)) == [0.0, 0.0, 0.0]
    assert tuning._untimed(lambda: launched.append(1)) == 0.0
    assert launched == []


def test_a_config_left_alone_by_the_prune_is_launched_untimed():
    calls: list = []
    kernel = _tuned(tuning._untimed, calls)
    x = torch.arange(40, dtype=torch.float32)
    y = torch.full_like(x, float("nan"))
    kernel[lambda meta: (triton.cdiv(40, meta["BLOCK"]),)](x, y, 40)
    assert torch.equal(y, x + 1)
    # Triton 3.6 calls the benchmark for the one pruned config (3.8+ skips it): it must not have timed a launch.
    timings = getattr(kernel, "configs_timings", None) or {}
    assert all(t in (0.0, [0.0, 0.0, 0.0]) for t in timings.values()), timings
    assert len(calls) == len(timings)
    if tuple(int(p) for p in triton.__version__.split(".")[:2]) < (3, 8):
        assert len(calls) == 1  # 3.6 benchmarks the lone config: through the untimed bench, not Triton's timer


def test_attention_autotuners_carry_the_untimed_bench_when_autotuning_is_off():
    assert not tuning.autotune_enabled()  # tests run with FASTVIT_AUTOTUNE=0 (conftest)
    tuners = [flash_attention._attention_fwd_kernel, flash_attention_bwd._attention_bwd_dkdv_kernel,
              flash_attention_bwd._attention_bwd_dq_kernel]  # fmt: skip
    assert all(t._do_bench is tuning._untimed for t in tuners)


def test_autotuning_on_keeps_tritons_own_timing():
    code = ("import os; os.environ.pop('TRITON_INTERPRET', None); os.environ['FASTVIT_AUTOTUNE'] = '1'\n"
            "from fastvit.kernels import flash_attention as f, tuning\n"
            "assert tuning.autotune_do_bench() is None and f._attention_fwd_kernel._do_bench is None, f._attention_fwd_kernel._do_bench\n")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTVIT_AUTOTUNE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_gpu_check_children_share_caches_in_the_checkout(tmp_path):
    from fastvit import gpucheck

    env = gpucheck.cache_env(tmp_path)
    assert env["TRITON_CACHE_DIR"].startswith(str(tmp_path)) and env["TORCHINDUCTOR_CACHE_DIR"].startswith(str(tmp_path))
    assert env["FASTVIT_CACHE_DIR"].startswith(str(tmp_path)) and env["TRITON_CACHE_AUTOTUNING"] == "1"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".cache-gpucheck/triton/x"], cwd=ROOT).returncode
    assert ignored == 0  # the default cache folder is git-ignored
