#!/usr/bin/env bash
# HuaTuo's scripts/infer-literature-single.sh: an adapter tuned on medical-literature dialogues answers
# HuaTuo's eight liver-cancer questions, each alone (infer_literature.py --single_or_multi single).
#   LORA_WEIGHTS=./lora-llama-literature bash scripts/infer-literature-single.sh
#   BASE_MODEL=/models/llama-7b-hf bash scripts/infer-literature-single.sh --load_8bit --num_beams 1
# Override from the environment; extra flags go to infer_literature.py. MODE=multi is the multi-turn script.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

"$PYTHON" "$ROOT/infer_literature.py" \
  --single_or_multi "${MODE:-single}" \
  --base_model "${BASE_MODEL:-}" \
  --lora_weights "${LORA_WEIGHTS:-./lora-llama-literature}" \
  --use_lora "${USE_LORA:-True}" \
  --prompt_template "${PROMPT_TEMPLATE:-}" \
  --output_file "${OUTPUT_FILE:-}" \
  "$@"
