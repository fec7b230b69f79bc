#!/usr/bin/env bash
# Build the instruction data (data/llama_data*.json) from cMeKG (the installed pycmekg package) and our
# knowledge base (data/knowledge/).
#
#   bash scripts/build_dataset.sh                                   # offline templates (committed data)
#   CMEKG=False bash scripts/build_dataset.sh                       # our knowledge base alone
#   MAX_RECORDS=3000 OUTPUT_PATH=/tmp/kb/llama_data.json bash scripts/build_dataset.sh
#   OPENAI_API_KEY=... BACKEND=openai BASE_URL=https://api.openai.com/v1 MODEL=gpt-4o-mini \
#       NUM_WORKERS=8 bash scripts/build_dataset.sh                 # any OpenAI-compatible endpoint
#
# Every setting can be overridden from the environment; unset ones keep build_dataset.py's defaults.
# The API key is read by build_dataset.py from OPENAI_API_KEY and never passed on the command line.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
KB_PATH=${KB_PATH:-data/knowledge}            # file, directory or glob of *.jsonl
OUTPUT_PATH=${OUTPUT_PATH:-data/llama_data.json}  # train split; .valid/.test/.meta.json beside it
BACKEND=${BACKEND:-offline}                   # offline | openai
MAX_RECORDS=${MAX_RECORDS:-9000}              # all splits together; 9000 keeps each file < 10 MB
CMEKG=${CMEKG:-True}                          # add cMeKG's diseases (ours win on a shared name)
SEED=${SEED:-42}

args=(--kb_path "$KB_PATH" --output_path "$OUTPUT_PATH" --backend "$BACKEND"
      --max_records "$MAX_RECORDS" --seed "$SEED" --cmekg "$CMEKG")
# LLM-backend settings: passed only when set, so the script stays thin
[[ -n "${BASE_URL:-}" ]] && args+=(--base_url "$BASE_URL")
[[ -n "${MODEL:-}" ]] && args+=(--model "$MODEL")
[[ -n "${NUM_WORKERS:-}" ]] && args+=(--num_workers "$NUM_WORKERS")
[[ -n "${MAX_RETRIES:-}" ]] && args+=(--max_retries "$MAX_RETRIES")
[[ -n "${TIMEOUT:-}" ]] && args+=(--timeout "$TIMEOUT")

"$PYTHON" -m utils.knowledge.schema validate "$KB_PATH"
exec "$PYTHON" build_dataset.py "${args[@]}" "$@"
