#!/usr/bin/env bash
# Set up .venv with the test extras, then run the test suite and the benchmark suite.
# On a machine without a GPU the Triton kernels run through the interpreter
# (tests/conftest.py sets TRITON_INTERPRET=1) and `cuda`-marked tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -m pytest tests -q "$@"
.venv/bin/python -m pytest benchmarks --benchmark-only -q
