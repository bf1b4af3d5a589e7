#!/usr/bin/env bash
# Create .venv (if missing) and install fastvit with the given extras.
# Usage: bash scripts/setup.sh [EXTRAS]      e.g. bash scripts/setup.sh test
#
# torch is installed first, pinned, so that pip never resolves an unpinned
# "torch" to the newest CUDA build (several GB). Override the pin for a GPU
# machine with e.g. FASTVIT_TORCH="torch==2.11.0 --index-url https://download.pytorch.org/whl/cu128".
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
torch_spec="${FASTVIT_TORCH:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# shellcheck disable=SC2086  # torch_spec may carry pip options
"${pip[@]}" $torch_spec
# CUDA builds of torch bring their own triton; CPU builds need one for the kernel
# interpreter (>= 3.8: older ones fail on runtime-bounded loops under TRITON_INTERPRET).
if ! .venv/bin/python -c "import triton" 2>/dev/null; then
    "${pip[@]}" "triton>=3.8"
fi
"${pip[@]}" -e ".${extras:+[$extras]}"
