#!/usr/bin/env bash
# Run the GPU checks on a machine whose python3 already has torch (CUDA), triton,
# pytest and pytest-benchmark, without installing fastvit (PYTHONPATH=.).
# One step per call, each sized to finish within ~10 minutes:
#
#   bash scripts/gpu_session.sh tests     # every cuda-marked test (kernel parity, fused model, compile, CUDA graphs)
#   bash scripts/gpu_session.sh bench     # fastvit bench: ViT-B/16 bf16 batch 256, inference + training, all variants
#   bash scripts/gpu_session.sh kernels   # pytest-benchmark kernel suite (attention, LayerNorm, fused GEMMs)
#   bash scripts/gpu_session.sh models    # pytest-benchmark model-throughput suite
#
# Results and logs go to $OUT (default: bench-out/); name them by GPU and date
# and copy the JSON into benchmarks/results/ to commit them.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-bench-out}"
mkdir -p "$out"
python="${PYTHON:-python3}"
slug=$("$python" -c "from fastvit.bench import device_slug, environment, resolve_device; print(device_slug(environment(resolve_device())))") || exit 1
stamp="$slug-$(date +%F)"

case "${1:-}" in
    tests)
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/$stamp-nvidia-smi.txt"
        "$python" -m pytest tests -m cuda -q -p no:cacheprovider --junitxml="$out/$stamp-cuda-tests.xml" 2>&1 | tee "$out/$stamp-cuda-tests.log"
        ;;
    bench)
        "$python" -m fastvit info | tee "$out/$stamp-info.txt"
        "$python" -m fastvit bench --out "$out/$stamp.json" "${@:2}" 2>&1 | tee "$out/$stamp-bench.log"
        ;;
    kernels)
        "$python" -m pytest benchmarks/test_kernels.py --benchmark-only -q -p no:cacheprovider \
            --benchmark-json="$out/$stamp-kernels-pytest.json" 2>&1 | tee "$out/$stamp-kernels.log"
        ;;
    models)
        "$python" -m pytest benchmarks/test_model_throughput.py --benchmark-only -q -p no:cacheprovider \
            --benchmark-json="$out/$stamp-models-pytest.json" 2>&1 | tee "$out/$stamp-models.log"
        ;;
    *)
        echo "usage: bash scripts/gpu_session.sh tests|bench|kernels|models [fastvit bench options]" >&2
        exit 2
        ;;
esac
