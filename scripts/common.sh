# Sourced by the launchers: the repository root, the Python to use (the project's .venv when
# scripts/setup.sh made one, else `python`; override with PYTHON=...), and the flags array the
# launcher fills from its environment variables (CONFIG=NAME: a preset, configs/presets/NAME.yaml).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi

flags=()
add() {  # add FLAG VALUE: pass --FLAG VALUE when VALUE is non-empty (else the preset's or the script's default)
  if [ -n "$2" ]; then flags+=("--$1" "$2"); fi
}
add config "${CONFIG:-}"
