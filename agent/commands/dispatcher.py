"""One entry point for every transport: payload in, Response out, supervisor driven."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace

from loguru import logger

from agent.commands.models import Response
from agent.commands.parse import (
    MAX_PAYLOAD_BYTES,
    Payload,
    decode,
    parse_bare,
    parse_scene,
    parse_start,
    parse_stop,
    parse_volume,
    request_id_of,
)
from agent.config import Settings
from agent.errors import ErrorCode, ErrorInfo, PagecastError
from agent.redact import redact_url
from agent.supervisor.session import StreamRequest
from agent.supervisor.supervisor import Supervisor

COMMANDS = ("start", "stop", "status", "scene", "volume", "reload", "next")
# status is a harmless poke: a repeat must see the current status, not a cached one. A
# repeated reload or next would reload or advance twice.
REPLAYED = frozenset({"start", "stop", "scene", "volume", "reload", "next"})
REPLAY_TTL_S = 300.0
REPLAY_MAX_ENTRIES = 10_000


class ReplayCache:
    """Responses by (command, id) for a while: a repeated QoS 1 delivery is answered, not redone."""

    def __init__(
        self,
        ttl_s: float = REPLAY_TTL_S,
        max_entries: int = REPLAY_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, Response]] = OrderedDict()

    def get(self, command: str, request_id: str) -> Response | None:
        self._expire()
        entry = self._entries.get((command, request_id))
        return entry[1] if entry else None

    def put(self, command: str, request_id: str, response: Response) -> None:
        self._expire()
        self._entries[(command, request_id)] = (self._clock() + self._ttl_s, response)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _expire(self) -> None:
        # Insertion order is expiry order, so only the head can be stale.
        now = self._clock()
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[key]


class Dispatcher:
    """Validates commands and calls the supervisor; knows nothing about MQTT or HTTP."""

    def __init__(
        self, supervisor: Supervisor, settings: Settings, replay: ReplayCache | None = None
    ) -> None:
        self._supervisor = supervisor
        self._settings = settings
        self._replay = replay or ReplayCache()
        self._handlers: dict[str, Callable[[Payload, str | None], Awaitable[Response]]] = {
            "start": self._start,
            "stop": self._stop,
            "status": self._status,
            "scene": self._scene,
            "volume": self._volume,
            "reload": self._reload,
            "next": self._next,
        }

    async def handle(self, command: str, payload: bytes, *, source: str = "") -> Response:
        """Answer ``command``; never raises (a bad command is an error Response)."""
        log = logger.bind(command=command, source=source)
        data: Payload = None
        try:
            data = self._decode(command, payload)
            request_id = request_id_of(data)
            if request_id is not None and command in REPLAYED:
                cached = self._replay.get(command, request_id)
                if cached is not None:
                    log.info("repeated id {!r}: replaying the cached response", request_id)
                    return cached
            handler = self._handlers.get(command)
            if handler is None:
                raise PagecastError(
                    ErrorCode.INVALID_PAYLOAD,
                    f"unknown command {command!r} (known: {', '.join(COMMANDS)})",
                )
            response = await handler(data, request_id)
        except PagecastError as exc:
            request_id = request_id_of(data)
            log.warning("refused {} (id={}): {}", command, request_id, exc)
            response = Response.failure(command, request_id, exc.info)
        except Exception as exc:
            request_id = request_id_of(data)
            log.exception("command {} failed unexpectedly", command)
            info = ErrorInfo(ErrorCode.INTERNAL, f"{exc.__class__.__name__}: {exc}")
            response = Response.failure(command, request_id, info)
        # Only what was done is remembered: a refused command did nothing to repeat, and a
        # sender may fix its payload and resend it under the same id.
        if response.ok and response.id is not None and command in REPLAYED:
            self._replay.put(command, response.id, response)
        return response

    @staticmethod
    def _decode(command: str, payload: bytes) -> Payload:
        try:
            return decode(payload)
        except PagecastError:
            # status takes anything (even garbage) short of an oversized payload.
            if command != "status" or len(payload) > MAX_PAYLOAD_BYTES:
                raise
            return None

    async def _start(self, data: Payload, request_id: str | None) -> Response:
        return self._accept("start", self._unmasked(parse_start(data, self._settings)))

    async def _scene(self, data: Payload, request_id: str | None) -> Response:
        return self._accept("scene", parse_scene(data, self._settings))

    def _accept(self, command: str, request: StreamRequest) -> Response:
        outcome = self._supervisor.start(request)
        logger.bind(session_id=outcome.session_id, url=request.url, quality=request.quality).info(
            "{} accepted (changed={})", command, outcome.changed
        )
        return Response(
            ok=True,
            command=command,
            id=request.request_id,
            session_id=outcome.session_id,
            changed=outcome.changed,
        )

    async def _volume(self, data: Payload, request_id: str | None) -> Response:
        command = parse_volume(data)
        session_id = await self._supervisor.set_volume(command.level, command.muted)
        return Response(ok=True, command="volume", id=command.id, session_id=session_id)

    async def _reload(self, data: Payload, request_id: str | None) -> Response:
        command = parse_bare("reload", data)
        return Response(
            ok=True, command="reload", id=command.id, session_id=self._supervisor.reload()
        )

    async def _next(self, data: Payload, request_id: str | None) -> Response:
        command = parse_bare("next", data)
        return Response(
            ok=True, command="next", id=command.id, session_id=self._supervisor.next_page()
        )

    async def _stop(self, data: Payload, request_id: str | None) -> Response:
        command = parse_stop(data)
        session_id = self._supervisor.status.session_id
        changed = self._supervisor.stop(command.id)
        logger.info("stop accepted (changed={})", changed)
        return Response(
            ok=True, command="stop", id=command.id, session_id=session_id, changed=changed
        )

    async def _status(self, data: Payload, request_id: str | None) -> Response:
        # "status" accepts anything: it is a poke, not a request with parameters.
        status = self._supervisor.status
        return Response(
            ok=True,
            command="status",
            id=request_id,
            session_id=status.session_id,
            status=status.to_payload(),
        )

    def _unmasked(self, request: StreamRequest) -> StreamRequest:
        """The URL on screen for a start that names it as published, with its password masked.

        Home Assistant's quality select (and any client echoing ``status.url``) sends the URL
        back as it saw it; loading that would fail to log in.
        """
        current = self._supervisor.status.url
        if current and request.url != current and request.url == redact_url(current):
            return replace(request, url=current)
        return request
