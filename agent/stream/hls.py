"""The live media playlist ffmpeg writes: reading it (segments ready, media bitrate) and serving
it as players need it (a valid target duration, the newest segment)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path

MASTER_PLAYLIST = "index.m3u8"
MEDIA_PLAYLIST = "media.m3u8"
SEGMENT_PATTERN = "seg%d.ts"
# What HTTP serves and the Cast LOAD announces. Set by hand: Python's mimetypes (so aiohttp's
# default) calls .ts "text/vnd.trolltech.linguist" (Qt translations).
HLS_CONTENT_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_CONTENT_TYPE = "video/mp2t"


# H.264 High 4.1 (what every encoder is asked for) and AAC-LC: Cast devices reject a master
# playlist whose CODECS do not name both tracks.
_CODECS = "avc1.640029,mp4a.40.2"
_AUDIO_KBPS = 32


def master_playlist(
    width: int, height: int, bitrate_kbps: int, start_offset_s: float | None
) -> str:
    """The master playlist, written by us rather than ffmpeg's ``-master_pl_name``: only we
    can add EXT-X-START, which tells players (hls.js) how far behind the live edge to start;
    without it hls.js starts three *target durations* (whole seconds) behind."""
    # Peak rate as ffmpeg computes it: video and audio rates plus 10 % for the container.
    bandwidth = (bitrate_kbps + _AUDIO_KBPS) * 1100
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if start_offset_s is not None:
        lines.append(f"#EXT-X-START:TIME-OFFSET=-{start_offset_s:g}")
    lines += [
        f'#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={width}x{height},CODECS="{_CODECS}"',
        MEDIA_PLAYLIST,
    ]
    return "\n".join(lines) + "\n"


_TARGET_DURATION = "#EXT-X-TARGETDURATION:"


def conformed(text: str) -> str:
    """The playlist with a target duration RFC 8216 (4.3.3.1) accepts.

    ffmpeg rounds each segment's duration with lrint, which rounds 0.5 to even: half-second
    segments get ``#EXT-X-TARGETDURATION:0``. The RFC rounds to the nearest integer (0.5 is 1)
    and players derive their reload pace and live offset from the value; 0 is no valid one.
    """
    if _TARGET_DURATION not in text:
        return text
    longest = max(parse_playlist(text).durations, default=0.0)
    target = max(1, math.floor(longest + 0.5))
    lines = [
        _conformed_target(line, target) if line.startswith(_TARGET_DURATION) else line
        for line in text.split("\n")
    ]
    return "\n".join(lines)


def _conformed_target(line: str, target: int) -> str:
    try:
        declared = int(line.removeprefix(_TARGET_DURATION).strip())
    except ValueError:
        declared = 0
    return f"{_TARGET_DURATION}{max(declared, target)}"


@dataclass(frozen=True, slots=True)
class Playlist:
    media_sequence: int
    segments: tuple[str, ...]
    durations: tuple[float, ...]

    @property
    def last_sequence(self) -> int | None:
        """Sequence number of the newest segment, None before the first one."""
        return self.media_sequence + len(self.segments) - 1 if self.segments else None


def parse_playlist(text: str) -> Playlist:
    sequence = 0
    segments: list[str] = []
    durations: list[float] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            durations.append(float(line[8:].split(",", 1)[0]))
        elif line and not line.startswith("#"):
            segments.append(line)
    return Playlist(sequence, tuple(segments), tuple(durations))


def read_playlist(directory: Path) -> Playlist | None:
    try:
        return parse_playlist((directory / MEDIA_PLAYLIST).read_text())
    except FileNotFoundError:
        return None


def media_bitrate_kbps(directory: Path) -> float | None:
    """Bitrate of what is on the playlist, from segment sizes (ffmpeg reports N/A for HLS)."""
    playlist = read_playlist(directory)
    if playlist is None:
        return None
    size = 0
    seconds = 0.0
    for name, duration in zip(playlist.segments, playlist.durations, strict=False):
        try:
            size += (directory / name).stat().st_size
        except FileNotFoundError:
            continue
        seconds += duration
    return round(size * 8 / seconds / 1000, 1) if seconds else None


# A playlist younger than this share of a segment is served at once: its newest segment is
# about as new as it gets.
_FRESH_SHARE = 0.2
# Looking for the next listing starts this long before it is due, then every _POLL_S.
_EARLY_S = 0.05
_POLL_S = 0.01


async def fresh_playlist(path: Path, segment_s: float) -> str:
    """The media playlist with the newest segment, waiting for it if it is about to be listed.

    Players start a fixed distance behind the newest segment they see and keep that distance
    (none of them catches up by default). One that asks just before a segment lands starts,
    and stays, up to a segment further behind: with 0.5 s segments the glass-to-glass latency
    varied by half a second from one viewer to the next. So a playlist older than a fifth of a
    segment is held until ffmpeg lists the next one, for at most two segment lengths (a
    stalled encoder gets its old playlist served). Raises FileNotFoundError.
    """
    listed = await asyncio.to_thread(_mtime, path)
    age = time.time() - listed
    if age >= _FRESH_SHARE * segment_s:
        due_in = max(0.0, segment_s - age - _EARLY_S)
        await asyncio.sleep(due_in)
        # No event tells us: ffmpeg renames a new playlist into place.
        for _ in range(math.ceil((2 * segment_s - age - due_in) / _POLL_S)):
            if await asyncio.to_thread(_mtime, path) != listed:
                break
            await asyncio.sleep(_POLL_S)
    return conformed(await asyncio.to_thread(path.read_text))


def _mtime(path: Path) -> float:
    return path.stat().st_mtime
