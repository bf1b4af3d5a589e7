"""The shape table (fastvit.shapes): derived from the presets, and read by every grid, so a new
preset's shapes reach the compile check, the benchmarks and the CUDA test grids with no other edit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastvit import shapes
from fastvit.presets import get_config, list_models

ROOT = Path(__file__).resolve().parents[2]


def test_wide_tier_is_every_preset_and_core_a_subset():
    cfgs = [get_config(n) for n in list_models()]
    assert shapes.widths("wide") == tuple(sorted({c.embed_dim for c in cfgs}))
    assert shapes.head_dims("wide") == tuple(sorted({c.embed_dim // c.num_heads for c in cfgs}))
    assert shapes.mlp_shapes("wide") == tuple(sorted({(c.embed_dim, c.mlp_hidden_dim) for c in cfgs}))
    assert set(shapes.token_counts("wide")) == {c.seq_len for c in cfgs}
    for fn in (shapes.widths, shapes.head_dims, shapes.mlp_shapes):
        assert set(fn("core")) <= set(fn("wide")) and fn("core")
    assert [s.preset for s in shapes.model_shapes("core")] == list(shapes.CORE_PRESETS)
    # the core tier: ViT-B/L (64), SigLIP So400m (72), ViT-H (80)
    assert shapes.head_dims("core") == (64, 72, 80) and shapes.widths("core") == (768, 1024, 1152, 1280)
    with pytest.raises(ValueError, match="tier must be one of"):
        shapes.widths("all")


def test_attention_shapes_compile_the_masked_length():
    """One (head_dim, heads, tokens) per head dim; tokens never a multiple of 16 (the masked key block)."""
    rows = shapes.attention_shapes("wide")
    assert [d for d, _, _ in rows] == list(shapes.head_dims("wide"))
    for head_dim, heads, tokens in rows:
        assert tokens % 16 and any(s.head_dim == head_dim and s.heads == heads for s in shapes.model_shapes())
        assert tokens in shapes.token_counts("wide", head_dim) or tokens - 1 in shapes.token_counts("wide", head_dim)
    assert shapes.qk_norm_layouts("core") == {64: 12, 72: 16, 80: 16}


def test_the_grids_read_the_table():
    from fastvit.aot import attention as flash_attention_aot, linear as linear_aot, norm as norm_aot

    assert norm_aot.AOT_WIDTHS == shapes.widths("wide") and norm_aot.CORE_WIDTHS == shapes.widths("core")
    assert norm_aot.QK_NORM_HEADS == shapes.qk_norm_layouts("core")
    compiled = {d for d, *_ in flash_attention_aot.MODEL_SHAPES + flash_attention_aot.WIDE_SHAPES}
    assert set(shapes.head_dims("wide")) <= compiled
    assert sorted(linear_aot.LAUNCH_SHAPES.values()) == list(shapes.mlp_shapes("core"))


_NEW_PRESET = """
import json
from fastvit import presets
# a preset with a width (1088) and a head dim (68) no other has
presets.PRESETS["vit_test_patch16_224"] = dict(patch_size=16, embed_dim=1088, depth=2, num_heads=16, img_size=224)
import sys
sys.path.insert(0, "benchmarks")
from fastvit import shapes
from fastvit.aot import cases as aot_cases, norm as norm_aot
import kernel_cases
names = [str(c) for c in aot_cases.all_cases()]
print(json.dumps(dict(
    widths=list(shapes.widths()), head_dims=list(shapes.head_dims()), norm=1088 in norm_aot.AOT_WIDTHS,
    attention=[n for n in names if "-d68-" in n][:3],
    bench=[c.id for c in kernel_cases.bench_cases() if "N1088" in c.id or "D68" in c.id][:4],
)))
"""


def test_a_new_preset_enters_the_compile_check_and_the_benchmarks_with_no_other_edit():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", _NEW_PRESET], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 1088 in found["widths"] and 68 in found["head_dims"]
    assert found["norm"] and found["attention"] and len(found["bench"]) == 4, found
