#!/usr/bin/env bash
# The GPU check, one device call meant to end within 8 minutes (its steps' time limits add up to
# 10, a device call's limit): the tests marked `gpu`, the device-decode parity report
# (bench/decode_parity.py: nvJPEG vs PIL pixels and top-1 answers on a varied photo set), then the
# GPU benchmark (bench/gpu_bench.py: resnet50 in-process vs the service with its HTTP workers and
# as one process, V2 binary batches, one image per V2 request at c=128, one 427x640 JPEG per
# request at c=128 and c=1, the c=128 JPEG point also with CNN_DEVICE_DECODE=off; each service's
# start to /readyz and its processes on the GPU). Run bench/gpu_prepare.sh first where pip works,
# and carry .whl to the GPU machine. Without an NVIDIA GPU that torch can use it refuses, exit
# code 3.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${OUT:-bench/out/gpu}

refuse() {
  echo "gpu_check: $1; this script runs only on a machine with a CUDA GPU" >&2
  exit 3
}

command -v nvidia-smi >/dev/null 2>&1 || refuse "no NVIDIA GPU here (nvidia-smi not found)"
nvidia-smi -L >/dev/null 2>&1 || refuse "nvidia-smi finds no GPU"
"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
  || refuse "torch sees no CUDA device"

if ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/cnn-serve-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/cnn-serve-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
HEY=$(command -v hey || echo .whl/hey)
chmod +x "$HEY" 2>/dev/null || true
mkdir -p "$RESULTS"
nvidia-smi -L | tee "$RESULTS/gpu-name.txt"

status=0
timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests/gpu 2>&1 | tee "$RESULTS/gpu-tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# Before the benchmark: it packs the random-init resnet50 that gpu_bench then finds in /tmp.
timeout 90 "$PYTHON" -m bench.decode_parity --device cuda --out "$RESULTS" 2>&1 | tee "$RESULTS/decode-parity.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout 270 "$PYTHON" -m bench.gpu_bench --out "$RESULTS" --hey "$HEY" 2>&1 | tee "$RESULTS/gpu-bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "gpu_check: results in $RESULTS (gpu-results.json and decode-parity.json: copy both to bench/)"
exit $status
