#!/usr/bin/env bash
# The main job: set up .venv, then benchmark fastvit on whatever device is here.
# Extra arguments go to `fastvit bench` (see `fastvit bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh plots
.venv/bin/fastvit info
.venv/bin/fastvit bench "$@"
