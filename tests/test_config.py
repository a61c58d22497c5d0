"""config.yaml documents every key with its default; bad config exits 2 naming the key."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from loguru import logger
from pydantic import BaseModel

from agent.cli import EXIT_CONFIG, main
from agent.config import LogSettings, Settings, load_settings
from agent.logs import setup_logging

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config.yaml"


@pytest.fixture(autouse=True)
def _no_pagecast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("PAGECAST_")]:
        monkeypatch.delenv(name)


def _model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        keys.add(key)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _model_keys(annotation, f"{key}.")
    return keys


def _yaml_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for name, value in data.items():
        keys.add(f"{prefix}{name}")
        if isinstance(value, dict) and value:
            keys |= _yaml_keys(value, f"{prefix}{name}.")
    return keys


def test_config_yaml_lists_every_key() -> None:
    documented = _yaml_keys(yaml.safe_load(CONFIG.read_text()))
    # node_id (the hostname) and state_dir (the user's home) depend on the machine, so they
    # are documented as comments.
    assert "# node_id:" in CONFIG.read_text()
    assert "# state_dir:" in CONFIG.read_text()
    assert _model_keys(Settings) - {"node_id", "state_dir"} == documented


def test_config_yaml_values_are_the_defaults() -> None:
    assert load_settings(str(CONFIG)) == Settings()


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGECAST_MQTT__PORT", "1999")
    monkeypatch.setenv("PAGECAST_LOG__JSON", "true")
    monkeypatch.setenv("PAGECAST_NODE_ID", "Kitchen Display")
    monkeypatch.setenv("PAGECAST_MQTT__TLS__ENABLED", "true")
    settings = load_settings(str(CONFIG))
    assert settings.mqtt.port == 1999
    assert settings.log.json_lines is True
    assert settings.node_id == "kitchen-display"
    assert settings.topic_root == "pagecast/kitchen-display"
    assert settings.mqtt.tls.enabled is True


def test_config_env_var_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("mqtt: {host: broker.lan}\n")
    monkeypatch.setenv("PAGECAST_CONFIG", str(path))
    assert load_settings().mqtt.host == "broker.lan"
    assert load_settings(str(CONFIG)).mqtt.host == "localhost"  # --config wins


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mqtt:\n  heartbeat_intreval: 3\n", "mqtt.heartbeat_intreval: unknown key"),
        ("mqtt: {port: 0}\n", "mqtt.port: Input should be greater than or equal to 1"),
        ("mqtt: {protocol: 4}\n", "mqtt.protocol:"),
        ("mqtt: {base_topic: 'a/#'}\n", "mqtt.base_topic:"),
        ("stream: {default_quality: 4k}\n", "stream.default_quality: unknown quality '4k'"),
        ("qualities: {odd: {width: 641, height: 480, fps: 30, bitrate_kbps: 900}}\n",
         "qualities.odd.width: Value error, must be even"),
        ("log: {level: LOUD}\n", "log.level:"),
        ("mqtt: [1, 2]\n", "mqtt: Input should be"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("mqtt: {port: 1883\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["check-config", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert err.startswith("pagecast: config error: ")
    assert message in err
    assert len(err.splitlines()) == 1


def test_bad_environment_value_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAGECAST_MQTT__PORT", "eighty")
    assert main(["--config", str(CONFIG), "check-config"]) == EXIT_CONFIG
    assert "mqtt.port" in capsys.readouterr().err


def test_missing_explicit_config_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-c", "/nonexistent/pagecast.yaml"]) == EXIT_CONFIG
    assert "config file not found" in capsys.readouterr().err


def test_check_config_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "mqtt": {"username": "agent", "password": "hunter2"},
                "api": {"token": "tok-123"},
                "auth": {
                    "ha": {
                        "origin": "https://ha.local",
                        "headers": {"Authorization": "Bearer abc"},
                        "cookies": [{"name": "s", "value": "cookie-secret"}],
                        "basic": {"username": "v", "password": "basic-secret"},
                    }
                },
            }
        )
    )
    assert main(["check-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    for secret in ("hunter2", "tok-123", "Bearer abc", "cookie-secret", "basic-secret"):
        assert secret not in out
    printed = yaml.safe_load(out)
    assert printed["mqtt"]["password"] == "***"
    assert printed["mqtt"]["username"] == "agent"
    assert printed["auth"]["ha"]["headers"]["Authorization"] == "***"


def test_console_entry_point_exit_status(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("cast: {devcie: tv}\n")
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "pagecast: config error: cast.devcie: unknown key"


def test_logs_human_and_json_lines() -> None:
    human = io.StringIO()
    setup_logging(LogSettings(level="INFO"), sink=human)
    logger.bind(session_id="s1", url="http://a/", quality="hub").info("streaming")
    logger.debug("hidden at INFO")
    line = human.getvalue().strip()
    assert line.endswith("streaming [session_id=s1 url=http://a/ quality=hub]")
    assert "hidden" not in human.getvalue()

    lines = io.StringIO()
    setup_logging(LogSettings(json_lines=True, level="DEBUG"), sink=lines)
    logger.bind(session_id="s2").warning("lost {}", "device")
    __import__("logging").getLogger("paho").error("from stdlib")
    records = [json.loads(text) for text in lines.getvalue().splitlines()]
    assert records[0]["message"] == "lost device"
    assert records[0]["level"] == "WARNING"
    assert records[0]["session_id"] == "s2"
    assert records[1]["message"] == "paho: from stdlib"
    setup_logging(LogSettings())


def test_cast_reconnect_chatter_is_a_warning() -> None:
    lines = io.StringIO()
    setup_logging(LogSettings(json_lines=True), sink=lines)
    stdlib = __import__("logging").getLogger("pychromecast.socket_client")
    stdlib.error("[(10.0.0.5):8009] Failed to connect to service X, retrying in 1.0s")
    stdlib.error("[(10.0.0.5):8009] something else went wrong")
    setup_logging(LogSettings())
    levels = [json.loads(text)["level"] for text in lines.getvalue().splitlines()]
    assert levels == ["WARNING", "ERROR"]
