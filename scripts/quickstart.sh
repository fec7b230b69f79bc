#!/usr/bin/env bash
# The main job on a fresh machine, in one command (idempotent):
#   set up .venv -> build the embedded tiny LLaMA -> fine-tune a LoRA adapter on data/llama_data.json
#   -> answer every question of data/infer.json, printing the answers and where the adapter went.
# The tiny base is random-weight, so its answers are not meaningful medicine: the run shows the whole
# pipeline working on CPU in minutes. For a real model: BASE_MODEL=/path/to/llama bash scripts/finetune.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source scripts/common.sh

"$PYTHON" -m utils.model.tiny_base

# Settings for the tiny CPU model: the tiny-cpu preset (configs/presets/tiny-cpu.yaml; the launchers'
# defaults are HuaTuo's, for 7B on a GPU). NUM_EPOCHS=2 etc. still override single settings.
export OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/lora-llama-med-quickstart}"
CONFIG="${CONFIG:-tiny-cpu}" bash scripts/finetune.sh

answers="$OUTPUT_DIR/infer_answers.jsonl"
LORA_WEIGHTS="$OUTPUT_DIR" OUTPUT_FILE="$answers" bash scripts/infer.sh --max_new_tokens 64 --batch_size 16

echo
echo "adapter:  $OUTPUT_DIR (adapter_model.safetensors, run_config.json, metrics.json)"
echo "answers:  $answers"
"$PYTHON" - "$OUTPUT_DIR/metrics.json" <<'PY'
import json, sys
history = json.load(open(sys.argv[1]))["log_history"]
evals = [round(h["eval_loss"], 3) for h in history if "eval_loss" in h]
print("validation loss:", " -> ".join(map(str, evals)))
PY
