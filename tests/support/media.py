"""Looking at a live HLS stream the way a receiver would: over HTTP, with ffprobe/ffmpeg."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from dataclasses import dataclass
from urllib.parse import urljoin


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(url: str) -> Fetched:
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Fetched(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Fetched(error.code, dict(error.headers), error.read())


def media_playlist_url(master_url: str) -> str:
    text = fetch(master_url).body.decode()
    variant = next(line for line in text.splitlines() if line and not line.startswith("#"))
    return urljoin(master_url, variant)


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    sequence: int
    segments: list[str]
    ended: bool


def media_playlist(url: str) -> MediaPlaylist:
    text = fetch(url).body.decode()
    sequence = 0
    segments = []
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line.split(":", 1)[1])
        elif line and not line.startswith("#"):
            segments.append(urljoin(url, line))
    return MediaPlaylist(sequence, segments, "#EXT-X-ENDLIST" in text)


def probe_streams(url: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    streams: list[dict[str, object]] = json.loads(out)["streams"]
    return streams


def average_rgb(source: str | bytes, crop: str | None = None) -> tuple[int, int, int]:
    """Mean colour of the first decoded picture of a URL/file (str) or of image bytes.

    ``crop``: an ffmpeg crop ``w:h:x:y`` to look at one region only.
    """
    data = source if isinstance(source, bytes) else None
    scale = "scale=8:8:flags=area"
    result = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            "pipe:0" if data is not None else str(source),
            "-frames:v",
            "1",
            "-vf",
            f"crop={crop},{scale}" if crop else scale,
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ],
        input=data,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    pixels = len(result) // 3
    return (
        sum(result[0::3]) // pixels,
        sum(result[1::3]) // pixels,
        sum(result[2::3]) // pixels,
    )


def close_to(
    rgb: tuple[int, int, int], expected: tuple[int, int, int], tolerance: int = 40
) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, expected, strict=True))


def frame_colours(segment: bytes) -> list[tuple[int, int, int]]:
    """The mean colour of every decoded picture of a segment, in order (blank-frame checks)."""
    result = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            "pipe:0",
            "-vf",
            "scale=1:1:flags=area",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ],
        input=segment,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return [(result[i], result[i + 1], result[i + 2]) for i in range(0, len(result) - 2, 3)]
