#!/usr/bin/env bash
# The one prepared GPU run (device tool): the GPU check, then the GPU test paths, with results under $OUT.
#   run: bash benchmarks/gpu_check.sh      (timeout_s 600; about 5-8 minutes on one H100/H200)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu_name.txt"
python3 -c "import torch, h5py, click, tqdm; print('torch', torch.__version__)" || exit 2
timeout 420 python3 benchmarks/gpu_check.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
