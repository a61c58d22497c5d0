"""The Home Assistant add-on's files and its start script, without Docker.

test_container.py builds the add-on image and streams a page with it; these check what the
Supervisor reads (config.yaml, build.yaml, translations) and run.py's mapping from options and
the Supervisor's MQTT service to the agent's settings, against a real HTTP server.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from aiohttp import web
from support.loopback import serving

from agent import __version__
from agent.config import Settings

ADDON = Path(__file__).resolve().parents[1] / "addon"


def load_run_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("addon_run", ADDON / "pagecast" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = load_run_script()


def read_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


CONFIG = read_yaml(ADDON / "pagecast" / "config.yaml")


def test_repository_and_addon_metadata() -> None:
    repository = read_yaml(ADDON / "repository.yaml")
    assert {"name", "url", "maintainer"} <= set(repository)
    assert {"name", "version", "slug", "description", "arch"} <= set(CONFIG)
    assert CONFIG["version"] == __version__
    assert set(CONFIG["arch"]) == {"amd64", "aarch64"}
    build = read_yaml(ADDON / "pagecast" / "build.yaml")
    assert set(build["build_from"]) == set(CONFIG["arch"])
    dockerfile = (ADDON / "pagecast" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG BUILD_FROM$", dockerfile, re.M)
    assert re.search(r"^FROM \$BUILD_FROM$", dockerfile, re.M)


def test_addon_runs_where_cast_and_the_broker_are_reachable() -> None:
    # mDNS and the TV fetching the stream need the host's network; the broker comes from the
    # Supervisor; SYS_ADMIN only lifts Docker's seccomp rule for the sandbox's namespaces.
    assert CONFIG["host_network"] is True
    assert "mqtt:need" in CONFIG["services"]
    assert CONFIG["privileged"] == ["SYS_ADMIN"]
    assert {"type": "addon_config", "read_only": True} in CONFIG["map"]


def test_every_option_has_a_schema_a_translation_and_a_setting() -> None:
    schema, options = CONFIG["schema"], CONFIG["options"]
    assert set(options) <= set(schema)
    translations = read_yaml(ADDON / "pagecast" / "translations" / "en.yaml")["configuration"]
    assert set(translations) == set(schema)
    assert all({"name", "description"} <= set(entry) for entry in translations.values())
    mapped = set(run.SIMPLE_OPTIONS) | {"known_hosts", "log_level", "env"}
    assert set(schema) == mapped


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("PAGECAST_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_options_become_settings_the_agent_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    options = {
        "node_id": "hall",
        "cast_device": "Hall TV",
        "known_hosts": ["192.168.1.50", "192.168.1.51"],
        "default_quality": "hub",
        "public_host": "192.168.1.2",
        "http_port": 8100,
        "mqtt_host": "broker.lan",
        "mqtt_port": 1884,
        "mqtt_username": "pagecast",
        "mqtt_password": "s3cret",
        "log_level": "debug",
        "env": ["PAGECAST_CAST__ON_TAKEOVER=reclaim", 'PAGECAST_GROUPS=["downstairs"]'],
    }
    assert set(options) == set(CONFIG["schema"])
    settings = settings_from(run.options_env(options), monkeypatch)
    assert settings.node_id == "hall"
    assert settings.cast.device == "Hall TV"
    assert settings.cast.known_hosts == ["192.168.1.50", "192.168.1.51"]
    assert settings.stream.default_quality == "hub"
    assert settings.stream.public_host == "192.168.1.2"
    assert settings.stream.http_port == 8100
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.username) == (
        "broker.lan",
        1884,
        "pagecast",
    )
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "s3cret"
    assert settings.log.level == "DEBUG"
    assert settings.cast.on_takeover == "reclaim"
    assert settings.groups == ["downstairs"]


def test_empty_options_keep_the_agents_defaults() -> None:
    assert run.options_env(CONFIG["options"]) == {
        "PAGECAST_STREAM__DEFAULT_QUALITY": "720p",
        "PAGECAST_LOG__LEVEL": "INFO",
    }


def test_env_option_takes_only_pagecast_settings() -> None:
    with pytest.raises(run.AddonError, match="PAGECAST_"):
        run.options_env({"env": ["LD_PRELOAD=/tmp/x.so"]})
    with pytest.raises(run.AddonError):
        run.options_env({"env": ["PAGECAST_NODE_ID"]})
    assert re.fullmatch(CONFIG["schema"]["env"][0][6:-1], "PAGECAST_NODE_ID=x")


@pytest.fixture
async def supervisor() -> AsyncIterator[tuple[str, list[str]]]:
    """The Supervisor's services API on loopback: the Mosquitto add-on's broker for the token."""
    asked: list[str] = []

    async def mqtt_service(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer addon-token":
            return web.json_response({"result": "error"}, status=401)
        data = {
            "host": "core-mosquitto",
            "port": 1883,
            "ssl": True,
            "protocol": "3.1.1",
            "username": "addons",
            "password": "from-supervisor",
        }
        return web.json_response({"result": "ok", "data": data})

    app = web.Application()
    app.router.add_get("/services/mqtt", mqtt_service)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}", asked


async def test_broker_comes_from_the_supervisor_when_none_is_set(
    supervisor: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, asked = supervisor
    base = {"SUPERVISOR_URL": url, "SUPERVISOR_TOKEN": "addon-token", "PATH": "/usr/bin"}
    base["PAGECAST_STATE_DIR"] = "/state"  # the plain image's; the add-on keeps state in /data
    env = await asyncio.to_thread(run.agent_env, {"node_id": "hall"}, base)
    assert asked == ["Bearer addon-token"]
    assert "SUPERVISOR_TOKEN" not in env, "the agent never needs the Supervisor's token"
    assert env["PATH"] == "/usr/bin"
    assert env["PAGECAST_STATE_DIR"] == "/data/state"
    settings = settings_from(
        {k: v for k, v in env.items() if k.startswith("PAGECAST_")}, monkeypatch
    )
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.username) == (
        "core-mosquitto",
        1883,
        "addons",
    )
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "from-supervisor"
    assert settings.mqtt.tls.enabled is True


async def test_options_win_over_the_supervisor(supervisor: tuple[str, list[str]]) -> None:
    url, asked = supervisor
    base = {"SUPERVISOR_URL": url, "SUPERVISOR_TOKEN": "addon-token"}
    options = {"mqtt_host": "broker.lan", "mqtt_username": "me", "mqtt_password": "pw"}
    env = await asyncio.to_thread(run.agent_env, options, base)
    assert asked == []
    assert env["PAGECAST_MQTT__HOST"] == "broker.lan"
    assert env["PAGECAST_MQTT__USERNAME"] == "me"


async def test_a_refused_supervisor_is_one_clear_line(supervisor: tuple[str, list[str]]) -> None:
    url, _ = supervisor
    base = {"SUPERVISOR_URL": url, "SUPERVISOR_TOKEN": "wrong"}
    with pytest.raises(run.AddonError, match="Mosquitto broker add-on") as raised:
        await asyncio.to_thread(run.agent_env, {}, base)
    assert "\n" not in str(raised.value)
    with pytest.raises(run.AddonError, match="set mqtt_host"):
        run.agent_env({}, {})
