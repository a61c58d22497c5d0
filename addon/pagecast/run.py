"""Start pagecast as a Home Assistant add-on: its options and the Supervisor's MQTT → PAGECAST_*.

Home Assistant writes the add-on's options to /data/options.json. When they name no MQTT
broker, the Supervisor's services API says which one Home Assistant uses (the Mosquitto broker
add-on) and with which credentials. Then this script becomes the image's unprivileged user and
replaces itself with ``pagecast run``, so the agent is the container's main process and gets
its stop signal. Standard library only: no bashio, no s6 (the image is the plain pagecast one).
"""

from __future__ import annotations

import json
import os
import pwd
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

OPTIONS = Path(os.environ.get("PAGECAST_ADDON_OPTIONS", "/data/options.json"))
STATE_DIR = Path(os.environ.get("PAGECAST_ADDON_STATE", "/data/state"))
# The Supervisor answers here inside an add-on; SUPERVISOR_URL points elsewhere (tests).
SUPERVISOR_URL = "http://supervisor"
AGENT_USER = "pagecast"

# Option name → the agent's setting (PAGECAST_ + path, __ between levels).
SIMPLE_OPTIONS = {
    "node_id": "PAGECAST_NODE_ID",
    "cast_device": "PAGECAST_CAST__DEVICE",
    "default_quality": "PAGECAST_STREAM__DEFAULT_QUALITY",
    "public_host": "PAGECAST_STREAM__PUBLIC_HOST",
    "http_port": "PAGECAST_STREAM__HTTP_PORT",
    "mqtt_host": "PAGECAST_MQTT__HOST",
    "mqtt_port": "PAGECAST_MQTT__PORT",
    "mqtt_username": "PAGECAST_MQTT__USERNAME",
    "mqtt_password": "PAGECAST_MQTT__PASSWORD",
}


class AddonError(Exception):
    """A start-up problem the add-on's log should state in one line."""


def options_env(options: Mapping[str, Any]) -> dict[str, str]:
    """The agent's environment for the user's options; empty options keep the agent's default."""
    env = {
        name: str(options[key])
        for key, name in SIMPLE_OPTIONS.items()
        if options.get(key) not in (None, "")
    }
    if options.get("known_hosts"):
        env["PAGECAST_CAST__KNOWN_HOSTS"] = json.dumps(list(options["known_hosts"]))
    if options.get("log_level"):
        env["PAGECAST_LOG__LEVEL"] = str(options["log_level"]).upper()
    for item in options.get("env") or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.startswith("PAGECAST_"):
            raise AddonError(f"env: {key!r} is not PAGECAST_<KEY>=<value>")
        env[key] = value
    return env


def supervisor_mqtt(token: str, base_url: str) -> dict[str, str]:
    """The broker Home Assistant uses, from ``GET /services/mqtt``, as PAGECAST_MQTT__*."""
    request = urllib.request.Request(
        f"{base_url}/services/mqtt", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = json.load(response)["data"]
        host, port = str(data["host"]), str(data["port"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AddonError(
            f"no MQTT broker: none set in the options and the Supervisor's MQTT service "
            f"did not answer ({exc}); install the Mosquitto broker add-on or set mqtt_host"
        ) from exc
    env = {"PAGECAST_MQTT__HOST": host, "PAGECAST_MQTT__PORT": port}
    if data.get("username"):
        env["PAGECAST_MQTT__USERNAME"] = str(data["username"])
        env["PAGECAST_MQTT__PASSWORD"] = str(data.get("password") or "")
    if data.get("ssl"):
        env["PAGECAST_MQTT__TLS__ENABLED"] = "true"
    return env


def agent_env(options: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """The whole environment ``pagecast run`` gets: options win over the Supervisor's broker."""
    env = {k: v for k, v in base.items() if k != "SUPERVISOR_TOKEN"}  # the agent needs no token
    chosen = options_env(options)
    if "PAGECAST_MQTT__HOST" not in chosen:
        token = base.get("SUPERVISOR_TOKEN", "")
        if not token:
            message = "no MQTT broker: set mqtt_host, or run this as a Home Assistant add-on"
            raise AddonError(message)
        env.update(supervisor_mqtt(token, base.get("SUPERVISOR_URL", SUPERVISOR_URL)))
    env.update(chosen)
    if "PAGECAST_STATE_DIR" not in chosen:  # the image's own /state is not kept by the add-on
        env["PAGECAST_STATE_DIR"] = str(STATE_DIR)
    return env


def become_agent_user(state_dir: Path) -> dict[str, str]:
    """Own the state directory as the agent's user and switch to it; HOME etc. for its env."""
    user = pwd.getpwnam(AGENT_USER)
    state_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(state_dir, user.pw_uid, user.pw_gid)
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return {"HOME": user.pw_dir, "USER": AGENT_USER, "LOGNAME": AGENT_USER}


def main() -> None:
    try:
        options = json.loads(OPTIONS.read_text(encoding="utf-8")) if OPTIONS.exists() else {}
        env = agent_env(options, os.environ)
        env.update(become_agent_user(Path(env["PAGECAST_STATE_DIR"])))
    except (AddonError, OSError, ValueError) as exc:
        print(f"pagecast add-on: {exc}", file=sys.stderr)
        sys.exit(1)
    os.execvpe("pagecast", ["pagecast", "run"], env)


if __name__ == "__main__":
    main()
