"""What the supervisor knows, as plain immutable values that observers may keep."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from agent.errors import ErrorInfo


class State(StrEnum):
    IDLE = "idle"
    STARTING = "starting"
    STREAMING = "streaming"
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
    updated_at: datetime = field(default_factory=utcnow)

    def evolve(self, **changes: Any) -> Status:
        return replace(self, updated_at=utcnow(), **changes)

    def to_payload(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "session_id": self.session_id,
            "url": self.url,
            "quality": self.quality,
            "device": self.device,
            "player_state": self.player_state,
            "stream_url": self.stream_url,
            "title": self.title,
            "started_at": iso(self.started_at),
            "ends_at": iso(self.ends_at),
            "error": self.error.to_dict() if self.error else None,
            "request_id": self.request_id,
            "ts": iso(utcnow()),
        }


class EventName(StrEnum):
    STARTED = "started"
    REPLACED = "replaced"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"
    DEVICE_LOST = "device_lost"
    RECOVERED = "recovered"


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

    def to_payload(self) -> dict[str, Any]:
        return {
            "fps": self.fps,
            "bitrate_kbps": self.bitrate_kbps,
            "frames": self.frames,
            "dropped_frames": self.dropped_frames,
            "duplicated_frames": self.duplicated_frames,
            "restarts": self.restarts,
        }
