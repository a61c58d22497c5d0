"""``/healthz``: whether the agent works, from probes of its parts; each failing part is named.

A container orchestrator (Docker's HEALTHCHECK, Kubernetes) restarts what reports unhealthy, so
a probe fails only for what a restart could fix or a person must look at: the control plane
gone for longer than a broker restart takes, the supervisor dead, or a stream whose encoder
stopped producing segments.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent.errors import ErrorInfo
from agent.supervisor.state import State, Status, StreamFigures


@dataclass(frozen=True, slots=True)
class Check:
    """One part's verdict; ``detail`` says why in a few words."""

    name: str
    ok: bool
    detail: str


Probe = Callable[[], Check]


class MqttLink(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def down_since(self) -> float | None:
        """``time.monotonic()`` when the link was last lost (or the agent started); None while
        connected."""


class Watched(Protocol):
    """What the supervisor offers to health probes."""

    @property
    def status(self) -> Status: ...

    def figures(self) -> StreamFigures | None: ...


def mqtt_probe(link: MqttLink, grace_s: float) -> Probe:
    """Fails once the broker has been out of reach for ``grace_s``: a broker restart or a
    short network drop is no reason to restart the agent."""

    def check() -> Check:
        if link.connected:
            return Check("mqtt", True, "connected")
        since = link.down_since
        away = time.monotonic() - since if since is not None else 0.0
        if away < grace_s:
            return Check("mqtt", True, f"reconnecting for {away:.0f} s")
        return Check("mqtt", False, f"no broker for {away:.0f} s (grace {grace_s:g} s)")

    return check


def task_probe(name: str, alive: Callable[[], bool]) -> Probe:
    def check() -> Check:
        ok = alive()
        return Check(name, ok, "running" if ok else "not running")

    return check


def segment_probe(supervisor: Watched, limit: float) -> Probe:
    """While streaming, the encoder must keep writing segments; the device then plays them.
    ``limit`` is the pipeline's own stall limit: a stream it still counts as running is not
    reported stuck."""

    def check() -> Check:
        if supervisor.status.state is not State.STREAMING:
            return Check("stream", True, f"not streaming ({supervisor.status.state.value})")
        figures = supervisor.figures()
        age = figures.segment_age_s if figures is not None else None
        if age is None:
            return Check("stream", True, "no segment age reported")
        if age > limit:
            return Check("stream", False, f"newest segment {age:.1f} s old (limit {limit:g} s)")
        return Check("stream", True, f"newest segment {age:.1f} s old")

    return check


def startup_probe(fault: Callable[[], ErrorInfo | None]) -> Probe:
    """Fails while a part the agent needs cannot start (agent/startup.py)."""

    def check() -> Check:
        current = fault()
        return Check("backend", current is None, current.message if current else "up")

    return check


class Health:
    """The agent's health: every probe, asked at request time."""

    def __init__(self, probes: Sequence[Probe] = ()) -> None:
        self._probes = list(probes)

    def add(self, probe: Probe) -> None:
        self._probes.append(probe)

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, JSON body); the body names every failing part in ``failing``."""
        checks = [probe() for probe in self._probes]
        failing = [c.name for c in checks if not c.ok]
        body = {
            "ok": not failing,
            "failing": failing,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        return not failing, body
