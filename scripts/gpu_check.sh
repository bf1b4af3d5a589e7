#!/usr/bin/env bash
# One command for a GPU machine (480 s by default, inside a 10-minute command): environment and a
# one-kernel launch, parity of every op the model can dispatch to at ViT-B's shape, the ViT-B/16
# model table, kernel benchmarks, a sized selection of the CUDA tests, then every launch
# configuration and memcheck; each case written to $OUT (or --out DIR) as it finishes.
# See docs/gpu-check.md and `python -m fastvit gpu-check --help`. Runs from the checkout with
# nothing installed (PYTHONPATH=.); PYTHON picks the interpreter (default python3).
#
#   bash scripts/gpu_check.sh                 # on the GPU machine; results in $OUT
#   bash scripts/gpu_check.sh --smoke --out /tmp/smoke   # CPU + Triton interpreter, toy shapes (CI); not measurements
#   bash scripts/gpu_check.sh --rehearse 3 --budget 120  # a slow GPU simulated on the CPU: every step cut off
#
# Exit status: 0 when every step passed, 1 when one failed, was cut off or was skipped, 2 for bad options.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m fastvit gpu-check "$@"
