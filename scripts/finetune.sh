#!/usr/bin/env bash
# Fine-tune a LoRA adapter (HuaTuo's scripts/finetune.sh). Every setting can be overridden from
# the environment; extra flags are passed to finetune.py as they are:
#   BASE_MODEL=/models/llama-7b-hf DATA_PATH=./data/llama_data.json bash scripts/finetune.sh --load_8bit
# With no BASE_MODEL the embedded tiny LLaMA is built and used.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

exp_tag="${EXP_TAG:-e1}"
"$PYTHON" "$ROOT/finetune.py" \
  --base_model "${BASE_MODEL:-}" \
  --data_path "${DATA_PATH:-$ROOT/data/llama_data.json}" \
  --output_dir "${OUTPUT_DIR:-./lora-llama-med-$exp_tag}" \
  --prompt_template_name "${PROMPT_TEMPLATE:-med_template}" \
  --micro_batch_size "${MICRO_BATCH_SIZE:-auto}" \
  --batch_size "${BATCH_SIZE:-128}" \
  --num_epochs "${NUM_EPOCHS:-10}" \
  --learning_rate "${LEARNING_RATE:-3e-4}" \
  --val_set_size "${VAL_SET_SIZE:-500}" \
  --wandb_project "${WANDB_PROJECT-llama_med}" \
  --wandb_run_name "${WANDB_RUN_NAME:-$exp_tag}" \
  "$@"
