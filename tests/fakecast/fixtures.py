"""Fixtures shared by the cast test modules (import them into a test module to use them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakecast.device import FakeCastDevice
from fakecast.live_hls import LiveHlsServer, make_hls_segments
from fakecast.player import StallPolicy


@pytest.fixture(scope="session")
def hls_segments(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_hls_segments(tmp_path_factory.mktemp("hls"))


@pytest.fixture
async def live_hls(hls_segments: list[Path]) -> AsyncIterator[LiveHlsServer]:
    async with LiveHlsServer(hls_segments) as server:
        yield server


@pytest.fixture
async def fake_tv() -> AsyncIterator[FakeCastDevice]:
    async with FakeCastDevice(
        "Fake TV", stall=StallPolicy(buffering_after=2.5, error_after=5)
    ) as tv:
        yield tv
