"""The warm screen: a stop never waits for the next session's page, and a start at another size
right while (or after) the browser warms up at the default size gets a working screen."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.listener import RecordingListener
from support.pages import PageServer
from support.procs import named
from support.streaming import running_backend, until

from agent.supervisor.session import StreamRequest

pytestmark = pytest.mark.timeout(180)

TINY = {"width": 320, "height": 180, "fps": 10, "bitrate_kbps": 300}
SMALL = {"width": 480, "height": 270, "fps": 10, "bitrate_kbps": 300}


async def test_a_stop_does_not_wait_for_the_spare_page(
    tmp_path: Path, page_server: PageServer
) -> None:
    async with running_backend(
        tmp_path, stream={"default_quality": "tiny"}, qualities={"tiny": TINY}
    ) as backend:
        request = StreamRequest(url=page_server.color("ff0000"), quality="tiny")
        session = backend.create_session("s1", request, RecordingListener())
        await session.start()
        await session.stop()
        screen = backend.screens.current
        assert screen is not None
        spare = screen._spare
        # Still opening when the stop returned: nobody waited for it.
        assert spare is not None
        assert not spare.done()
        await until(spare.done, within=30)
        assert spare.exception() is None

        # The next session takes that page (no new one is opened for it).
        again = backend.create_session("s2", request, RecordingListener())
        await again.start()
        assert screen._spare is None
        await again.stop()


@pytest.mark.parametrize("warmed", [False, True], ids=["while-warming", "after-warming"])
async def test_another_size_than_the_warm_one(
    tmp_path: Path, page_server: PageServer, warmed: bool
) -> None:
    async with running_backend(
        tmp_path, stream={"default_quality": "tiny"}, qualities={"tiny": TINY, "small": SMALL}
    ) as backend:
        if warmed:
            await until(lambda: backend.screens.current is not None, within=60)
            current = backend.screens.current
            assert current is not None
            await until(lambda: current._spare is not None and current._spare.done(), within=60)
        listener = RecordingListener()
        request = StreamRequest(url=page_server.color("00ff00"), quality="small")
        session = backend.create_session("s1", request, listener)
        try:
            await session.start()
            assert listener.stream_urls
            screen = backend.screens.current
            assert screen is not None
            assert (screen.geometry.width, screen.geometry.height) == (480, 270)
        finally:
            await session.stop()
        assert len(named("Xvfb")) == 1
