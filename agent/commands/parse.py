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

from agent.commands.models import MAX_ID_LENGTH, StartCommand, StopCommand, VolumeCommand
from agent.config import Settings
from agent.errors import ErrorCode, PagecastError
from agent.supervisor.session import RotationPage, StreamRequest

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_DURATION_S = 7 * 24 * 3600
MAX_URL_LENGTH = 8192
ALLOWED_SCHEMES = ("http", "https")
MAX_ROTATION_PAGES = 20
# Below this a page is hardly seen before the next one, and each change costs a page load.
MIN_ROTATE_S = 2.0

# A type error on these fields means the sender got that field wrong, so say which.
_FIELD_CODES = {
    "url": ErrorCode.INVALID_URL,
    "duration": ErrorCode.INVALID_DURATION,
    "quality": ErrorCode.UNKNOWN_QUALITY,
    "rotate_s": ErrorCode.INVALID_DURATION,
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
    raw = {"url": data} if isinstance(data, str) else with_scene(data, settings)
    command = _validate(StartCommand, raw)
    quality = command.quality or settings.stream.default_quality
    if quality not in settings.qualities:
        known = ", ".join(sorted(settings.qualities))
        raise PagecastError(
            ErrorCode.UNKNOWN_QUALITY, f"unknown quality {quality!r} (known: {known})"
        )
    settings.auth_profile(command.auth)  # an unknown profile is refused here, at the edge
    pages = _rotation(command)
    duration = check_duration(command.duration)
    if command.revert and duration is None:
        raise PagecastError(
            ErrorCode.INVALID_DURATION, "revert needs a duration: when to go back to what was on"
        )
    return StreamRequest(
        url=pages[0].url if pages else check_url(command.url or ""),
        quality=quality,
        device=command.device,
        auth=command.auth,
        duration_s=duration,
        force=command.force,
        request_id=command.id,
        pages=pages,
        rotate_s=_rotate_s(command.rotate_s, pages),
        revert=command.revert,
        scene=command.scene,
    )


def with_scene(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A start naming a configured scene: the scene's keys, overridden by the command's own."""
    name = data.get("scene")
    if name is None:
        return data
    scene = settings.scenes.get(name) if isinstance(name, str) else None
    if scene is None:
        known = ", ".join(sorted(settings.scenes)) or "none configured"
        raise PagecastError(ErrorCode.UNKNOWN_SCENE, f"unknown scene {name!r} (known: {known})")
    base = scene.as_command()
    if "url" in data or "urls" in data:
        # The command names its own pages: none of the scene's (nor its rotation) apply.
        base = {k: v for k, v in base.items() if k not in ("url", "urls", "rotate_s")}
    return {**base, **data}


def _rotation(command: StartCommand) -> tuple[RotationPage, ...]:
    """The pages of a rotation (empty for a single page), each URL and time checked."""
    if command.urls is None:
        if command.url is None:
            _invalid("url: required (or urls for a rotation, or scene)")
        if command.rotate_s is not None:
            _invalid("rotate_s needs urls (the pages that take turns)")
        return ()
    if command.url is not None:
        _invalid("give url or urls, not both")
    if not 1 <= len(command.urls) <= MAX_ROTATION_PAGES:
        _invalid(f"urls: give 1 to {MAX_ROTATION_PAGES} pages, not {len(command.urls)}")
    pages = []
    for item in command.urls:
        url, seconds = (item, None) if isinstance(item, str) else (item.url, item.seconds)
        pages.append(RotationPage(check_url(url), _page_seconds(seconds)))
    return tuple(pages)


def _page_seconds(seconds: float | None) -> float | None:
    if seconds is not None and not MIN_ROTATE_S <= seconds <= MAX_DURATION_S:
        raise PagecastError(
            ErrorCode.INVALID_DURATION,
            f"a page's seconds must be between {MIN_ROTATE_S:g} and {MAX_DURATION_S}",
        )
    return seconds


def _rotate_s(rotate_s: float | None, pages: tuple[RotationPage, ...]) -> float | None:
    if rotate_s is None and any(page.seconds is None for page in pages):
        raise PagecastError(
            ErrorCode.INVALID_DURATION, "rotate_s: required unless every page has its seconds"
        )
    return _page_seconds(rotate_s)


def parse_bare(command: str, data: Payload) -> StopCommand:
    """``reload``/``next``: an empty payload, ``{}`` or ``{"id": ...}`` (as a stop)."""
    if isinstance(data, str):
        _invalid(f'{command} takes an empty payload, {{}} or {{"id": ...}}')
    return StopCommand() if data is None else _validate(StopCommand, data)


def parse_volume(data: Payload) -> VolumeCommand:
    """``{"level": 0..1}`` and/or ``{"muted": true|false}``."""
    if not isinstance(data, dict):
        _invalid('volume takes {"level": 0..1} and/or {"muted": true|false}')
    command = _validate(VolumeCommand, data)
    if command.level is None and command.muted is None:
        _invalid('volume needs "level" (0..1) or "muted" (true/false)')
    return command


def parse_scene(data: Payload, settings: Settings) -> StreamRequest:
    """``cmd/scene``: a scene name, or a start object naming one (``{"scene": ...}``)."""
    if isinstance(data, str):
        data = {"scene": data.strip()}
    if data is None or "scene" not in data:
        known = ", ".join(sorted(settings.scenes)) or "none configured"
        _invalid(f"scene takes a scene name (known: {known})")
    return parse_start(data, settings)


def parse_stop(data: Payload) -> StopCommand:
    if data is None:
        return StopCommand()
    if isinstance(data, str):
        _invalid('stop takes an empty payload, {} or {"id": ...}')
    return _validate(StopCommand, data)
