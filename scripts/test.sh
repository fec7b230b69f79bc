#!/usr/bin/env bash
# HuaTuo's comparison (scripts/test.sh): answer the same questions with the plain base model
# (ori_template, no adapter), with any other adapters, and with ours; then write the table
# (one row per question, one column per model) as OUT_DIR/comparison.md and comparison.html.
#   BASE_MODEL=/models/llama-7b-hf LORA_WEIGHTS=./lora-llama-med-e1 \
#   OTHER_ADAPTERS="Alpaca=./alpaca-lora-7b" bash scripts/test.sh --load_8bit
# Extra flags go to every infer.py run (e.g. --num_beams 1 --max_new_tokens 128); CONFIG=NAME gives each
# run a preset (configs/presets/NAME.yaml: base model, generation...), the per-model flags below win.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

out="${OUT_DIR:-./comparison}"
questions="${INFER_DATA:-$ROOT/data/infer.json}"
mkdir -p "$out"
results=()
shared=()
if [ -n "${CONFIG:-}" ]; then shared+=(--config "$CONFIG"); fi
if [ -n "${BASE_MODEL:-}" ]; then shared+=(--base_model "$BASE_MODEL"); fi

answer() {  # answer NAME TEMPLATE USE_LORA ADAPTER [flags...]
  local name="$1" template="$2" use_lora="$3" adapter="$4"
  shift 4
  echo "== $name" >&2
  "$PYTHON" "$ROOT/infer.py" "${shared[@]}" --instruct_dir "$questions" \
    --prompt_template "$template" --use_lora "$use_lora" --lora_weights "$adapter" \
    --output_file "$out/$name.jsonl" --quiet "$@"
  results+=("$name=$out/$name.jsonl")
}

# 1. the base model, asked the plain question
answer "${BASE_NAME:-base}" ori_template False "" "$@"
# 2. other adapters: OTHER_ADAPTERS="name=dir,name=dir" (template: OTHER_TEMPLATE, else each adapter's run_config.json, else med_template)
IFS=',' read -r -a others <<< "${OTHER_ADAPTERS:-}"
for item in "${others[@]}"; do
  [ -n "$item" ] || continue
  answer "${item%%=*}" "${OTHER_TEMPLATE:-}" True "${item#*=}" "$@"
done
# 3. ours
answer "${OURS_NAME:-HuaTuo}" "${PROMPT_TEMPLATE:-}" True "${LORA_WEIGHTS:-./lora-llama-med-e1}" "$@"

joined="$(IFS=','; echo "${results[*]}")"
"$PYTHON" "$ROOT/compare.py" --results "$joined" --output_dir "$out"
