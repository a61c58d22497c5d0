"""Keeping one session's stream on its Cast device."""

from __future__ import annotations

import asyncio

from loguru import logger

from agent.cast.base import CastDevice
from agent.supervisor.session import SessionListener

DEVICE_STOP_TIMEOUT_S = 10.0


class Casting:
    """The session's side of the device: show the stream, and leave the screen as asked."""

    def __init__(self, device: CastDevice, listener: SessionListener) -> None:
        self.device = device
        self._listener = listener

    async def show(self, stream_url: str, title: str) -> None:
        logger.info("casting to {}", self.device.name)
        await self.device.play(stream_url, title, self._listener)

    async def stop(self, *, handover: bool) -> None:
        """Close our receiver, or with ``handover`` keep it running for the next session's
        LOAD (same device: the TV does not flash its ambient screen between two streams)."""
        if handover:
            await self.device.release()
            return
        try:
            await asyncio.wait_for(self.device.stop(), DEVICE_STOP_TIMEOUT_S)
        except Exception as exc:
            logger.warning("stopping the Cast device failed: {}", exc)
