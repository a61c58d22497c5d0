"""What ``cast.device`` (or a start command's ``device``) names: nothing, an address or a name."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

CAST_PORT = 8009
_HOSTNAME = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """Exactly one of ``host`` and ``name`` is set."""

    host: str | None = None
    port: int = CAST_PORT
    name: str | None = None


def parse_device_spec(text: str) -> DeviceSpec | None:
    """None for ``none``. An IP address or a dotted host name, each with an optional ``:port``,
    is an address; anything else is a friendly name (``Living Room TV``)."""
    text = text.strip()
    if text.lower() == "none":
        return None
    host, port = text, CAST_PORT
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text)
    if bracketed:
        host, port = bracketed.group(1), int(bracketed.group(2) or CAST_PORT)
    elif text.count(":") == 1 and text.rsplit(":", 1)[1].isdigit():
        host, port = text.rsplit(":", 1)[0], int(text.rsplit(":", 1)[1])
    if _is_address(host) or (host != text and host.replace("-", "").isalnum()):
        return DeviceSpec(host=host, port=port)
    return DeviceSpec(name=text)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.match(host)) and not host.replace(".", "").isdigit()
    return True
