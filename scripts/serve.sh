#!/usr/bin/env bash
# Serve a tuned adapter over the OpenAI API (/v1/chat/completions, /v1/completions), asking it with
# the prompt it was trained on. With no settings: the quickstart's adapter on the embedded tiny base.
#   bash scripts/quickstart.sh && bash scripts/serve.sh          # http://127.0.0.1:8000/v1
#   BASE_MODEL=/models/llama-7b-hf LORA_WEIGHTS=./lora-llama-med PORT=8001 API_KEY=s3cret bash scripts/serve.sh
#   ENGINE=vllm BASE_MODEL=/models/llama-7b-hf LORA_WEIGHTS=./lora-llama-med bash scripts/serve.sh   # GPU
#   DRY_RUN=True ENGINE=vllm bash scripts/serve.sh                  # print the command, start nothing
# ENGINE=transformers (default) exports the merged checkpoint when missing or stale (MERGED_DIR,
# default <adapter>-merged) and runs `transformers serve` on it behind a validating front;
# ENGINE=vllm runs `vllm serve BASE --enable-lora` with the adapter's chat template. Extra flags go
# to serve_api.py, e.g. --engine_args "--continuous-batching".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LORA_WEIGHTS="${LORA_WEIGHTS:-$ROOT/lora-llama-med-quickstart}"
if [ ! -d "$LORA_WEIGHTS" ]; then
  echo "error: no adapter folder at $LORA_WEIGHTS: train one with bash scripts/quickstart.sh, or set LORA_WEIGHTS=DIR" >&2
  exit 2
fi

exec "$PYTHON" "$ROOT/serve_api.py" \
  --engine "${ENGINE:-transformers}" \
  --base_model "${BASE_MODEL:-}" \
  --lora_weights "$LORA_WEIGHTS" \
  --merged_dir "${MERGED_DIR:-}" \
  --host "${HOST:-127.0.0.1}" \
  --port "${PORT:-8000}" \
  --api_key "${API_KEY:-}" \
  --dry_run "${DRY_RUN:-False}" \
  "$@"
