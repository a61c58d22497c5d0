"""Finding Cast devices: mDNS through pychromecast, plus ``cast.known_hosts`` for networks
where multicast does not pass (Docker bridge, WSL2, VLANs)."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from uuid import NAMESPACE_URL, UUID, uuid5

from loguru import logger
from pychromecast.const import CAST_TYPE_CHROMECAST
from pychromecast.dial import get_device_info
from pychromecast.discovery import CastBrowser, SimpleCastListener
from pychromecast.models import CastInfo, HostServiceInfo
from zeroconf import Zeroconf

from agent.errors import ErrorCode, PagecastError

_JOIN_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One line of ``pagecast discover``."""

    name: str
    model: str | None
    host: str
    port: int
    uuid: str

    @classmethod
    def of(cls, info: CastInfo) -> DeviceInfo:
        return cls(
            info.friendly_name or info.host, info.model_name, info.host, info.port, str(info.uuid)
        )


class Discovery:
    """One long-lived browser: devices found once stay known, and the zeroconf instance that
    mDNS-found connections resolve through lives as long as the manager."""

    def __init__(
        self,
        known_hosts: list[str],
        *,
        mdns: bool = True,
        on_seen: Callable[[CastInfo], None] | None = None,
    ) -> None:
        self._known_hosts = known_hosts
        self._mdns = mdns
        # Told of every announcement (mDNS) or answer (known_hosts), on the event loop.
        self._on_seen = on_seen
        self._browser: CastBrowser | None = None
        self._zconf: Zeroconf | None = None
        self._found: dict[UUID, CastInfo] = {}
        self._changed = asyncio.Event()
        self._started_at: float | None = None
        # One start at a time; _browser is only ever set on the event loop.
        self._starting = asyncio.Lock()

    @property
    def zconf(self) -> Zeroconf | None:
        return self._zconf

    async def start(self) -> None:
        async with self._starting:
            if self._browser is None:
                await self._start()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        # pychromecast's threads call found() as soon as discovery starts, possibly before
        # the worker below returns: they read the browser from here, never from self.
        started: list[CastBrowser] = []

        def found(uuid: UUID, _service: str) -> None:
            info = started[0].devices.get(uuid) if started else None
            if info is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._add, info)

        def start() -> tuple[CastBrowser, Zeroconf | None]:
            zconf: Zeroconf | None = None
            if self._mdns:
                try:
                    zconf = Zeroconf()
                except OSError as exc:  # no multicast-capable interface
                    logger.warning("mDNS unavailable ({}); using cast.known_hosts only", exc)
            browser = CastBrowser(SimpleCastListener(found, None, found), zconf, self._known_hosts)
            started.append(browser)
            browser.start_discovery()
            return browser, zconf

        self._browser, self._zconf = await asyncio.to_thread(start)
        self._started_at = loop.time()

    def _add(self, info: CastInfo) -> None:
        self._found[info.uuid] = info
        self._changed.set()
        if self._on_seen is not None:
            self._on_seen(info)

    def devices(self) -> list[CastInfo]:
        return sorted(self._found.values(), key=lambda i: (i.friendly_name or "", i.host))

    async def find(self, name: str, within_s: float) -> CastInfo:
        """The device called ``name`` (case-insensitive); DEVICE_NOT_FOUND lists what was seen."""
        await self.start()
        wanted = name.casefold()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while True:
                    for info in self.devices():
                        if (info.friendly_name or "").casefold() == wanted:
                            return info
                    self._changed.clear()
                    await self._changed.wait()
        seen = ", ".join(repr(i.friendly_name) for i in self.devices()) or "none"
        raise PagecastError(
            ErrorCode.DEVICE_NOT_FOUND,
            f"no Cast device named {name!r} found within {within_s:g} s (seen: {seen})",
        )

    async def settle(self, for_s: float) -> list[CastInfo]:
        """Everything found once discovery has run for ``for_s`` seconds.

        Discovery lives as long as the manager, so only the first look waits: later starts
        without a configured device do not pay the discovery time again.
        """
        await self.start()
        assert self._started_at is not None
        remaining = self._started_at + for_s - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        return self.devices()

    async def close(self) -> None:
        async with self._starting:  # a start under way finishes first, then is undone
            browser, self._browser = self._browser, None
        if browser is None:
            return

        def stop() -> None:
            # stop_discovery() joins the known-hosts poller without a timeout; one stuck in a
            # 30 s HTTP request must not hold up shutdown (it is a daemon thread).
            browser.host_browser.stop.set()
            if self._zconf is not None:
                self._zconf.close()
            browser.host_browser.join(_JOIN_TIMEOUT_S)

        await asyncio.to_thread(stop)


def direct_cast_info(host: str, port: int) -> CastInfo:
    """A CastInfo for connecting to an address without mDNS."""
    return CastInfo(
        {HostServiceInfo(host, port)},
        uuid5(NAMESPACE_URL, f"cast://{host}:{port}"),
        None,
        None,
        host,
        port,
        CAST_TYPE_CHROMECAST,
        None,
    )


async def device_name(host: str, http_timeout_s: float) -> str | None:
    """The friendly name from the device's ``/setup/eureka_info``, None if it does not say."""

    def query() -> str | None:
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            status = get_device_info(host, timeout=http_timeout_s)
            return status.friendly_name if status else None
        return None

    return await asyncio.to_thread(query)


async def discover_devices(
    known_hosts: list[str], for_s: float, *, mdns: bool = True
) -> list[DeviceInfo]:
    """What ``pagecast discover`` prints: every device seen within ``for_s`` seconds."""
    discovery = Discovery(known_hosts, mdns=mdns)
    try:
        return [DeviceInfo.of(info) for info in await discovery.settle(for_s)]
    finally:
        await discovery.close()


def format_devices(devices: list[DeviceInfo]) -> str:
    if not devices:
        return "no Cast devices found"
    rows = [("NAME", "MODEL", "HOST", "PORT", "UUID")]
    rows += [(d.name, d.model or "-", d.host, str(d.port), d.uuid) for d in devices]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
