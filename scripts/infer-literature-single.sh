#!/usr/bin/env bash
# Single-turn chat with an adapter tuned on the seed's medical-literature dialogues
# (the seed's scripts/infer-literature-single.sh). Type a question per line in a terminal, or pipe lines:
#   printf '肝癌能治好吗？\n免疫疗法适合我吗？\n' | LORA_WEIGHTS=./lora-literature bash scripts/infer-literature-single.sh
# Override from the environment; extra flags go to infer.py (e.g. --num_beams 1 --max_new_tokens 128).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

"$PYTHON" "$ROOT/infer.py" \
  --mode "${MODE:-single}" \
  --base_model "${BASE_MODEL:-}" \
  --lora_weights "${LORA_WEIGHTS:-./lora-literature}" \
  --use_lora "${USE_LORA:-True}" \
  --prompt_template "${PROMPT_TEMPLATE:-literature_template}" \
  --output_file "${OUTPUT_FILE:-}" \
  "$@"
