#!/usr/bin/env bash
# HuaTuo's scripts/infer-literature-single.sh: an adapter tuned on medical-literature dialogues answers
# HuaTuo's eight liver-cancer questions, each alone (infer_literature.py --single_or_multi single).
#   LORA_WEIGHTS=./lora-llama-literature bash scripts/infer-literature-single.sh
#   BASE_MODEL=/models/llama-7b-hf bash scripts/infer-literature-single.sh --load_8bit --num_beams 1
#   CONFIG=NAME bash scripts/infer-literature-single.sh     # a preset (configs/presets/NAME.yaml) sets its flags
# Override from the environment (a variable left unset leaves its flag to the preset or to
# infer_literature.py's default); extra flags go to infer_literature.py. MODE=multi is the multi-turn script.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

add single_or_multi "${MODE:-single}"
add base_model "${BASE_MODEL:-}"
add lora_weights "${LORA_WEIGHTS:-}"
add use_lora "${USE_LORA:-}"
add prompt_template "${PROMPT_TEMPLATE:-}"
add output_file "${OUTPUT_FILE:-}"

"$PYTHON" "$ROOT/infer_literature.py" "${flags[@]}" "$@"
