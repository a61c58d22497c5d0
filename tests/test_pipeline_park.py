"""Parking the pipeline (nobody can watch) and bringing it back, with real Xvfb/Chromium/ffmpeg."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.pages import PageServer
from support.procs import named
from support.streaming import running_backend

from agent.stream.hls import read_playlist
from agent.stream.pipeline import Pipeline, PipelineParts
from agent.supervisor.session import StreamRequest

pytestmark = pytest.mark.timeout(120)


async def test_parked_pipeline_burns_nothing_and_continues_the_playlist(
    tmp_path: Path, page_server: PageServer
) -> None:
    async with running_backend(tmp_path / "work") as backend:
        parts = PipelineParts(backend._settings, backend.screens, tmp_path)
        request = StreamRequest(url=page_server.color("00ff00"), quality="720p")
        pipeline = Pipeline(parts, request, tmp_path / "session")
        await pipeline.start()
        try:
            await pipeline.wait_for_segments(2)
            before = read_playlist(pipeline.directory)
            assert before is not None
            assert before.last_sequence is not None
            pages = [p for p in named("chrom") if "--type=renderer" in p.cmdline]

            await pipeline.park()
            assert pipeline.parked
            assert not named("ffmpeg")
            assert pipeline.trouble() is None  # parked on purpose, not broken
            parked = read_playlist(pipeline.directory)
            assert parked is not None
            assert "#EXT-X-ENDLIST" not in (pipeline.directory / "media.m3u8").read_text()
            still = [p for p in named("chrom") if "--type=renderer" in p.cmdline]
            assert len(still) < len(pages)  # the page's renderer is gone

            await pipeline.unpark()
            assert not pipeline.parked
            assert named("ffmpeg")
            await pipeline.wait_for_segments(1, after=parked.last_sequence)
            after = read_playlist(pipeline.directory)
            assert after is not None
            assert after.last_sequence is not None
            # Numbering goes on from where it stopped: a receiver never sees it go backwards.
            assert after.media_sequence >= before.media_sequence
            assert after.last_sequence > (parked.last_sequence or 0)
            assert pipeline.trouble() is None
        finally:
            await pipeline.stop()
    await asyncio.sleep(0)
    assert not named("ffmpeg")
