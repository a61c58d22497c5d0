"""What the supervisor knows, as plain immutable values that observers may keep."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from agent.errors import ErrorInfo


class State(StrEnum):
    IDLE = "idle"
    STARTING = "starting"
    STREAMING = "streaming"
    # The wish stands but the screen does not show it (``Status.reason`` says why).
    WAITING = "waiting"
    STOPPING = "stopping"
    ERROR = "error"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


@dataclass(frozen=True, slots=True)
class Status:
    """The retained ``status`` snapshot; ``player_state`` and ``device`` come from the device."""

    state: State = State.IDLE
    session_id: str | None = None
    url: str | None = None
    quality: str | None = None
    device: str | None = None
    player_state: str | None = None
    stream_url: str | None = None
    title: str | None = None
    started_at: datetime | None = None
    ends_at: datetime | None = None
    error: ErrorInfo | None = None
    request_id: str | None = None
    # Why the state is ``waiting``: device_away, taken_over or page_unreachable.
    reason: str | None = None
    # The configured scene shown, if any; a rotation's pages, its period and the page on now.
    scene: str | None = None
    urls: tuple[str, ...] | None = None
    rotate_s: float | None = None
    index: int | None = None
    # During an interrupt: what comes back when it ends (see agent/supervisor/interrupts.py).
    revert_to: dict[str, Any] | None = None
    # The Cast device's volume (0..1) and mute as it reports them.
    volume: float | None = None
    muted: bool | None = None
    updated_at: datetime = field(default_factory=utcnow)

    def evolve(self, **changes: Any) -> Status:
        return replace(self, updated_at=utcnow(), **changes)

    def to_payload(self) -> dict[str, Any]:
        payload = {
            f.name: _json_value(getattr(self, f.name))
            for f in fields(self)
            if f.name != "updated_at"
        }
        payload["ts"] = iso(utcnow())
        return payload


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, ErrorInfo):
        return value.to_dict()
    return value


class EventName(StrEnum):
    STARTED = "started"
    REPLACED = "replaced"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"
    DEVICE_LOST = "device_lost"
    RECOVERED = "recovered"
    RESUMED = "resumed"
    RECYCLED = "recycled"
    PAGE_ERROR = "page_error"
    INTERRUPTED = "interrupted"
    REVERTED = "reverted"


@dataclass(frozen=True, slots=True)
class Event:
    """A lifecycle event on ``~/event``; ``data`` holds event-specific JSON-able fields."""

    name: EventName
    session_id: str | None
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)

    def to_payload(self) -> dict[str, Any]:
        return {
            "event": self.name.value,
            "session_id": self.session_id,
            **self.data,
            "ts": iso(self.at),
        }


@dataclass(frozen=True, slots=True)
class StreamFigures:
    """Encoder progress for the heartbeat."""

    fps: float | None = None
    bitrate_kbps: float | None = None
    frames: int | None = None
    dropped_frames: int | None = None
    duplicated_frames: int | None = None
    restarts: int = 0
    # Seconds since the newest segment was written: a stuck encoder shows here first.
    segment_age_s: float | None = None
    # The H.264 encoder in use: x264 or a hardware one (stream.encoder).
    encoder: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
