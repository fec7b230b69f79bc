#!/usr/bin/env bash
# Fine-tune a LoRA adapter (HuaTuo's scripts/finetune.sh). A named run is a preset
# (configs/presets/NAME.yaml); extra flags are passed to finetune.py as they are and win over it:
#   CONFIG=tiny-cpu bash scripts/finetune.sh
#   CONFIG=huatuo-llama-7b-8bit BASE_MODEL=/models/llama-7b-hf bash scripts/finetune.sh
#   BASE_MODEL=/models/llama-7b-hf DATA_PATH=./data/llama_data.json bash scripts/finetune.sh --load_8bit
# The variables below keep working. Without CONFIG, an unset one takes HuaTuo's default (and with no
# BASE_MODEL the embedded tiny LLaMA is built and used); with CONFIG only the ones you set are passed,
# so the preset is not overridden by this script's defaults.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# pass FLAG VARIABLE DEFAULT: the variable when set and not empty, else (without CONFIG) the default
pass() {
  if [ -n "${!2:-}" ]; then
    flags+=("--$1" "${!2}")
  elif [ -z "${CONFIG:-}" ]; then
    flags+=("--$1" "$3")
  fi
}

exp_tag="${EXP_TAG:-e1}"
pass base_model BASE_MODEL ""
pass data_path DATA_PATH "$ROOT/data/llama_data.json"
pass output_dir OUTPUT_DIR "./lora-llama-med-$exp_tag"
pass prompt_template_name PROMPT_TEMPLATE med_template
pass micro_batch_size MICRO_BATCH_SIZE auto
pass batch_size BATCH_SIZE 128
pass num_epochs NUM_EPOCHS 10
pass learning_rate LEARNING_RATE 3e-4
pass val_set_size VAL_SET_SIZE 500
# WANDB_PROJECT="" (set but empty) turns wandb off
if [ -n "${WANDB_PROJECT+set}" ]; then
  flags+=(--wandb_project "$WANDB_PROJECT")
elif [ -z "${CONFIG:-}" ]; then
  flags+=(--wandb_project llama_med)
fi
if [ -n "${WANDB_RUN_NAME:-}" ] || [ -n "${EXP_TAG:-}" ] || [ -z "${CONFIG:-}" ]; then
  flags+=(--wandb_run_name "${WANDB_RUN_NAME:-$exp_tag}")
fi

"$PYTHON" "$ROOT/finetune.py" "${flags[@]}" "$@"
