#!/usr/bin/env bash
# Interop tests: fastvit side by side with real timm, torchvision and transformers.
# Creates .venv-interop (if missing) the way that was verified to work on the project machines:
# torch==2.14.1 + torchvision==0.29.1 (a CUDA build, runs on the CPU; PyPI's torchvision does not
# import beside the CPU torch of .venv), then timm without dependencies plus its small ones.
# No test skips for a missing library here: tests/interop imports them outright.
# Usage: bash scripts/test_interop.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv=.venv-interop

# The CUDA build of torch takes ~5.6 GB installed; pip's cache would hold a second copy of the
# wheels, so it is off. Check the disk first so a full one fails here, saying so, not mid-install.
need_gb="${FASTVIT_INTEROP_NEED_GB:-7}"
if [ ! -x "$venv/bin/python" ]; then
    free_kb="$(df -Pk . | awk 'NR == 2 {print $4}')"
    if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
        echo "test_interop.sh: $venv needs about $need_gb GB of free disk (torch 2.14.1 CUDA build +" \
             "torchvision), but $(df -Ph . | awk 'NR == 2 {print $4}') is free in $(pwd)" >&2
        exit 1
    fi
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
"${pip[@]}" --no-deps timm==1.0.29
"${pip[@]}" transformers safetensors huggingface_hub pyyaml pytest numpy tqdm
# fastvit itself without dependencies: pip must not swap the torch installed above
"${pip[@]}" --no-deps -e .
"$venv/bin/python" -c "import timm, torchvision, transformers, torch; print('interop:', 'timm', timm.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
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
no_skips tests/interop -m interop "$@"
no_skips tests/test_checkpoints.py -k "timm or torchvision" "$@"
