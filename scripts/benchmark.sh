#!/usr/bin/env bash
# Multiple-choice exams through lm-evaluation-harness, for the base model and each adapter:
# OUT_DIR/benchmark.md / .html (one column per model), benchmark.png, <model>/results.json.
#   bash scripts/benchmark.sh                       # tiny base + the quickstart adapter on kb-mcq, offline
#   BASE_MODEL=/models/llama-7b-hf LORA_WEIGHTS="HuaTuo=./lora-llama-med,Alpaca=./alpaca-lora" \
#   TASKS=kb-mcq,medical-zh bash scripts/benchmark.sh --load_8bit
#   CONFIG=NAME bash scripts/benchmark.sh          # a preset (configs/presets/NAME.yaml) sets its flags
# Extra flags go to benchmark.py (e.g. --exam_file cmexam_test.csv --num_fewshot 5 --limit 100).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

adapters="${LORA_WEIGHTS-}"
if [ -z "${LORA_WEIGHTS+set}" ] && [ -z "${CONFIG:-}" ]; then  # unset: the adapter scripts/quickstart.sh trains, if any
  quickstart="$ROOT/lora-llama-med-quickstart"
  if [ -d "$quickstart" ]; then
    adapters="quickstart=$quickstart"
  else
    echo "note: no adapter at $quickstart (run bash scripts/quickstart.sh or set LORA_WEIGHTS): scoring the base alone" >&2
  fi
fi
add base_model "${BASE_MODEL:-}"
add lora_weights "$adapters"
add tasks "${TASKS:-}"
add output_dir "${OUT_DIR:-}"
exec "$PYTHON" "$ROOT/benchmark.py" "${flags[@]}" "$@"
