"""The wire format of commands and responses (pydantic: these are the agent's edges)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.errors import ErrorCode, ErrorInfo

MAX_ID_LENGTH = 128


class _Command(BaseModel):
    # strict: "10" is not a duration and 1 is not a bool; forbid: a typo like ``qualty`` must
    # fail loudly instead of silently starting the default quality.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH)


class PageItem(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: str
    seconds: float | None = None


class StartCommand(_Command):
    # One of url, urls (a rotation) or scene (a configured start; other keys override it).
    url: str | None = None
    urls: list[str | PageItem] | None = None
    rotate_s: float | None = None
    scene: str | None = None
    quality: str | None = None
    duration: float | None = None
    revert: bool = False
    device: str | None = Field(None, min_length=1, max_length=256)
    auth: str | None = None
    force: bool = False


class VolumeCommand(_Command):
    level: float | None = Field(None, ge=0.0, le=1.0)
    muted: bool | None = None


class StopCommand(_Command):
    pass


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str

    @classmethod
    def of(cls, info: ErrorInfo) -> ErrorBody:
        return cls(code=info.code, message=info.message)


class Response(BaseModel):
    """The answer to every command, on ``~/response/<cmd>`` and from the webhook."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    command: str
    id: str | None = None
    session_id: str | None = None
    changed: bool | None = None
    error: ErrorBody | None = None
    status: dict[str, Any] | None = Field(None, description="the status snapshot (status command)")

    @classmethod
    def failure(cls, command: str, request_id: str | None, info: ErrorInfo) -> Response:
        return cls(ok=False, command=command, id=request_id, error=ErrorBody.of(info))

    def to_payload(self) -> dict[str, Any]:
        """JSON-able dict; optional fields are left out, ``id`` is always there (maybe null)."""
        payload = self.model_dump(mode="json", exclude_none=True)
        payload.setdefault("id", None)
        return payload
