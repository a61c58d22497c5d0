"""Which host name goes into the stream URL: one the Cast device can actually reach."""

from __future__ import annotations

import ipaddress
import socket

# Any routable address works: connect() on a UDP socket sends nothing, it only asks the
# kernel which local address would be used.
_LAN_PROBE = "192.0.2.1"  # TEST-NET-1, never answered


def local_address_towards(host: str) -> str | None:
    """The local IP the kernel would use to reach ``host``; None when there is no route."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            address: str = probe.getsockname()[0]
            return address
    except OSError:
        return None


def stream_host(public_host: str | None, device_host: str | None) -> str:
    """``stream.public_host``, else the address facing the device, else the primary LAN one.

    Never a loopback address unless the device itself is on loopback: a TV cannot reach
    127.0.0.1 of this machine.
    """
    if public_host:
        return public_host
    if device_host is not None:
        address = local_address_towards(device_host)
        if address is not None and (_is_loopback(device_host) or not _is_loopback(address)):
            return address
    return local_address_towards(_LAN_PROBE) or socket.gethostname()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
