#!/usr/bin/env bash
# One prepared device check (doc/deployment.md): GPU tests, training speed, the paper and the
# default recipe with export and ONNX parity, inference speed of every backend present; one
# table on stdout. Needs only a CUDA PyTorch and the project's Python packages; a missing
# package skips its rows. Data: .gpu_data/ in the checkout (bench/gpu_check.sh --prepare-data N
# fills it from SSVIF_DATA); --cpu-dry-run runs the same checks on CPU with tiny sizes.
#
#   bench/gpu_check.sh [--cpu-dry-run] [--data DIR] [--out DIR] [--budget 330]
#   bench/gpu_check.sh --prepare-data 40
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
exec "$PYTHON" bench/gpu_check.py "$@"
