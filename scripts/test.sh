#!/usr/bin/env bash
# Install what is missing, lint, type-check and run the whole test suite. Arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PAGECAST_VENV:-$ROOT/.venv}"
"$ROOT/scripts/setup.sh" --dev
cd "$ROOT"
echo "== ruff check"; "$VENV/bin/ruff" check .
echo "== ruff format --check"; "$VENV/bin/ruff" format --check .
echo "== mypy --strict agent"; "$VENV/bin/mypy" --strict agent
echo "== pytest"; "$VENV/bin/pytest" -p no:cacheprovider "$@"
