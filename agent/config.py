"""Configuration: a YAML file overridden by ``PAGECAST_*`` environment variables.

Precedence (highest first): environment (``PAGECAST_MQTT__HOST``), the YAML file, defaults.
Secrets are ``SecretStr`` so that printing or publishing a config can never leak them.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.errors import ErrorCode, PagecastError

CONFIG_ENV = "PAGECAST_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.yaml")


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key and the problem."""


def default_node_id() -> str:
    return sanitize_topic_level(socket.gethostname()) or "pagecast"


def default_state_dir() -> Path:
    """Where a checkout keeps its wish: the XDG state directory (the image sets its own)."""
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "pagecast"


def sanitize_topic_level(value: str) -> str:
    """Make a string safe as one MQTT topic level (no wildcards, separators or spaces)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", value).strip("-").lower()


class _Section(BaseModel):
    # A typo in config.yaml (``heartbeat_intreval``) must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid")


class TlsSettings(_Section):
    enabled: bool = False
    ca_certs: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    insecure: bool = Field(False, description="skip certificate and hostname verification")


class MqttSettings(_Section):
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    base_topic: str = "pagecast"
    keepalive: int = Field(30, ge=5, le=3600)
    heartbeat_interval: float = Field(30.0, gt=0, le=3600)
    tls: TlsSettings = TlsSettings()
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    health_grace_s: float = Field(
        30.0, ge=0, description="/healthz fails once the broker is gone this long"
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        # YAML reads ``protocol: 5`` as an int and ``3.1.1`` as a string.
        return str(value) if isinstance(value, int | float) else value

    @field_validator("base_topic")
    @classmethod
    def _valid_base_topic(cls, value: str) -> str:
        value = value.strip("/")
        if not value or any(c in value for c in "#+\0"):
            raise ValueError("must be a non-empty topic without wildcards")
        return value


class QualityPreset(_Section):
    width: int = Field(ge=160, le=1920)
    height: int = Field(ge=120, le=1080)
    fps: int = Field(ge=1, le=30)
    bitrate_kbps: int = Field(ge=100, le=20000)
    zoom: float = Field(1.0, gt=0.2, le=5.0)

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        # yuv420p needs even dimensions.
        if value % 2:
            raise ValueError("must be even")
        return value


DEFAULT_QUALITIES: dict[str, QualityPreset] = {
    "1080p": QualityPreset(width=1920, height=1080, fps=30, bitrate_kbps=5000, zoom=1.0),
    "720p": QualityPreset(width=1280, height=720, fps=30, bitrate_kbps=2500, zoom=1.0),
    "480p": QualityPreset(width=854, height=480, fps=30, bitrate_kbps=1200, zoom=1.0),
    "hub": QualityPreset(width=1024, height=600, fps=30, bitrate_kbps=2000, zoom=1.0),
    "hub-max": QualityPreset(width=1280, height=800, fps=30, bitrate_kbps=2500, zoom=1.0),
}


class StreamSettings(_Section):
    http_host: str = "0.0.0.0"
    http_port: int = Field(8099, ge=0, le=65535)
    public_host: str | None = Field(None, description="host the Cast device uses to reach us")
    default_quality: str = "720p"
    # low: 0.5 s segments, players start 1.125 s behind the live edge; normal: 1 s segments,
    # players start 2 s behind, more slack for a shaky Wi-Fi (start_offset_s).
    # bench/pipeline.py measures the glass-to-glass latency of both.
    latency: Literal["low", "normal"] = "low"
    segment_seconds: float | None = Field(
        None, ge=0.5, le=6.0, description="default: 0.5 with latency low, 1.0 with normal"
    )
    # Frames equal to the one before are not encoded (a still page costs a frame a segment).
    dedupe: bool = True
    encoder: Literal["auto", "x264", "vaapi", "qsv", "v4l2m2m", "nvenc"] = "auto"
    playlist_size: int | None = Field(
        None, ge=3, le=30, description="segments listed; default: 6 s worth of segments"
    )
    page_load_timeout_s: float = Field(20.0, gt=0)
    max_restarts: int = Field(5, ge=0)
    reload_every_s: float | None = Field(
        None, gt=0, description="load the page afresh this often (pages that go stale)"
    )
    work_dir: Path | None = Field(None, description="session files; default: a temp dir")

    @property
    def segment_length_s(self) -> float:
        if self.segment_seconds is not None:
            return self.segment_seconds
        return 0.5 if self.latency == "low" else 1.0

    @property
    def playlist_length(self) -> int:
        if self.playlist_size is not None:
            return self.playlist_size
        return max(3, round(6.0 / self.segment_length_s))

    @property
    def stall_after_s(self) -> float:
        """The newest segment older than this while ffmpeg runs: it hangs (e.g. on a display
        that went away). The pipeline restarts it then and /healthz says so; four segments,
        and never less than 4 s, so that a loaded machine's hiccup is no stall."""
        return max(4 * self.segment_length_s, 4.0)

    @property
    def start_offset_s(self) -> float:
        """How far behind the live edge players start (EXT-X-START in the master playlist).
        Players hold that distance for the whole play, so it is most of the latency (Shaka's
        start-up adds 0.3-0.6 s). It is also their slack: a playing Shaka takes a segment
        at its next buffering tick (0.25 s) after the listing reaches it (agent/stream/hls.py
        fresh_playlist); the rest rides out a late one. Low: two segments stalled Shaka once
        in two 10-minute plays, two and a half put it above 2 s, two and a quarter did
        neither (bench/pipeline.py --soak 600).
        Normal: two whole segments, a second less than players' own default of three, which
        would leave them where a plain pipeline is."""
        return (2.25 if self.latency == "low" else 2.0) * self.segment_length_s


class BrowserSettings(_Section):
    executable: Path = Path("/usr/bin/chromium")
    keep_warm: bool = True
    extra_args: list[str] = []
    sandbox: bool | None = Field(None, description="Chromium's sandbox; default: on unless root")
    recycle_after_h: float | None = Field(
        24.0, gt=0, description="move the stream to a fresh Chromium this often; null: never"
    )


class Cookie(_Section):
    name: str
    value: SecretStr
    path: str = "/"
    http_only: bool = False
    secure: bool = False


class BasicAuth(_Section):
    username: str
    password: SecretStr


class AuthProfile(_Section):
    origin: str = Field(description="scheme://host[:port] these credentials belong to")
    cookies: list[Cookie] = []
    local_storage: dict[str, SecretStr] = {}
    headers: dict[str, SecretStr] = {}
    basic: BasicAuth | None = None

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+", value.rstrip("/")):
            raise ValueError("must look like https://host[:port]")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _secure_needs_https(self) -> AuthProfile:
        # The cookies are bound to the origin's scheme: Chromium refuses a secure one for http.
        insecure = [c.name for c in self.cookies if c.secure and self.origin.startswith("http:")]
        if insecure:
            raise ValueError(f"secure cookies {insecure} need an https origin")
        return self


class CastSettings(_Section):
    device: str | None = Field(
        None, description="friendly name, host or host:port, 'none' for stream-only"
    )
    known_hosts: list[str] = []
    mdns: bool = Field(True, description="find devices by multicast DNS; off: known_hosts only")
    discovery_timeout: float = Field(5.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    play_timeout: float = Field(20.0, gt=0, description="LOAD until PLAYING")
    recover_timeout: float | None = Field(
        None, gt=0, description="give up on a device away this long (seconds); null: never"
    )
    park_after_s: float = Field(
        60.0,
        ge=0,
        description="the screen did not show the stream this long (device away, taken over): "
        "stop Chromium and ffmpeg until it can again",
    )
    on_takeover: Literal["resume", "respect", "reclaim"] = Field(
        "resume",
        description="another app or sender took the screen: resume once it is idle again, "
        "respect (end our stream) or reclaim (cast again at once)",
    )
    resume_after_s: float = Field(
        10.0, ge=0, description="resume: the device showed its idle screen this long"
    )
    stop_action: Literal["quit", "stop_media"] = "quit"


_WEB_URL = r"https?://\S+"


class ScenePage(_Section):
    url: str = Field(pattern=_WEB_URL)
    seconds: float | None = Field(None, ge=2)


class Scene(_Section):
    """A named start (``start {"scene": name}`` or ``cmd/scene``); keys as in a start command."""

    url: str | None = Field(None, pattern=_WEB_URL)
    urls: list[str | ScenePage] | None = Field(None, min_length=1)
    rotate_s: float | None = Field(None, ge=2)
    quality: str | None = None
    duration: float | None = Field(None, gt=0)
    revert: bool = False
    device: str | None = None
    auth: str | None = None

    @model_validator(mode="after")
    def _one_page_or_a_rotation(self) -> Scene:
        if (self.url is None) == (self.urls is None):
            raise ValueError("give either url or urls")
        for item in self.urls or []:
            if isinstance(item, str) and not re.fullmatch(_WEB_URL, item):
                raise ValueError(f"urls: {item!r} is not an http(s) URL")
        if self.revert and self.duration is None:
            raise ValueError("revert needs a duration (when to go back)")
        return self

    def as_command(self) -> dict[str, Any]:
        """The start command this scene stands for."""
        return self.model_dump(mode="json", exclude_defaults=True)


class LogSettings(_Section):
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(False, alias="json")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class HomeAssistantSettings(_Section):
    enabled: bool = True
    prefix: str = "homeassistant"
    status_topic: str = "homeassistant/status"


class ApiSettings(_Section):
    enabled: bool = False
    token: SecretStr | None = None
    allow_unauthenticated: bool = False

    @model_validator(mode="after")
    def _token_when_enabled(self) -> ApiSettings:
        # An open control endpoint must be a decision, not an oversight.
        token = self.token.get_secret_value() if self.token else ""
        if self.enabled and not token and not self.allow_unauthenticated:
            raise ValueError("api.token is required when enabled (or set allow_unauthenticated)")
        return self


class SnapshotSettings(_Section):
    enabled: bool = True
    interval: float = Field(5.0, ge=0.5)
    mqtt: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAGECAST_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    node_id: str = Field(default_factory=default_node_id)
    groups: list[str] = []
    # The wish (what to show) survives restarts here, one file per node id.
    state_dir: Path = Field(default_factory=default_state_dir)
    mqtt: MqttSettings = MqttSettings()
    cast: CastSettings = CastSettings()
    stream: StreamSettings = StreamSettings()
    browser: BrowserSettings = BrowserSettings()
    qualities: dict[str, QualityPreset] = {}
    auth: dict[str, AuthProfile] = {}
    scenes: dict[str, Scene] = {}
    log: LogSettings = LogSettings()
    homeassistant: HomeAssistantSettings = HomeAssistantSettings()
    api: ApiSettings = ApiSettings()
    snapshot: SnapshotSettings = SnapshotSettings()

    @field_validator("node_id", mode="after")
    @classmethod
    def _node_id(cls, value: str) -> str:
        clean = sanitize_topic_level(value)
        if not clean:
            raise ValueError("must contain letters or digits")
        return clean

    @field_validator("groups", mode="after")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        return [sanitize_topic_level(g) for g in value if sanitize_topic_level(g)]

    @field_validator("qualities", mode="after")
    @classmethod
    def _merge_default_qualities(cls, value: dict[str, QualityPreset]) -> dict[str, QualityPreset]:
        # Users add presets (or redefine a built-in one by name); the built-ins stay available.
        return {**DEFAULT_QUALITIES, **value}

    def model_post_init(self, __context: Any) -> None:
        if self.stream.default_quality not in self.qualities:
            known = ", ".join(sorted(self.qualities))
            raise ValueError(
                f"stream.default_quality: unknown quality {self.stream.default_quality!r} "
                f"(known: {known})"
            )
        for name, scene in self.scenes.items():
            if scene.quality is not None and scene.quality not in self.qualities:
                raise ValueError(f"scenes.{name}.quality: unknown quality {scene.quality!r}")
            if scene.auth is not None and scene.auth not in self.auth:
                raise ValueError(f"scenes.{name}.auth: unknown auth profile {scene.auth!r}")

    def auth_profile(self, name: str | None) -> AuthProfile | None:
        """The profile called ``name`` (None for none); an unknown name is INVALID_PAYLOAD."""
        if name is None:
            return None
        profile = self.auth.get(name)
        if profile is None:
            known = ", ".join(sorted(self.auth)) or "none configured"
            raise PagecastError(
                ErrorCode.INVALID_PAYLOAD, f"auth: unknown profile {name!r} (known: {known})"
            )
        return profile

    @property
    def topic_root(self) -> str:
        """``~`` of the topic contract: ``<base_topic>/<node_id>``."""
        return f"{self.mqtt.base_topic}/{self.node_id}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs (see load_settings); the environment wins over it.
        return env_settings, init_settings

    def public_dict(self) -> dict[str, Any]:
        """The config as JSON-able data with every secret masked (for logs, ``info``, CLI)."""
        masked: dict[str, Any] = _mask(self.model_dump(mode="python", by_alias=True))
        return masked


def _mask(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else ""
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def resolve_config_path(cli_path: str | None) -> tuple[Path, bool]:
    """The config file to read and whether the user asked for it explicitly."""
    if cli_path:
        return Path(cli_path), True
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env), True
    return DEFAULT_CONFIG_PATH, False


def load_settings(cli_path: str | None = None) -> Settings:
    """Read the YAML file and the environment; raise ConfigError with one clear message."""
    path, explicit = resolve_config_path(cli_path)
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            # One line: PyYAML's own message spans several, with a source excerpt.
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
            raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        data = loaded
    elif explicit:
        raise ConfigError(f"{path}: config file not found")
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first offending key, as ``mqtt.port: Input should be ...``."""
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "config"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    extra = f" ({exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{key}: {message}{extra}"
