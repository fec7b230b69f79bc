#!/usr/bin/env bash
# Serve a tuned adapter over the OpenAI API (/v1/chat/completions, /v1/completions), asking it with
# the prompt it was trained on. With no settings: the quickstart's adapter on the embedded tiny base.
#   bash scripts/quickstart.sh && bash scripts/serve.sh          # http://127.0.0.1:8000/v1
#   BASE_MODEL=/models/llama-7b-hf LORA_WEIGHTS=./lora-llama-med PORT=8001 API_KEY=s3cret bash scripts/serve.sh
#   ENGINE=vllm BASE_MODEL=/models/llama-7b-hf LORA_WEIGHTS=./lora-llama-med bash scripts/serve.sh   # GPU
#   DRY_RUN=True ENGINE=vllm bash scripts/serve.sh                  # print the command, start nothing
#   CONFIG=NAME bash scripts/serve.sh                            # a preset (configs/presets/NAME.yaml) sets its flags
# ENGINE=transformers (default) exports the merged checkpoint when missing or stale (MERGED_DIR,
# default <adapter>-merged) and runs `transformers serve` on it behind a validating front;
# ENGINE=vllm runs `vllm serve BASE --enable-lora` with the adapter's chat template. Extra flags go
# to serve_api.py, e.g. --engine_args "--continuous-batching".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ -z "${CONFIG:-}" ]; then  # no preset: the quickstart's adapter unless LORA_WEIGHTS names one
  LORA_WEIGHTS="${LORA_WEIGHTS:-$ROOT/lora-llama-med-quickstart}"
  if [ ! -d "$LORA_WEIGHTS" ]; then
    echo "error: no adapter folder at $LORA_WEIGHTS: train one with bash scripts/quickstart.sh, or set LORA_WEIGHTS=DIR" >&2
    exit 2
  fi
fi
add engine "${ENGINE:-}"
add base_model "${BASE_MODEL:-}"
add lora_weights "${LORA_WEIGHTS:-}"
add merged_dir "${MERGED_DIR:-}"
add host "${HOST:-}"
add port "${PORT:-}"
add api_key "${API_KEY:-}"
add dry_run "${DRY_RUN:-}"

exec "$PYTHON" "$ROOT/serve_api.py" "${flags[@]}" "$@"
