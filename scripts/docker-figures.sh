#!/usr/bin/env bash
# The image's figures for the README: base, build and container-test times, and image sizes.
# Usage: scripts/docker-figures.sh [--cold]   (--cold: build without Docker's layer cache)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PAGECAST_VENV:-$ROOT/.venv}"
cd "$ROOT"
cache=()
[[ "${1:-}" == "--cold" ]] && cache=(--no-cache)
scripts/docker-engine.sh
seconds() { local t0=$SECONDS; "$@" >/dev/null; echo $((SECONDS - t0)); }
base_s=$(seconds scripts/docker-base.sh)
build_s=$(seconds docker build -q --network host "${cache[@]}" -t pagecast:test .)
tests_s=$(seconds env PAGECAST_DOCKER_TESTS=require "$VENV/bin/pytest" -q -p no:cacheprovider \
    tests/test_container.py)
printf '| step | seconds |\n|---|---|\n'
printf '| base image (scripts/docker-base.sh) | %s |\n' "$base_s"
printf '| docker build (%s) | %s |\n' "${cache[*]:-layer cache}" "$build_s"
printf '| tests/test_container.py (4 tests, builds incl.) | %s |\n' "$tests_s"
printf '\n| image | size |\n|---|---|\n'
docker image ls --format '| {{.Repository}}:{{.Tag}} | {{.Size}} |' \
    | grep -E 'debian:bookworm-slim|pagecast(-addon)?:test'
