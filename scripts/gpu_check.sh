#!/usr/bin/env bash
# One command for a GPU machine (<= 8 minutes): environment, CUDA parity of every
# shipped kernel configuration, fused-model parity, memcheck, model throughput and
# kernel benchmarks, written to $OUT (or --out DIR) as they finish. See
# `python -m fastvit gpu-check --help`. Runs from the checkout with nothing
# installed (PYTHONPATH=.); PYTHON picks the interpreter (default python3).
#
#   bash scripts/gpu_check.sh                 # on the GPU machine; results in $OUT
#   bash scripts/gpu_check.sh --smoke --out /tmp/smoke   # CPU + Triton interpreter, toy shapes (CI)
#
# Exit status: 0 when every step passed, 1 when one failed or ran out of time, 2 for bad options.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m fastvit gpu-check "$@"
