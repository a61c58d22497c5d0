"""Pure logic of the pipeline: playlists, ffmpeg progress and flags, error phrases, hosts."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from agent.config import BrowserSettings, StreamSettings
from agent.stream.address import local_address_towards, stream_host
from agent.stream.browser import sandbox_enabled
from agent.stream.encoder import EncoderSpec, ffmpeg_args, parse_progress
from agent.stream.hls import master_playlist, media_bitrate_kbps, parse_playlist
from agent.stream.navigation import describe

PLAYLIST = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:41
#EXT-X-INDEPENDENT-SEGMENTS
#EXTINF:1.000000,
seg41.ts
#EXT-X-DISCONTINUITY
#EXTINF:0.500000,
seg42.ts
"""


def test_playlist_parsing() -> None:
    playlist = parse_playlist(PLAYLIST)
    assert playlist.media_sequence == 41
    assert playlist.segments == ("seg41.ts", "seg42.ts")
    assert playlist.durations == (1.0, 0.5)
    assert playlist.last_sequence == 42
    assert parse_playlist("#EXTM3U\n").last_sequence is None


@pytest.mark.parametrize(
    ("latency", "offset"),
    [("low", "-1.125"), ("normal", "-2")],  # 2.25 segments of 0.5 s; 2 segments of 1 s
)
def test_master_playlist_tells_players_where_to_start(latency: str, offset: str) -> None:
    """Both players take EXT-X-START from the master playlist; it must come before the
    variant it applies to, and it is what the bench's latency and stall figures rest on."""
    settings = StreamSettings(latency=latency)
    lines = master_playlist(1280, 720, 2500, settings.start_offset_s).splitlines()
    start = lines.index(f"#EXT-X-START:TIME-OFFSET={offset}")
    variant = next(i for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF:"))
    assert start < variant
    assert 'CODECS="avc1.640029,mp4a.40.2"' in lines[variant]


def test_bitrate_from_segment_sizes(tmp_path: Path) -> None:
    (tmp_path / "media.m3u8").write_text(PLAYLIST)
    (tmp_path / "seg41.ts").write_bytes(b"x" * 250_000)
    (tmp_path / "seg42.ts").write_bytes(b"x" * 125_000)
    assert media_bitrate_kbps(tmp_path) == 2000.0
    assert media_bitrate_kbps(tmp_path / "nowhere") is None


def test_progress_block() -> None:
    progress = parse_progress(
        {
            "frame": "300",
            "fps": "29.97",
            "bitrate": "2456.3kbits/s",
            "drop_frames": "2",
            "dup_frames": "5",
        }
    )
    assert (progress.frames, progress.fps, progress.bitrate_kbps) == (300, 29.97, 2456.3)
    assert (progress.dropped_frames, progress.duplicated_frames) == (2, 5)
    assert parse_progress({"bitrate": "N/A", "fps": "nan?"}).bitrate_kbps is None


def spec(snapshot: float | None = 5.0) -> EncoderSpec:
    return EncoderSpec(":7", 1280, 720, 30, 2500, 1.0, 6, snapshot)


def value_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_ffmpeg_flags_for_cast(tmp_path: Path) -> None:
    args = ffmpeg_args(spec(), tmp_path, append=False)
    assert value_after(args, "-i") == ":7+0,0"
    assert value_after(args, "-video_size") == "1280x720"
    assert (value_after(args, "-profile:v"), value_after(args, "-level:v")) == ("high", "4.1")
    assert value_after(args, "-pix_fmt") == "yuv420p"
    assert value_after(args, "-maxrate") == "2500k"
    assert value_after(args, "-tune") == "zerolatency"  # no lookahead, no B-frames
    assert value_after(args, "-c:a") == "aac"
    assert "anullsrc" in value_after(args, "-filter_complex")
    assert "append_list" not in value_after(args, "-hls_flags")
    assert "delete_segments" in value_after(args, "-hls_flags")
    assert value_after(args, "-probesize") == "32"
    assert args[-1] == str(tmp_path / "snapshot.jpg")
    restarted = ffmpeg_args(spec(), tmp_path, append=True)
    assert "append_list" in value_after(restarted, "-hls_flags")
    without_snapshot = ffmpeg_args(spec(None), tmp_path, append=False)
    assert "snapshot.jpg" not in " ".join(without_snapshot)
    assert without_snapshot[-1] == str(tmp_path / "media.m3u8")


def test_dedupe_keeps_a_keyframe_per_segment_slot(tmp_path: Path) -> None:
    args = ffmpeg_args(spec(None), tmp_path, append=False)
    graph = value_after(args, "-filter_complex")
    # Equal frames are dropped before the colour conversion, except each slot's first.
    assert graph.index("scdet") < graph.index("metadata=mode=select") < graph.index("yuv420p")
    slot = "st(1,floor(time(0)/1));st(2,not(eq(ld(1),ld(0))));st(0,ld(1))"
    assert f"expr='{slot};ld(2)+gt(VALUE1,VALUE2)'" in graph
    assert value_after(args, "-force_key_frames") == f"expr:{slot};ld(2)"
    assert value_after(args, "-fps_mode") == "vfr"
    assert value_after(args, "-hls_time") == "0.5"  # cut at every keyframe


def test_reference_command_is_plain_constant_rate(tmp_path: Path) -> None:
    args = ffmpeg_args(spec(None), tmp_path, append=False, tuned=False)
    assert value_after(args, "-filter_complex").endswith("[0:v]format=yuv420p[enc]")
    assert value_after(args, "-g") == "30"  # a keyframe per 1 s segment
    assert value_after(args, "-force_key_frames") == "expr:gte(t,n_forced*1)"
    assert value_after(args, "-r") == "30"
    assert value_after(args, "-hls_time") == "1"


@pytest.mark.parametrize(
    ("message", "phrase"),
    [
        ("page.goto: net::ERR_NAME_NOT_RESOLVED at http://x/", "DNS lookup failed"),
        ("page.goto: net::ERR_CONNECTION_REFUSED at http://x/", "connection refused"),
        ("page.goto: net::ERR_SOMETHING_NEW at http://x/", "something new"),
        (
            "Navigation failed because page crashed!\nmore",
            "Navigation failed because page crashed!",
        ),
    ],
)
def test_navigation_errors_read_well(message: str, phrase: str) -> None:
    assert describe(message).startswith(phrase)


def test_stream_host_choice() -> None:
    assert stream_host("tv-server.lan", "192.168.1.50") == "tv-server.lan"
    # A device on loopback (a test device) is reached on loopback.
    assert ipaddress.ip_address(stream_host(None, "127.0.0.5")).is_loopback
    lan = local_address_towards("192.0.2.1")
    if lan is not None and not ipaddress.ip_address(lan).is_loopback:
        # Stream-only and a LAN device both get the LAN address, never 127.0.0.1.
        assert stream_host(None, None) == lan
        assert stream_host(None, "192.0.2.77") == lan


def test_sandbox_is_on_unless_root() -> None:
    assert sandbox_enabled(BrowserSettings(sandbox=True))
    assert not sandbox_enabled(BrowserSettings(sandbox=False))
    assert sandbox_enabled(BrowserSettings()) == (os.geteuid() != 0)
