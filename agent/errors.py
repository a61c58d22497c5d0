"""Machine-readable error codes: exceptions inside, ``{"code", "message"}`` at the edges."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    INVALID_URL = "INVALID_URL"
    URL_NOT_ALLOWED = "URL_NOT_ALLOWED"
    UNKNOWN_QUALITY = "UNKNOWN_QUALITY"
    INVALID_DURATION = "INVALID_DURATION"
    DEVICE_NOT_FOUND = "DEVICE_NOT_FOUND"
    DEVICE_UNREACHABLE = "DEVICE_UNREACHABLE"
    PAGE_LOAD_FAILED = "PAGE_LOAD_FAILED"
    PIPELINE_FAILED = "PIPELINE_FAILED"
    CAST_FAILED = "CAST_FAILED"
    UNAUTHORIZED = "UNAUTHORIZED"
    UNKNOWN_SCENE = "UNKNOWN_SCENE"
    # reload, next or volume while nothing streams (or nothing rotates / casts).
    NOT_STREAMING = "NOT_STREAMING"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: ErrorCode
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)  # the code is a StrEnum: a plain string in JSON


class PagecastError(Exception):
    """An expected failure that becomes an error response, status or event with a code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def info(self) -> ErrorInfo:
        return ErrorInfo(self.code, self.message)
