#!/usr/bin/env bash
# Install what is missing, lint, type-check and run the whole test suite. Arguments go to pytest.
# The container tests (tests/test_container.py: build the image, run it on a Docker engine) take
# minutes of their own, so the suite (and CI) keeps within 15 minutes without them:
# `scripts/test.sh --docker` installs Debian's docker.io if needed, starts the engine and runs
# them as well, failing instead of skipping.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PAGECAST_VENV:-$ROOT/.venv}"
DOCKER=0
if [[ "${1:-}" == "--docker" ]]; then DOCKER=1; shift; fi
"$ROOT/scripts/setup.sh" --dev
cd "$ROOT"
echo "== ruff check"; "$VENV/bin/ruff" check .
echo "== ruff format --check"; "$VENV/bin/ruff" format --check .
echo "== mypy --strict agent"; "$VENV/bin/mypy" --strict agent
if [[ $DOCKER -eq 1 ]]; then
    echo "== docker engine"; "$ROOT/scripts/docker-engine.sh" --install
    export PAGECAST_DOCKER_TESTS=require
else
    echo "== container tests skipped (scripts/test.sh --docker runs them)"
    export PAGECAST_DOCKER_TESTS=skip
fi
echo "== pytest"; "$VENV/bin/pytest" -p no:cacheprovider "$@"
