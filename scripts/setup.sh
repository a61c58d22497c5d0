#!/usr/bin/env bash
# Idempotent setup: the Debian packages in system-packages.txt and a virtualenv with pagecast.
# Usage: scripts/setup.sh [--dev]   (--dev adds the test and lint tools, and Node.js for Node-RED)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PAGECAST_VENV:-$ROOT/.venv}"
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo"; fi

packages() { grep -Ev '^\s*(#|$)' "$ROOT/system-packages.txt"; }

missing=()
wanted=($(packages))
# Debian's python3 ships without venv/pip; a python from elsewhere (pyenv, python.org) has both.
python3 -m venv --help >/dev/null 2>&1 || wanted+=(python3-venv)
if [[ $DEV -eq 1 ]] && ! command -v npm >/dev/null 2>&1; then wanted+=(nodejs npm); fi
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup: creating virtualenv $VENV"
    python3 -m venv "$VENV"
fi

# Reinstall only when the project's dependencies changed (the stamp is the pyproject's hash).
extras=""
[[ $DEV -eq 1 ]] && extras="[dev]"
stamp="$VENV/.pagecast-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)${extras:+-dev}"
if [[ ! -e "$stamp" ]]; then
    echo "setup: installing pagecast$extras into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT$extras"
    rm -f "$VENV"/.pagecast-*
    touch "$stamp"
fi
