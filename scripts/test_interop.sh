#!/usr/bin/env bash
# Interop tests, in a twin of the GPU machines' software: fastvit side by side with real timm,
# torchvision and transformers, on torch 2.11 + triton 3.6 + torchvision 0.26 (what the GPU
# machines run; their Python is 3.12), then the compile check and one launch of every op under triton 3.6,
# so a torch 2.11 / triton 3.6 incompatibility fails here instead of in a GPU session.
# Creates the venv (if missing; FASTVIT_INTEROP_VENV names it, default .venv-interop) the way that
# was verified to work on the project machines: torch==2.11.0 + torchvision==0.26.0 (a CUDA build,
# runs on the CPU; PyPI's torchvision does not import beside the CPU torch of .venv), numpy < 2.4
# (triton 3.6's interpreter fails on runtime-bounded loops with numpy >= 2.4), then timm without
# dependencies plus its small ones. No interop test skips for a missing library here.
# Usage: bash scripts/test_interop.sh [extra pytest args for the interop tests]
# CI (.ci/run) then runs `gpu_check.sh --smoke` with this venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv="${FASTVIT_INTEROP_VENV:-.venv-interop}"
twin=(torch==2.11.0 torchvision==0.26.0 "numpy<2.4")  # the GPU machines' versions (triton 3.6.0 comes with torch)

# The CUDA build of torch takes ~5 GB installed; pip's cache would hold a second copy of the
# wheels, so it is off. Check the disk first so a full one fails here, saying so, not mid-install.
need_gb="${FASTVIT_INTEROP_NEED_GB:-7}"
if [ ! -x "$venv/bin/python" ]; then
    free_kb="$(df -Pk . | awk 'NR == 2 {print $4}')"
    if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
        echo "test_interop.sh: $venv needs about $need_gb GB of free disk (torch 2.11 CUDA build +" \
             "torchvision), but $(df -Ph . | awk 'NR == 2 {print $4}') is free in $(pwd)" >&2
        exit 1
    fi
    "$python" -m venv "$venv"
fi
started=$SECONDS
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir)
"${pip[@]}" "${twin[@]}"
"${pip[@]}" --no-deps timm==1.0.29
"${pip[@]}" transformers safetensors huggingface_hub pyyaml pytest pytest-benchmark tqdm "numpy<2.4"
# fastvit itself without dependencies: pip must not swap the torch installed above
"${pip[@]}" --no-deps -e .
"$venv/bin/python" - <<'EOF'
import numpy, timm, torch, torchvision, transformers, triton
print("twin:", "torch", torch.__version__, "triton", triton.__version__, "torchvision", torchvision.__version__,
      "numpy", numpy.__version__, "timm", timm.__version__, "transformers", transformers.__version__)
assert torch.__version__.startswith("2.11.") and triton.__version__.startswith("3.6."), "not the GPU machines' torch/triton"
EOF
echo "test_interop.sh: environment ready in $((SECONDS - started)) s"
# Run pytest and fail if any test skipped: here every library is present, so a skip is a bug.
no_skips() {
    local log
    log="$(mktemp)"
    "$venv/bin/python" -m pytest -q -p no:randomly "$@" | tee "$log"
    if grep -Eq "[0-9]+ skipped" "$log"; then
        echo "test_interop.sh: tests skipped in the interop environment (see above)" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}
# -m interop replaces the default "not slow and not interop"; the timm/torchvision tests of
# tests/test_checkpoints.py (which skip in .venv) run here too.
started=$SECONDS
no_skips tests/interop -m interop "$@"
no_skips tests/test_checkpoints.py -k "timm or torchvision" "$@"
echo "test_interop.sh: interop tests in $((SECONDS - started)) s"

# Under triton 3.6 (the GPU machines' Triton): the ahead-of-time compile of every shipped
# configuration with its compiler (test_aot and the spill-record tests), one launch of every op
# through its interpreter (test_ops), the shape tables and the autotuner's untimed path. The
# interpreter parity tests run once, in the main suite (scripts/test.sh) under the newer Triton:
# here they would repeat the same arithmetic through the same numpy. Less two tests whose premise
# holds for the newer Triton of .venv only, each named with its reason.
started=$SECONDS
twin_deselect=(
    # The spill records were measured with triton >= 3.8's compiler; 3.6 compiles
    # attention_bwd_dq-bf16-d72-m128n16-sm80-w8s2 with 8 bytes of stack, under the test's
    # 16-byte tolerance: on 3.6 that prune is conservative (drops a config that would not spill).
    --deselect "tests/kernels/test_flash_attention_aot_spills.py::test_pruned_entries_still_spill[core]"
    # Patches Autotuner._bench to fail if called: triton 3.6 calls _bench for the one config left
    # after pruning (3.8 skips it). fastvit passes 3.6 a do_bench that launches and times nothing
    # when autotuning is off; tests/test_gpucheck_autotune.py (run below) proves that on 3.6.
    --deselect tests/kernels/test_flash_attention_aot_spills.py::test_a_launch_on_sm80_drops_the_spilling_candidate
)
# FASTVIT_TWIN_AOT=0 leaves out the compile of every configuration with triton 3.6 (test_aot: most of
# this part's time with a cold Triton cache, ~4-6 minutes on 2 cores).
if [ "${FASTVIT_TWIN_AOT:-1}" = 0 ]; then twin_deselect+=(--deselect tests/kernels/test_aot.py); fi
"$venv/bin/python" -m pytest tests/kernels/test_aot.py tests/kernels/test_*_aot*.py tests/kernels/test_ops.py \
    tests/kernels/test_package.py tests/kernels/test_shapes.py tests/test_gpucheck_autotune.py -q -p no:randomly -p no:cacheprovider \
    "${twin_deselect[@]}"
echo "test_interop.sh: kernel tests under triton 3.6 in $((SECONDS - started)) s"
