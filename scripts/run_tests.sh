#!/usr/bin/env bash
# Set up everything the tests need (idempotent), then run the test suite. Arguments go to pytest:
#   bash scripts/run_tests.sh                 # everything
#   bash scripts/run_tests.sh -m "not slow"   # the fast part
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/setup_browser.sh" || echo "run_tests: no Chromium, the browser test will skip" >&2
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
