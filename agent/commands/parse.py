"""Payload → validated command, or a PagecastError with the code a sender can act on."""

from __future__ import annotations

import json
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails

from agent.commands.models import MAX_ID_LENGTH, StartCommand, StopCommand
from agent.config import Settings
from agent.errors import ErrorCode, PagecastError
from agent.supervisor.session import StreamRequest

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_DURATION_S = 7 * 24 * 3600
MAX_URL_LENGTH = 8192
ALLOWED_SCHEMES = ("http", "https")

# A type error on these fields means the sender got that field wrong, so say which.
_FIELD_CODES = {
    "url": ErrorCode.INVALID_URL,
    "duration": ErrorCode.INVALID_DURATION,
    "quality": ErrorCode.UNKNOWN_QUALITY,
}
# What a field takes, said after pydantic's own message ("Input should be greater than 0").
_FIELD_HINTS = {
    "duration": f"seconds, > 0 and <= {MAX_DURATION_S} (7 days), or null",
}

Payload = dict[str, Any] | str | None
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _invalid(message: str) -> NoReturn:
    raise PagecastError(ErrorCode.INVALID_PAYLOAD, message)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            _invalid(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> NoReturn:
    _invalid(f"{name} is not a number")


def decode(payload: bytes) -> Payload:
    """A JSON object, a bare string (a URL), or None for an empty payload.

    Anything else (an array, a number, malformed JSON, binary) is INVALID_PAYLOAD.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        _invalid(f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        _invalid("payload is not UTF-8 text")
    if not text:
        return None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        if text[0] in '{["':
            _invalid(f"malformed JSON: {exc.msg} at position {exc.pos}")
        return text  # not JSON at all: a bare URL (checked like any other URL)
    if isinstance(value, dict | str):
        return value
    _invalid(f"expected a JSON object or a URL, got a JSON {type(value).__name__}")


def request_id_of(data: Payload) -> str | None:
    """The sender's ``id`` if it is usable, so that even an error answer can carry it."""
    if isinstance(data, dict):
        value = data.get("id")
        if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH:
            return value
    return None


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


def _validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "payload"
        if first["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields)
            _invalid(f"unknown key {key!r} (known keys: {known})")
        if first["type"] == "missing":
            _invalid(f"{key}: required")
        raise _field_error(str(first["loc"][0]), key, first) from None


def _field_error(field: str, key: str, error: ErrorDetails) -> PagecastError:
    code = _FIELD_CODES.get(field, ErrorCode.INVALID_PAYLOAD)
    if error["type"] == "value_error":  # our own check: its message says it all
        return PagecastError(code, str(error.get("ctx", {}).get("error")))
    hint = f" (expected {_FIELD_HINTS[field]})" if field in _FIELD_HINTS else ""
    return PagecastError(code, f"{key}: {error['msg']}{hint}")


def _checked(adapter: TypeAdapter[T], value: object, field: str) -> T:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise _field_error(field, field, exc.errors()[0]) from None


_URL: TypeAdapter[str] = TypeAdapter(HttpUrlText)
_DURATION: TypeAdapter[float | None] = TypeAdapter(Seconds | None)


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host; every other scheme or shape is INVALID_URL."""
    return _checked(_URL, url, "url")


def check_duration(duration: float | None) -> float | None:
    """> 0 and <= 7 days, or None; anything else is INVALID_DURATION."""
    return _checked(_DURATION, duration, "duration")


def parse_start(data: Payload, settings: Settings) -> StreamRequest:
    if data is None:
        _invalid("start needs a URL or a JSON object with 'url'")
    command = _validate(StartCommand, {"url": data} if isinstance(data, str) else data)
    quality = command.quality or settings.stream.default_quality
    if quality not in settings.qualities:
        known = ", ".join(sorted(settings.qualities))
        raise PagecastError(
            ErrorCode.UNKNOWN_QUALITY, f"unknown quality {quality!r} (known: {known})"
        )
    settings.auth_profile(command.auth)  # an unknown profile is refused here, at the edge
    return StreamRequest(
        url=check_url(command.url),
        quality=quality,
        device=command.device,
        auth=command.auth,
        duration_s=check_duration(command.duration),
        force=command.force,
        request_id=command.id,
    )


def parse_stop(data: Payload) -> StopCommand:
    if data is None:
        return StopCommand()
    if isinstance(data, str):
        _invalid('stop takes an empty payload, {} or {"id": ...}')
    return _validate(StopCommand, data)
