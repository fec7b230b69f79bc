# Sourced by the launchers: the repository root and the Python to use (the project's .venv when
# scripts/setup.sh made one, else `python`; override with PYTHON=...).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
