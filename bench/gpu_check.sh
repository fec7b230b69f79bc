#!/usr/bin/env bash
# Every GPU figure of bench/RESULTS.md in one call (no network: random LLaMA-7B-shaped weights built here).
#   bash bench/gpu_check.sh                 # on a GPU (~8 min on one H100/H200)
#   DEVICE=cpu bash bench/gpu_check.sh      # smoke mode: tiny shapes, a few steps, a few minutes on a CPU
# Writes gpu_check.json and gpu_check.md to $OUT when set (the device tool brings it back), else bench/gpu_check/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
export WANDB_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" "$ROOT/bench/gpu_check.py" --device "${DEVICE:-cuda}" --out_dir "${OUT:-$ROOT/bench/gpu_check}"
