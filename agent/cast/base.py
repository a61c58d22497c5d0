"""What a stream session needs from casting, independent of pychromecast."""

from __future__ import annotations

from typing import Protocol

from agent.supervisor.session import SessionListener


class CastDevice(Protocol):
    """A resolved, connected Cast device, reused across sessions."""

    @property
    def name(self) -> str:
        """Friendly name as the device reports it."""

    @property
    def host(self) -> str:
        """IP address the device is reached at (decides which local address serves the stream)."""

    async def play(self, stream_url: str, title: str, listener: SessionListener) -> None:
        """Launch the media receiver, LOAD ``stream_url`` as LIVE HLS and wait for PLAYING.

        Raises PagecastError (CAST_FAILED, DEVICE_UNREACHABLE). Afterwards keeps following the
        device, reporting through ``listener`` and recovering until stop().
        """

    async def stop(self) -> None:
        """Stop our media / quit our app as configured; stop following. Idempotent."""

    async def release(self) -> None:
        """Stop following but leave the receiver as it is: the next play() takes it over."""


class CastManager(Protocol):
    async def resolve(self, spec: str | None) -> CastDevice | None:
        """The device for ``spec`` (a start command's ``device`` or None for the configured one).

        None means stream-only: ``none``, or nothing configured and no device in sight.
        Raises DEVICE_NOT_FOUND / DEVICE_UNREACHABLE.
        """
