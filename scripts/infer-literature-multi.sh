#!/usr/bin/env bash
# Multi-turn chat (the history is kept) with an adapter tuned on the seed's medical-literature dialogues
# (the seed's scripts/infer-literature-multi.sh). Type a question per line in a terminal, or pipe lines:
#   printf '肝癌能治好吗？\n免疫疗法适合我吗？\n' | LORA_WEIGHTS=./lora-literature bash scripts/infer-literature-multi.sh
# The same settings as infer-literature-single.sh (environment overrides, extra flags to infer.py).
set -euo pipefail
MODE=multi exec bash "$(dirname "${BASH_SOURCE[0]}")/infer-literature-single.sh" "$@"
