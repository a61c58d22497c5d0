"""What transports share, and what extensions may use to publish through one.

A transport turns messages into ``Dispatcher.handle`` calls and reports the supervisor's
status and events; it serves until ``close()``, which says goodbye before disconnecting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from agent.redact import redact_url
from agent.transport.topics import Topics

PayloadLike = bytes | str | Mapping[str, Any]


def encode(payload: PayloadLike) -> bytes:
    """JSON for mappings, UTF-8 for text, bytes untouched (snapshots are binary).

    Every JSON or text payload leaves with URL passwords masked (status, events, responses).
    """
    if isinstance(payload, bytes):
        return payload
    if not isinstance(payload, str):
        payload = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return redact_url(payload).encode("utf-8")


class Publisher(Protocol):
    """A transport's outbound side, stable across reconnects."""

    @property
    def topics(self) -> Topics: ...

    @property
    def connected(self) -> bool: ...

    async def publish(
        self, topic: str, payload: PayloadLike, *, retain: bool = False, qos: int = 1
    ) -> bool:
        """Publish now; False (and nothing raised) when not connected or the link broke."""

    async def republish(self) -> None:
        """Publish status, info and heartbeat again, then ``online`` (e.g. on a HA birth).

        Like publish(), never raises on a broken link: the next connect announces anyway.
        """
