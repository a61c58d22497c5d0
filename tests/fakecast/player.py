"""What a Cast receiver does with a LOADed live HLS URL, strictly enough to catch what a real
device rejects: CORS, content types, CODECS without audio, undecodable segments, stalls."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

ORIGIN = "https://www.gstatic.com"  # what the Default Media Receiver's page sends
PLAYLIST_TYPES = {"application/vnd.apple.mpegurl", "application/x-mpegurl"}
SEGMENT_TYPES = {"video/mp2t"}
MAX_LEVEL = 41
KEEP_SEGMENTS = 40

# Cast web receiver detailed error codes (the ones pychromecast names).
MEDIA_DECODE = 102
MEDIA_SRC_NOT_SUPPORTED = 104
SEGMENT_NETWORK = 301
HLS_NETWORK_MASTER_PLAYLIST = 311
HLS_NETWORK_PLAYLIST = 312
HLS_MANIFEST_MASTER = 411
HLS_MANIFEST_PLAYLIST = 412


@dataclass(frozen=True, slots=True)
class Fetch:
    url: str
    kind: str  # master, playlist or segment
    status: int
    ok: bool
    problem: str | None = None
    sequence: int | None = None
    size: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass
class PlayerLog:
    """Everything the device fetched, shared across LOADs (tests read it)."""

    fetches: list[Fetch] = field(default_factory=list)
    segments: list[tuple[int, bytes]] = field(default_factory=list)  # (sequence, body), last few
    probes: list[dict[str, object]] = field(default_factory=list)

    def segment_fetches(self, since: float = 0.0) -> list[Fetch]:
        return [f for f in self.fetches if f.kind == "segment" and f.ok and f.at >= since]

    def consecutive_segments(self, since: float = 0.0) -> int:
        """The longest run of consecutive media sequence numbers fetched fine."""
        best = run = 0
        previous: int | None = None
        for fetch in self.segment_fetches(since):
            assert fetch.sequence is not None
            run = run + 1 if previous is not None and fetch.sequence == previous + 1 else 1
            best = max(best, run)
            previous = fetch.sequence
        return best

    def problems(self) -> list[Fetch]:
        return [f for f in self.fetches if not f.ok]


class PlaybackError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    target_duration: float
    media_sequence: int
    segments: list[tuple[int, str]]  # (sequence, absolute url)
    ended: bool


def parse_master(text: str, base: URL) -> str:
    """The variant URL, after checking the CODECS name H.264 video and AAC audio."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaybackError(HLS_MANIFEST_MASTER, "master playlist without #EXTM3U")
    for index, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            codecs = re.search(r'CODECS="([^"]*)"', line)
            names = codecs.group(1) if codecs else ""
            if "avc1" not in names or "mp4a" not in names:
                raise PlaybackError(
                    HLS_MANIFEST_MASTER, f"CODECS {names!r} must name avc1 video and mp4a audio"
                )
            if index + 1 >= len(lines) or lines[index + 1].startswith("#"):
                raise PlaybackError(HLS_MANIFEST_MASTER, "variant without URI")
            return str(base.join(URL(lines[index + 1])))
    raise PlaybackError(HLS_MANIFEST_MASTER, "no #EXT-X-STREAM-INF variant (not a master playlist)")


def parse_media(text: str, base: URL) -> MediaPlaylist:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaybackError(HLS_MANIFEST_PLAYLIST, "media playlist without #EXTM3U")
    target = None
    sequence = 0
    uris: list[str] = []
    durations: list[float] = []
    pending = False
    for line in lines:
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = float(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            durations.append(float(line[8:].split(",", 1)[0]))
            pending = True
        elif not line.startswith("#") and pending:
            uris.append(str(base.join(URL(line))))
            pending = False
    if target is None:
        raise PlaybackError(HLS_MANIFEST_PLAYLIST, "no #EXT-X-TARGETDURATION")
    # RFC 8216 4.3.3.1: each EXTINF rounded to the nearest integer (0.5 up) <= target duration.
    longest = max(durations, default=0.0)
    if target < 1 or math.floor(longest + 0.5) > target:
        raise PlaybackError(
            HLS_MANIFEST_PLAYLIST,
            f"#EXT-X-TARGETDURATION:{target:g} below a segment of {longest:g} s (RFC 8216 4.3.3.1)",
        )
    segments = [(sequence + i, uri) for i, uri in enumerate(uris)]
    return MediaPlaylist(target, sequence, segments, "#EXT-X-ENDLIST" in lines)


async def probe_segment(body: bytes) -> dict[str, object]:
    """ffprobe's view of one segment, or PlaybackError when a Cast device could not decode it."""
    process = await asyncio.create_subprocess_exec(
        "ffprobe",
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_streams",
        "-i",
        "pipe:0",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await process.communicate(body)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise PlaybackError(MEDIA_DECODE, f"ffprobe failed: {err.decode(errors='replace')[:200]}")
    streams = json.loads(out).get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None or video.get("codec_name") != "h264":
        raise PlaybackError(MEDIA_SRC_NOT_SUPPORTED, f"video must be H.264: {video}")
    if int(video.get("level", 99)) > MAX_LEVEL:
        raise PlaybackError(MEDIA_SRC_NOT_SUPPORTED, f"H.264 level {video.get('level')} > 4.1")
    if video.get("pix_fmt") != "yuv420p":
        raise PlaybackError(MEDIA_SRC_NOT_SUPPORTED, f"pixel format {video.get('pix_fmt')}")
    if audio is None or audio.get("codec_name") != "aac":
        raise PlaybackError(MEDIA_SRC_NOT_SUPPORTED, f"audio must be AAC: {audio}")
    return {
        "video_profile": video.get("profile"),
        "level": video.get("level"),
        "width": video.get("width"),
        "height": video.get("height"),
        "audio": audio.get("codec_name"),
    }


StateCallback = Callable[[str, str | None], None]  # (player_state, idle_reason)


@dataclass
class StallPolicy:
    """Seconds without a new segment before BUFFERING, and before giving up (IDLE/ERROR)."""

    buffering_after: float = 4.0
    error_after: float = 12.0


class HlsPlayer:
    """One LOAD: ``open()`` is what happens before the LOAD is answered, ``play()`` after."""

    def __init__(
        self,
        url: str,
        http: aiohttp.ClientSession,
        log: PlayerLog,
        on_state: StateCallback,
        stall: StallPolicy,
    ) -> None:
        self.url = url
        self._http = http
        self._log = log
        self._on_state = on_state
        self._stall = stall
        self._variant = ""
        self._playlist: MediaPlaylist | None = None

    async def _get(
        self, url: str, kind: str, types: set[str], sequence: int | None = None
    ) -> bytes:
        """GET like a browser-based receiver: with Origin, refusing responses without CORS."""
        problem: str | None = None
        status = 0
        body = b""
        try:
            async with self._http.get(
                url, headers={"Origin": ORIGIN}, timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                status = response.status
                body = await response.read()
                allowed = response.headers.get("Access-Control-Allow-Origin")
                content_type = response.content_type.lower()
                if status != 200:
                    problem = f"HTTP {status}"
                elif allowed not in ("*", ORIGIN):
                    problem = "blocked by CORS: no Access-Control-Allow-Origin"
                elif content_type not in types:
                    problem = f"content type {content_type}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        self._log.fetches.append(
            Fetch(url, kind, status, problem is None, problem, sequence, len(body))
        )
        if problem:
            raise OSError(problem)
        return body

    async def open(self) -> None:
        """Master and media playlist; PlaybackError (becomes LOAD_FAILED) when unplayable."""
        try:
            master = await self._get(self.url, "master", PLAYLIST_TYPES)
        except OSError as exc:
            raise PlaybackError(HLS_NETWORK_MASTER_PLAYLIST, str(exc)) from None
        self._variant = parse_master(master.decode(errors="replace"), URL(self.url))
        self._playlist = await self._fetch_playlist()

    async def _fetch_playlist(self) -> MediaPlaylist:
        try:
            body = await self._get(self._variant, "playlist", PLAYLIST_TYPES)
        except OSError as exc:
            raise PlaybackError(HLS_NETWORK_PLAYLIST, str(exc)) from None
        return parse_media(body.decode(errors="replace"), URL(self._variant))

    async def play(self) -> None:
        """Pull segments until the stream ends or stalls; report player states as they change."""
        playlist = self._playlist
        assert playlist is not None
        # Receivers start about three segments behind the live edge.
        next_sequence = (
            playlist.segments[-3][0] if len(playlist.segments) >= 3 else playlist.media_sequence
        )
        state = "BUFFERING"
        probed = False
        buffered = 0
        last_progress = time.monotonic()
        try:
            while True:
                for sequence, uri in playlist.segments:
                    if sequence < next_sequence:
                        continue
                    try:
                        body = await self._get(uri, "segment", SEGMENT_TYPES, sequence)
                    except OSError as exc:
                        raise PlaybackError(SEGMENT_NETWORK, str(exc)) from None
                    self._log.segments = [
                        *self._log.segments[-KEEP_SEGMENTS + 1 :],
                        (sequence, body),
                    ]
                    if not probed:
                        self._log.probes.append(await probe_segment(body))
                        probed = True
                    next_sequence = sequence + 1
                    buffered += 1
                    last_progress = time.monotonic()
                    if state != "PLAYING" and buffered >= 2:
                        state = "PLAYING"
                        self._on_state(state, None)
                if playlist.ended and next_sequence > playlist.segments[-1][0]:
                    self._on_state("IDLE", "FINISHED")
                    return
                stalled = time.monotonic() - last_progress
                if stalled > self._stall.error_after:
                    raise PlaybackError(SEGMENT_NETWORK, f"no new segment for {stalled:.1f} s")
                if stalled > self._stall.buffering_after and state == "PLAYING":
                    state = "BUFFERING"
                    self._on_state(state, None)
                await asyncio.sleep(playlist.target_duration)
                try:
                    playlist = await self._fetch_playlist()
                except PlaybackError:
                    continue  # a missed poll is a stall, not an immediate failure
        except PlaybackError as exc:
            self._log.probes.append({"error": str(exc), "code": exc.code})
            self._on_state("IDLE", "ERROR")
