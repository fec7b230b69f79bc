#!/usr/bin/env bash
# Create .venv in the repository and install what the project needs. Idempotent: a second run
# with unchanged requirements does nothing. torch is installed first and pinned, so that no other
# package pulls an unpinned (multi-GB CUDA) torch ahead of it.
#   VENV=/path/to/venv bash scripts/setup.sh     # another location
#   PYTHON_BIN=python3.11 bash scripts/setup.sh  # another interpreter for the venv
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON_BIN:-python3}"
STAMP="$VENV/.setup-stamp"
want="$(cat "$ROOT/requirements.txt" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
echo "setup: installing torch==2.13.0 into $VENV"
"${pip[@]}" "torch==2.13.0"
echo "setup: installing requirements.txt"
"${pip[@]}" -r "$ROOT/requirements.txt"
echo "$want" > "$STAMP"
"$VENV/bin/python" -c "import torch, transformers, peft; print(f'setup: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
