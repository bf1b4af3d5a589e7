#!/usr/bin/env bash
# Retired: the four 10-minute steps it ran are now one <= 8-minute command,
# scripts/gpu_check.sh (`fastvit gpu-check`). This wrapper forwards to it;
# any old step name (tests|bench|kernels|models) selects the matching steps.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    tests) shift; set -- --steps env,parity,tests,sweep "$@" ;;
    bench|models) shift; set -- --steps env,models "$@" ;;
    kernels) shift; set -- --steps env,kernels "$@" ;;
esac
echo "gpu_session.sh is retired; running: bash scripts/gpu_check.sh $*" >&2
exec bash scripts/gpu_check.sh "$@"
