"""A still page with dedupe on (the default): few frames, yet every segment opens with a
keyframe, keeps its nominal length and continues the timestamps, and the strict receiver
double plays it. Real Xvfb, Chromium, ffmpeg, HTTP and the fake Cast device."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
from pathlib import Path

import pytest
from fakecast import FakeCastDevice
from support.listener import RecordingListener
from support.media import fetch, media_playlist_url
from support.pages import PageServer
from support.streaming import running_backend

from agent.cast.manager import ChromecastManager
from agent.config import CastSettings
from agent.stream.encoder import EncoderSpec, filter_graph
from agent.supervisor.session import StreamRequest

pytestmark = pytest.mark.timeout(180)
SEGMENT_S = 0.5  # stream.latency: low, the default
FRAMES_AT_30_FPS = 15


def frames(body: bytes) -> list[dict[str, object]]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "frame=media_type,key_frame,pts_time",
         "-of", "json", "-i", "pipe:0"],
        input=body, capture_output=True, check=True,
    )  # fmt: skip
    return list(json.loads(result.stdout)["frames"])


def durations(media_text: str) -> list[float]:
    return [float(line[8:].split(",")[0]) for line in media_text.splitlines() if "EXTINF" in line]


async def test_a_still_page_is_deduplicated_and_still_plays_like_a_live_stream(
    tmp_path: Path, page_server: PageServer, fake_tv: FakeCastDevice
) -> None:
    cast = CastSettings(device=fake_tv.host, connect_timeout=3, play_timeout=20)
    async with ChromecastManager(cast) as manager, running_backend(tmp_path, manager) as backend:
        listener = RecordingListener()
        page = StreamRequest(url=page_server.url("/dashboard"), quality="720p")
        session = backend.create_session("s1", page, listener)
        await session.start()
        try:
            await fake_tv.wait_for(lambda: fake_tv.log.consecutive_segments() >= 12, within_s=60)
            [url] = listener.stream_urls
            media = await asyncio.to_thread(_get, await asyncio.to_thread(media_playlist_url, url))
        finally:
            await session.stop()
    assert fake_tv.log.problems() == []
    assert fake_tv.log.probes[0]["video_profile"] == "High"

    # Nominal lengths: segments are cut at the keyframe of each 0.5 s slot.
    listed = durations(media)
    assert abs(statistics.median(listed) - SEGMENT_S) < 0.05, listed
    assert all(0.25 <= d <= 0.9 for d in listed), listed

    segments = sorted(fake_tv.log.segments)[-10:]
    sequences = [sequence for sequence, _ in segments]
    assert sequences == list(range(sequences[0], sequences[0] + len(segments)))
    last_video, last_audio = -1.0, -1.0
    video_counts = []
    for _, body in segments:
        probed = await asyncio.to_thread(frames, body)
        video = [f for f in probed if f["media_type"] == "video"]
        audio = [float(str(f["pts_time"])) for f in probed if f["media_type"] == "audio"]
        assert video, "every segment has a picture"
        assert video[0]["key_frame"] == 1, "every segment opens with a keyframe"
        times = [float(str(f["pts_time"])) for f in video]
        # Timestamps only go forward, within and across segments.
        assert times == sorted(set(times))
        assert times[0] > last_video
        assert audio
        assert audio == sorted(audio)
        assert audio[0] > last_audio
        last_video, last_audio = times[-1], audio[-1]
        video_counts.append(len(video))
    # A dashboard whose clock ticks once a second: a keyframe per segment and a tick every
    # other one, nowhere near the 15 frames per segment of a constant 30 fps.
    assert statistics.mean(video_counts) <= 3, video_counts
    assert max(video_counts) < FRAMES_AT_30_FPS


def _get(url: str) -> str:
    return fetch(url).body.decode()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # Every frame differs: all 60 pass (the first of each slot would anyway).
        ("testsrc2=size=320x180:rate=30", range(58, 61)),
        # A still picture: only the first frame of each 0.5 s slot, 4 or 5 in 2 s.
        ("color=c=navy:size=320x180:rate=30", range(4, 7)),
    ],
)
def test_the_dedupe_filter_passes_changes_and_one_frame_per_slot(
    tmp_path: Path, source: str, expected: range
) -> None:
    spec = EncoderSpec(":0", 320, 180, 30, 500, SEGMENT_S, 6, None)
    graph = filter_graph(spec, dedupe=True)
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", source,
         "-filter_complex", graph, "-map", "[enc]", "-map", "[aud]", "-fps_mode", "vfr",
         "-t", "2", "-f", "framemd5", "-"],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    passed = [line for line in result.stdout.splitlines() if line.startswith("0,")]
    assert len(passed) in expected
