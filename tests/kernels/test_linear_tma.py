"""The Hopper TMA GEMM candidate (:mod:`fastvit.kernels.linear_tma`).

Interpreter parity: Triton 3.9's interpreter runs host tensor descriptors
(zero-filled loads and clipped stores past the edges, as TMA does), so these
tests run the kernel's own code -- persistent loop, descriptor loads, the
sub-tiled epilogue -- on the CPU, against eager PyTorch in the same dtype and
the fp64 reference (the 2x rule). Outputs go into NaN-poisoned buffers, the
grid is smaller than the tile count (each program loops over several tiles),
and M, N are not multiples of the tiles. The AOT check compiles the sm_90
configurations and requires TMA (``cp.async.bulk.tensor``) and ``wgmma``
instructions with no spills.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from parity import assert_close_vs_ref, poison_
from test_linear_kernel import TOLERANCES, _check_grads, _grads, _upcast

from fastvit.kernels import linear_tma, reference
from fastvit.kernels.linear_tma import TMA_CONFIGS, linear_tma_fwd


def _data(rows, k, n, dtype, seed=0, residual_dtype=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) / k**0.5).to(dtype)
    b = (0.5 * torch.randn(n, generator=g)).to(dtype)
    r = torch.randn(rows, n, generator=g).to(residual_dtype or dtype)
    return x, w, b, r


# (dtype, rows, k, n, config): tiles of the interpreter's table, and one case on the 128x256 sm_90 tile.
CASES = [
    pytest.param(torch.float32, 197, 96, 200, None, id="fp32-197x96x200"),
    pytest.param(torch.float16, 197, 64, 136, None, id="fp16-197x64x136"),
    pytest.param(torch.bfloat16, 70, 48, 264, None, id="bf16-70x48x264"),
    pytest.param(torch.float16, 200, 72, 264, TMA_CONFIGS["sm90"][0], id="fp16-200x72x264-128x256"),
]


@pytest.mark.parametrize("dtype,rows,k,n,config", CASES)
@pytest.mark.parametrize("epilogue", ["gelu", "gelu_tanh", "residual"])
def test_forward_parity(dtype, rows, k, n, config, epilogue):
    x, w, b, r = _data(rows, k, n, dtype)
    atol, rtol = TOLERANCES[dtype]
    meta = linear_tma.selected_config(config)
    tiles = -(-rows // meta["BLOCK_M"]) * -(-n // meta["BLOCK_N"])
    assert tiles > linear_tma.INTERPRETER_PROGRAMS, "the persistent loop must run several tiles per program"
    y = poison_(torch.empty(rows, n, dtype=dtype))
    if epilogue == "residual":
        linear_tma_fwd("t", x, w, b, "residual", residual=r, y=y, config=config)
        ref, pt = (reference.linear_residual_ref(x, w, b, r, upcast=u) for u in (True, False))
        assert_close_vs_ref(y, pt, ref, factor=2, atol=atol, rtol=rtol, name="out")
        return
    approximate = "tanh" if epilogue == "gelu_tanh" else "none"
    pre = poison_(torch.empty(rows, n, dtype=dtype))
    linear_tma_fwd("t", x, w, b, epilogue, y=y, pre=pre, config=config)
    ref, pt = (reference.linear_gelu_ref(x, w, b, approximate, upcast=u) for u in (True, False))
    assert_close_vs_ref(y, pt, ref, factor=2, atol=atol, rtol=rtol, name="out")
    assert_close_vs_ref(pre, F.linear(x, w, b), F.linear(*_upcast(x, w, b)), factor=2, atol=atol, rtol=rtol, name="pre")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_training_path(dtype):
    """Public functions with gradients; residual with an fp32 stream and a per-sample scale."""
    x, w, b, _ = _data(2 * 37, 64, 136, dtype, seed=1)
    dout = torch.randn(2 * 37, 136, generator=torch.Generator().manual_seed(2)).to(dtype)
    ours = _grads(linear_tma.linear_gelu_tma, (x, w, b), dout)
    eager = _grads(lambda *t: reference.linear_gelu_ref(*t, upcast=False), (x, w, b), dout)
    ref = _grads(reference.linear_gelu_ref, _upcast(x, w, b), dout.double())
    atol, rtol = TOLERANCES[dtype]
    assert_close_vs_ref(ours[0], eager[0], ref[0], factor=2, atol=atol, rtol=rtol, name="out")
    _check_grads(("dx", "dW", "db"), ours[1:], eager[1:], ref[1:], dtype)

    x3, r3 = x.view(2, 37, 64), torch.randn(2, 37, 136)
    scale = torch.tensor([0.0, 1.25])
    dout3 = dout.view(2, 37, 136).float()

    def fused(x, w, b, r):
        return linear_tma.linear_residual_tma(x, w, b, r, scale=scale)

    ours = _grads(fused, (x3, w, b, r3), dout3)
    eager = _grads(lambda *t: reference.linear_residual_ref(*t, scale, upcast=False), (x3, w, b, r3), dout3)
    ref = _grads(lambda *t: reference.linear_residual_ref(*t, scale), _upcast(x3, w, b, r3), dout3.double())
    assert ours[0].dtype == torch.float32
    assert_close_vs_ref(ours[0], eager[0], ref[0], factor=2, atol=atol, rtol=rtol, name="out")
    assert not ours[1][0].any(), "the dropped sample's input gradient must be exactly zero"
    _check_grads(("dx", "dW", "db", "d_residual"), ours[1:], eager[1:], ref[1:], dtype)


def test_same_result_as_pointer_kernel():
    """fp32 "ieee": both kernels sum K in the same BLOCK_K order, so they agree to rounding."""
    from fastvit.kernels import linear

    x, w, b, r = _data(130, 64, 136, torch.float32, seed=3)
    torch.testing.assert_close(linear_tma.linear_residual_tma(x, w, b, r), linear.linear_residual(x, w, b, r))


BAD = {
    "fp16 K=20 (40-byte rows)": (lambda: linear_tma.linear_gelu_tma(*_data(4, 20, 16, torch.float16)[:3]),
                                 ValueError, "rows of x that are a multiple of 16 bytes"),
    "fp16 N=12 output rows": (lambda: linear_tma.linear_gelu_tma(*_data(4, 16, 12, torch.float16)[:3]),
                              ValueError, "rows of the output that are a multiple of 16 bytes"),
    "approximate": (lambda: linear_tma.linear_gelu_tma(*_data(4, 16, 16, torch.float32)[:3], approximate="x"),
                    ValueError, "approximate must be one of"),
    "residual shape": (lambda: linear_tma.linear_residual_tma(*_data(4, 16, 16, torch.float32)[:3], torch.zeros(4, 8)),
                       ValueError, "residual must have the output's shape"),
    "weight dtype": (lambda: linear_tma.linear_gelu_tma(torch.zeros(4, 16), torch.zeros(16, 16).half(), torch.zeros(16)),
                     TypeError, "weight must have x's dtype"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD))
def test_validation(name):
    call, error, match = BAD[name]
    with pytest.raises(error, match=match):
        call()


def test_opcheck():
    x, w, b, r = _data(6, 32, 48, torch.float32, seed=4)
    torch.library.opcheck(torch.ops.fastvit.linear_gelu_tma_fwd.default, (x, w, b, "none", True, False))
    torch.library.opcheck(torch.ops.fastvit.linear_residual_tma_fwd.default, (x, w, b, r, None, None, False))


_CHILD = """
import json, sys
from fastvit.aot import linear as linear_aot
from fastvit.aot import check_case, compile_case
out = {}
for case in linear_aot.tma_cases():
    if str(case) in sys.argv[1:]:
        compiled = compile_case(case)
        ptx = compiled.asm["ptx"]
        out[str(case)] = dict(check_case(case), tma=linear_aot.TMA_OP in ptx, wgmma="wgmma.mma_async" in ptx)
print(json.dumps(out))
"""


def test_aot_tma_and_wgmma():
    """Both sm_90 tiles (bf16, GELU storing h and the fp32-residual epilogue) compile with TMA and wgmma, no spills.

    Every TMA case is also compiled by tests/kernels/test_aot.py (shared memory,
    wgmma, spills); this adds the TMA instruction check.
    """
    from fastvit.aot import linear as linear_aot

    names = [str(c) for c in linear_aot.tma_cases()
             if c.name.startswith(("linear_tma_gelu-bf16", "linear_tma_residual_scaled_fp32res-bf16"))]  # fmt: skip
    assert len(names) == 2 * len(TMA_CONFIGS["sm90"])
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", _CHILD, *names], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(reports) == sorted(names)
    for name, report in reports.items():
        assert report["tma"] and report["wgmma"], (name, report)
        assert report["usage"] is not None and report["usage"]["local"] == 0 and report["usage"]["stack"] == 0, (name, report)


def test_siglip_so400m_width():
    """fc1 of SigLIP so400m (1152 -> 4304; 4304 % 128 != 0) through the TMA kernel, 3 rows, poisoned output."""
    x, w, b, _ = _data(3, 1152, 4304, torch.float32, seed=5)
    y = poison_(torch.empty(3, 4304))
    linear_tma_fwd("t", x, w, b, "gelu", y=y)
    ref, pt = (reference.linear_gelu_ref(x, w, b, upcast=u) for u in (True, False))
    assert_close_vs_ref(y, pt, ref, factor=2, atol=TOLERANCES[torch.float32][0], rtol=TOLERANCES[torch.float32][1])
