"""Interrupts that go back: which wish an interrupt returns to, and how status shows it.

An interrupt (a start with ``revert`` and a duration) remembers the *base*: the wish that was
on before it. A newer interrupt keeps the same base, a plain start drops it, and when the
interrupt's time is up the base comes back with whatever time it had left.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.supervisor.session import StreamRequest
from agent.supervisor.state import iso

if TYPE_CHECKING:
    from agent.supervisor.supervisor import Wish


def base_for(current: Wish | None, request: StreamRequest) -> Wish | None:
    """What ``request`` returns to when it ends: None unless it is an interrupt."""
    if not request.revert or current is None:
        return None
    # An interrupt of an interrupt goes back to the first one's base, not to the doorbell.
    return current.revert_to or current


def returning(base: Wish, now: datetime) -> StreamRequest | None:
    """The base's request with the time it has left; None when its own time ran out."""
    if base.ends_at is None:
        return base.request
    remaining = (base.ends_at - now).total_seconds()
    if remaining <= 0:
        return None
    return replace(base.request, duration_s=remaining)


def describe(base: Wish | None) -> dict[str, Any] | None:
    """``status.revert_to``: what comes back when the interrupt ends."""
    if base is None:
        return None
    request = base.request
    return {
        "session_id": base.session_id,
        "url": request.url,
        "quality": request.quality,
        "device": request.device,
        "scene": request.scene,
        **rotation_fields(request),
        "ends_at": iso(base.ends_at),
    }


def rotation_fields(request: StreamRequest) -> dict[str, Any]:
    """``urls``/``rotate_s`` of a rotation (None for one page), as status shows them."""
    if not request.pages:
        return {"urls": None, "rotate_s": None}
    return {"urls": tuple(page.url for page in request.pages), "rotate_s": request.rotate_s}
