"""The wire format of commands and responses (pydantic: these are the agent's edges)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from agent.errors import ErrorCode, ErrorInfo

MAX_ID_LENGTH = 128
MAX_DURATION_S = 7 * 24 * 3600
MAX_URL_LENGTH = 8192
ALLOWED_SCHEMES = ("http", "https")


def _http_url(url: str) -> str:
    """An absolute http(s) URL with a host, read as ``urlsplit`` (and Chromium) read it.

    pydantic's HttpUrl would normalise the URL (status must show what was sent) and accepts
    what Chromium would read differently (``http:///dash`` as host ``dash``, inner spaces).
    """
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError("url contains whitespace or control chars")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"url cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise ValueError(f"{url!r} is relative; give an absolute http(s) URL")
    if scheme not in ALLOWED_SCHEMES:
        raise ValueError(f"scheme {scheme!r} is not allowed; only http and https are")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    return url


HttpUrlText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_URL_LENGTH),
    AfterValidator(_http_url),
]
Seconds = Annotated[float, Field(gt=0, le=MAX_DURATION_S, allow_inf_nan=False)]


class _Command(BaseModel):
    # strict: "10" is not a duration and 1 is not a bool; forbid: a typo like ``qualty`` must
    # fail loudly instead of silently starting the default quality.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH)


class StartCommand(_Command):
    url: str
    quality: str | None = None
    duration: float | None = None
    device: str | None = Field(None, min_length=1, max_length=256)
    auth: str | None = None
    force: bool = False


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
