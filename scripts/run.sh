#!/usr/bin/env bash
# Install what is missing, make sure a broker answers, run the agent. Arguments go to `pagecast`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PAGECAST_VENV:-$ROOT/.venv}"
"$ROOT/scripts/setup.sh"
cd "$ROOT"

# Where the resolved config (file + PAGECAST_* environment) says the broker is.
host="" port=""
read -r host port < <("$VENV/bin/python" - "$@" <<'PY'
import sys

from agent.config import ConfigError, load_settings

path = None
args = sys.argv[1:]
for i, arg in enumerate(args):
    if arg == "--config" and i + 1 < len(args):
        path = args[i + 1]
    elif arg.startswith("--config="):
        path = arg.split("=", 1)[1]
try:
    settings = load_settings(path)
except ConfigError as exc:
    print(f"pagecast: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
print(settings.mqtt.host, settings.mqtt.port)
PY
) || true
[[ -n "$port" ]] || exit 2
broker_pid=""
conf=""
cleanup() {
    [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    [[ -n "$conf" ]] && rm -f "$conf"
    true
}
trap cleanup EXIT
if ! "$VENV/bin/python" -c "import socket,sys; socket.create_connection(('$host', $port), 2)" 2>/dev/null; then
    case "$host" in
        localhost|127.*|::1)
            echo "run: no MQTT broker at $host:$port; starting a local mosquitto for this run"
            conf="$(mktemp)"
            # set_tcp_nodelay: without it mosquitto holds each small reply ~40 ms (Nagle).
            printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n' "$port" >"$conf"
            mosquitto -c "$conf" &
            broker_pid=$!
            for _ in $(seq 50); do
                "$VENV/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
                sleep 0.1
            done
            ;;
        *) echo "run: broker $host:$port does not answer yet; the agent keeps retrying" ;;
    esac
fi

# Not exec: the trap must outlive the agent to stop the broker we started.
"$VENV/bin/pagecast" run "$@" &
agent_pid=$!
trap 'kill -TERM $agent_pid 2>/dev/null' TERM INT
status=0
wait "$agent_pid" || status=$?
# A signal interrupts the first wait; wait again for the agent's own clean exit.
if kill -0 "$agent_pid" 2>/dev/null; then wait "$agent_pid" || status=$?; fi
exit "$status"
