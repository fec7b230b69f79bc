#!/usr/bin/env bash
# HuaTuo's scripts/infer-literature-multi.sh: a conversation with an adapter tuned on medical-literature
# dialogues, the history kept (infer_literature.py --single_or_multi multi). Type a question per line in a
# terminal (/reset, /exit), or pipe lines:
#   printf '肝癌能治好吗？\n免疫疗法适合我吗？\n' | LORA_WEIGHTS=./lora-llama-literature bash scripts/infer-literature-multi.sh
# The same settings as infer-literature-single.sh (environment overrides, extra flags to infer_literature.py).
set -euo pipefail
MODE=multi exec bash "$(dirname "${BASH_SOURCE[0]}")/infer-literature-single.sh" "$@"
