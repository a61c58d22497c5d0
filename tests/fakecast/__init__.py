"""A fake Google Cast device for tests: the real Cast v2 protocol over TLS, and a player that
pulls HLS the way a receiver does, so that a passing test means a real device would play it."""

from fakecast.device import FakeCastDevice, free_loopback_address
from fakecast.live_hls import LiveHlsServer, make_hls_segments
from fakecast.player import Fetch, PlayerLog

__all__ = [
    "FakeCastDevice",
    "Fetch",
    "LiveHlsServer",
    "PlayerLog",
    "free_loopback_address",
    "make_hls_segments",
]
