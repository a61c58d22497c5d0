"""Which device a stream goes to, and the connections kept to devices across sessions."""

from __future__ import annotations

import asyncio
from types import TracebackType
from uuid import UUID

from loguru import logger
from pychromecast.models import CastInfo

from agent.cast.connection import CastConnection
from agent.cast.device import ChromecastDevice
from agent.cast.discovery import Discovery, device_name, direct_cast_info
from agent.cast.spec import DeviceSpec, parse_device_spec
from agent.config import CastSettings
from agent.errors import ErrorCode, PagecastError


class ChromecastManager:
    """Implements agent.cast.base.CastManager. Use as ``async with``: leaving it stops our
    media on every device, closes the connections and the discovery."""

    def __init__(self, settings: CastSettings) -> None:
        self._settings = settings
        self._discovery = Discovery(settings.known_hosts, mdns=settings.mdns, on_seen=self._seen)
        self._devices: dict[tuple[str, int], ChromecastDevice] = {}
        self._by_uuid: dict[UUID, ChromecastDevice] = {}
        self._reconnecting: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> ChromecastManager:
        if self._settings.device is None:
            # "The only device around" is decided by discovery: let it look before the first
            # start command arrives instead of making that start wait for it.
            await self._discovery.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in list(self._reconnecting):
            task.cancel()
        await asyncio.gather(*self._reconnecting, return_exceptions=True)
        devices, self._devices = list(self._devices.values()), {}
        await asyncio.gather(*(device.close() for device in devices), return_exceptions=True)
        await self._discovery.close()

    async def resolve(self, spec: str | None) -> ChromecastDevice | None:
        text = spec if spec is not None else self._settings.device
        async with self._lock:
            if text is None:
                return await self._only_device()
            parsed = parse_device_spec(text)
            if parsed is None:
                return None
            return await self._device_for(parsed)

    async def _device_for(self, spec: DeviceSpec) -> ChromecastDevice:
        if spec.host is not None:
            known = self._devices.get((spec.host, spec.port))
            if known is not None:
                return known
            # The name only labels status and logs; asking for it must not delay an
            # unreachable verdict beyond connect_timeout.
            naming = asyncio.create_task(device_name(spec.host, self._settings.connect_timeout))
            try:
                device = await self._connect(direct_cast_info(spec.host, spec.port))
            except BaseException:
                naming.cancel()
                raise
            device.name = await naming or device.name
            return device
        assert spec.name is not None
        for device in self._devices.values():
            if device.name.casefold() == spec.name.casefold():
                return device
        info = await self._discovery.find(spec.name, self._settings.discovery_timeout)
        known = self._devices.get((info.host, info.port))
        return known if known is not None else await self._connect(info)

    async def _only_device(self) -> ChromecastDevice | None:
        """No device configured or asked for: the only one around, or none at all.

        With no device in sight the stream still runs (stream-only), so that a first run
        without a TV shows pagecast working; several devices need a choice.
        """
        if len(self._devices) == 1:
            return next(iter(self._devices.values()))
        found = await self._discovery.settle(self._settings.discovery_timeout)
        if len(found) == 1:
            known = self._devices.get((found[0].host, found[0].port))
            return known if known is not None else await self._connect(found[0])
        if not found:
            logger.warning("no Cast device found and none configured: streaming without casting")
            return None
        names = ", ".join(repr(i.friendly_name) for i in found) or "none"
        raise PagecastError(
            ErrorCode.DEVICE_NOT_FOUND,
            f"no cast.device configured and {len(found)} devices found (seen: {names}); "
            "set cast.device or pass device in the start command",
        )

    async def _connect(self, info: CastInfo) -> ChromecastDevice:
        name = info.friendly_name or info.host
        device = ChromecastDevice(name, info.host, self._settings)
        connection = CastConnection(
            info, self._discovery.zconf, self._settings.connect_timeout, device.on_event
        )
        device.attach(connection)
        await connection.open()
        if not await connection.wait_connected(self._settings.connect_timeout):
            await connection.close()
            raise PagecastError(
                ErrorCode.DEVICE_UNREACHABLE,
                f"{name} ({info.host}:{info.port}) not reachable within "
                f"{self._settings.connect_timeout:g} s",
            )
        logger.info("connected to Cast device {} at {}:{}", name, info.host, info.port)
        self._devices[(info.host, info.port)] = device
        self._by_uuid[info.uuid] = device
        return device

    def _seen(self, info: CastInfo) -> None:
        """A device announced itself (back from a power cut, a reboot): a device we know and
        lost is connected again now instead of at pychromecast's next (doubling) retry."""
        device = self._by_uuid.get(info.uuid)
        if device is None or device.facts.connected:
            return
        logger.info("{} announced itself: reconnecting", device.name)
        task = asyncio.create_task(device.reconnect(), name="cast-reconnect")
        self._reconnecting.add(task)
        task.add_done_callback(self._reconnecting.discard)
