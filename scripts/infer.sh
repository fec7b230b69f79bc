#!/usr/bin/env bash
# Answer the questions of data/infer.json with the base model + our adapter (HuaTuo's
# scripts/infer.sh). Override from the environment, extra flags go to infer.py:
#   BASE_MODEL=/models/llama-7b-hf LORA_WEIGHTS=./lora-llama-med-e1 bash scripts/infer.sh --load_8bit
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

"$PYTHON" "$ROOT/infer.py" \
  --base_model "${BASE_MODEL:-}" \
  --lora_weights "${LORA_WEIGHTS:-./lora-llama-med-e1}" \
  --use_lora "${USE_LORA:-True}" \
  --instruct_dir "${INFER_DATA:-$ROOT/data/infer.json}" \
  --prompt_template "${PROMPT_TEMPLATE:-}" \
  --output_file "${OUTPUT_FILE:-}" \
  "$@"
