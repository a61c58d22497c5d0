"""Logging: loguru for everything, human-readable by default, JSON lines with ``log.json``.

Both sinks mask URL passwords in what they write (messages, bound ``url``, tracebacks).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from agent.config import LogSettings
from agent.redact import redact_url

if TYPE_CHECKING:
    from loguru import Message, Record

HUMAN_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{name}</cyan> {message}{extra[bound]}"
)
# Shown after the message in human logs; JSON lines carry every bound key anyway.
HUMAN_BOUND_KEYS = ("session_id", "url", "quality")


def _bound_suffix(record: Record) -> None:
    extra = record["extra"]
    bound = [f"{key}={extra[key]}" for key in HUMAN_BOUND_KEYS if key in extra]
    extra["bound"] = f" [{' '.join(bound)}]" if bound else ""


def _human_line(sink: TextIO) -> Any:
    def write(message: Message) -> None:
        # The whole formatted line, traceback included: error texts often quote the URL.
        sink.write(redact_url(str(message)))
        sink.flush()

    return write


def _json_line(sink: TextIO) -> Any:
    def write(message: Message) -> None:
        record = message.record
        line: dict[str, Any] = {
            "ts": record["time"].isoformat(timespec="milliseconds"),
            "level": record["level"].name,
            "logger": record["name"],
            "message": record["message"],
            **{key: value for key, value in record["extra"].items() if key != "bound"},
        }
        exc = record["exception"]
        if exc is not None and exc.value is not None:
            line["exception"] = "".join(
                traceback.format_exception(exc.type, exc.value, exc.traceback)
            )
        sink.write(redact_url(json.dumps(line, default=str)) + "\n")
        sink.flush()

    return write


class _ToLoguru(logging.Handler):
    """Route stdlib logging (paho, aiohttp, pychromecast) into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        message = record.getMessage()
        if _is_cast_retry(record, message):
            # pychromecast says ERROR for every reconnect attempt while a TV reboots; the agent
            # reports that loss itself (device_lost, recovered), so it is not an error here.
            level = "WARNING"
        logger.bind(stdlib=record.name).opt(exception=record.exc_info).log(
            level, "{}: {}", record.name, message
        )


def _is_cast_retry(record: logging.LogRecord, message: str) -> bool:
    return (
        record.name.startswith("pychromecast")
        and record.levelno == logging.ERROR
        and "retrying in" in message
    )


def _is_terminal(sink: TextIO) -> bool:
    try:
        return sink.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(settings: LogSettings, sink: TextIO = sys.stderr) -> None:
    logger.remove()
    logger.configure(patcher=_bound_suffix)
    if settings.json_lines:
        logger.add(_json_line(sink), level=settings.level, format="{message}", diagnose=False)
    else:
        logger.add(
            _human_line(sink),
            level=settings.level,
            format=HUMAN_FORMAT,
            colorize=_is_terminal(sink),
            diagnose=False,
        )
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.WARNING, force=True)
