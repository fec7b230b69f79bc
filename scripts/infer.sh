#!/usr/bin/env bash
# Answer the questions of data/infer.json with the base model + our adapter (HuaTuo's
# scripts/infer.sh). Override from the environment, extra flags go to infer.py:
#   BASE_MODEL=/models/llama-7b-hf LORA_WEIGHTS=./lora-llama-med-e1 bash scripts/infer.sh --load_8bit
#   CONFIG=NAME bash scripts/infer.sh      # a preset, configs/presets/NAME.yaml (or a path), sets its flags
# A variable left unset leaves its flag to the preset (with CONFIG) or to infer.py's default.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

add base_model "${BASE_MODEL:-}"
lora_default=./lora-llama-med-e1  # HuaTuo's script's folder; with a preset, the preset's
if [ -n "${CONFIG:-}" ]; then lora_default=""; fi
add lora_weights "${LORA_WEIGHTS:-$lora_default}"
add use_lora "${USE_LORA:-}"
add instruct_dir "${INFER_DATA:-$ROOT/data/infer.json}"
add prompt_template "${PROMPT_TEMPLATE:-}"
add output_file "${OUTPUT_FILE:-}"

"$PYTHON" "$ROOT/infer.py" "${flags[@]}" "$@"
