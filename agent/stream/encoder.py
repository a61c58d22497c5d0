"""ffmpeg: x11grab of the display → H.264 + silent AAC → live HLS, plus snapshot JPEGs."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from agent.errors import ErrorCode, PagecastError
from agent.stream.hls import MASTER_PLAYLIST, MEDIA_PLAYLIST, SEGMENT_PATTERN, master_playlist
from agent.stream.hwaccel import X264, VideoCodec
from agent.stream.process import ChildProcess, OwnsProcess

FFMPEG = "ffmpeg"
_SILENCE = "anullsrc=channel_layout=stereo:sample_rate=48000"
SNAPSHOT_FILE = "snapshot.jpg"
# scdet's per-frame mean absolute difference to the previous frame (0.000 when equal).
_CHANGE_KEY = "lavfi.scd.mafd"


@dataclass(frozen=True, slots=True)
class EncoderSpec:
    display: str
    width: int
    height: int
    fps: int
    bitrate_kbps: int
    segment_seconds: float
    playlist_size: int
    snapshot_interval_s: float | None
    # Encode only frames that differ from the one before (plus one per segment, its keyframe).
    dedupe: bool = True
    codec: VideoCodec = X264
    # EXT-X-START in the master playlist: how far behind the live edge players start.
    start_offset_s: float | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """ffmpeg's latest ``-progress`` report."""

    frames: int | None = None
    fps: float | None = None
    bitrate_kbps: float | None = None
    dropped_frames: int | None = None
    duplicated_frames: int | None = None


def ffmpeg_args(
    spec: EncoderSpec, directory: Path, *, append: bool, tuned: bool = True
) -> list[str]:
    """The ffmpeg command line.

    ``tuned=False`` gives the plain command with the same encoder settings (constant frame
    rate, every frame converted and encoded): the benchmark's reference pipeline.
    """
    dedupe = tuned and spec.dedupe
    return [
        *_GLOBAL,
        *spec.codec.device_args,
        *_capture(spec),
        "-filter_complex",
        filter_graph(spec, dedupe=dedupe),
        "-map",
        "[enc]",
        "-map",
        "[aud]",
        *spec.codec.args(spec.bitrate_kbps),
        *(_keyframes_by_slot(spec) if dedupe else _keyframes_by_time(spec)),
        *_audio(dedupe=dedupe),
        *_hls(spec, directory, append=append, dedupe=dedupe),
        *_snapshot(spec, directory),
    ]


_GLOBAL = [
    FFMPEG,
    "-hide_banner",
    "-nostdin",
    "-y",  # a restart overwrites the snapshot of the ffmpeg it replaces
    "-loglevel",
    "error",
    "-nostats",
    "-progress",
    "pipe:1",
    "-stats_period",
    "1",
]

# The silent track runs this far ahead of the video. The muxer's interleaving holds each video
# packet until an audio packet at or after it is queued, and the AAC encoder hands out its
# packets about 0.1 s after the graph produced their samples, while the graph produces audio
# only up to the newest video frame. With a still page that frame is the next keyframe, so
# every segment was listed one segment late: a switch took 1.0 s instead of 0.5 s.
# Twice what the encoder holds back; a silent track has nothing to keep in sync.
AUDIO_LEAD_S = 0.2


def _audio(*, dedupe: bool) -> list[str]:
    lead = ["-bsf:a", f"setts=ts=TS+{AUDIO_LEAD_S:g}/TB"] if dedupe else []
    return ["-c:a", "aac", "-b:a", "32k", *lead]  # what hls.master_playlist declares


def _capture(spec: EncoderSpec) -> list[str]:
    return [
        # x11grab's format is known: probing it only delays the first segment.
        "-probesize", "32", "-analyzeduration", "0", "-fflags", "nobuffer",
        "-f", "x11grab", "-draw_mouse", "0", "-framerate", str(spec.fps),
        "-video_size", f"{spec.width}x{spec.height}", "-i", f"{spec.display}+0,0",
    ]  # fmt: skip


def filter_graph(spec: EncoderSpec, *, dedupe: bool) -> str:
    """Silent audio ``[aud]``, video for the encoder ``[enc]``, snapshots ``[jpg]``.

    The silent track comes from the same graph as the video. As a separate lavfi input it
    would starve next to the sparse snapshot output: ffmpeg serves the output that lags most,
    which is the snapshot, and the HLS muxer then waits for audio for seconds.
    """
    video = "[0:v]" + (_dedupe(spec) + "," if dedupe else "") + "format=yuv420p"
    video += spec.codec.upload
    if spec.snapshot_interval_s is None:
        return f"{_SILENCE}[aud];{video}[enc]"
    # select, not fps: it passes the very first frame at once, so the snapshot output starts
    # immediately; ffmpeg holds back all outputs until every one has started. setpts then
    # dates each snapshot one interval ahead: ffmpeg always serves the output that lags most,
    # and a snapshot output stuck at its last (old) picture would win that every time,
    # starving the audio the HLS muxer waits for.
    interval = f"{spec.snapshot_interval_s:g}"
    return (
        f"{_SILENCE}[aud];[0:v]{_dedupe(spec) if dedupe else 'null'},split=2[v][snap];"
        f"[v]format=yuv420p{spec.codec.upload}[enc];"
        f"[snap]select='isnan(prev_selected_t)+gte(t-prev_selected_t,{interval})',"
        f"setpts=PTS+{interval}/TB[jpg]"
    )


def _dedupe(spec: EncoderSpec) -> str:
    """Pass a frame when it differs from the one before, or when it opens a segment slot.

    scdet measures the difference to the previous frame (``lavfi.scd.mafd``, 0 when equal);
    the metadata filter drops equal frames except the first of each wall-clock slot of one
    segment length, which the encoder makes a keyframe: a still page costs one frame per
    segment, and a page that starts moving is encoded from its first changed frame on.

    x11grab delivers bgr0. bgr24 drops the padding byte in a fast copy; scdet compares it
    (SIMD sums of differences), and swscale turns bgr24 into yuv420p on a fast path.
    Converting bgr0 directly costs more than both together, and now only changed frames pay.
    """
    keep = f"{new_slot(spec.segment_seconds)};ld(2)+gt(VALUE1,VALUE2)"
    return (
        "format=bgr24,scdet=threshold=100,"
        f"metadata=mode=select:key={_CHANGE_KEY}:value=0:function=expr:expr='{keep}'"
    )


def new_slot(seconds: float) -> str:
    """ffmpeg expression statements leaving ld(2) = 1 on the first call in each wall-clock
    slot of ``seconds`` (and after the clock stepped), else 0.

    Wall clock because both the filter graph and the keyframe decision must agree on the
    slots without seeing each other's frames: a frame the filter passes as "first of its
    slot" is made a keyframe unless an earlier frame already opened that slot for the encoder.
    """
    return f"st(1,floor(time(0)/{seconds:g}));st(2,not(eq(ld(1),ld(0))));st(0,ld(1))"


def _keyframes_by_slot(spec: EncoderSpec) -> list[str]:
    # Only forced keyframes: x264's own GOP counter counts encoded frames, which the dedupe
    # makes meaningless, so it is set out of reach; no scene-cut keyframes either.
    return [
        "-fps_mode", "vfr",
        "-g", str(spec.fps * 60),
        "-sc_threshold", "0",
        "-force_key_frames", f"expr:{new_slot(spec.segment_seconds)};ld(2)",
    ]  # fmt: skip


def _keyframes_by_time(spec: EncoderSpec) -> list[str]:
    gop = max(1, round(spec.fps * spec.segment_seconds))
    return [
        "-r", str(spec.fps),
        "-g", str(gop),
        "-keyint_min", str(gop),
        "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{spec.segment_seconds:g})",
    ]  # fmt: skip


def _hls(spec: EncoderSpec, directory: Path, *, append: bool, dedupe: bool) -> list[str]:
    flags = "delete_segments+independent_segments+temp_file"
    if append:
        # A restart continues the playlist: media sequence and segment numbers go on from
        # where the dead ffmpeg stopped, with a DISCONTINUITY tag, as receivers require.
        flags += "+append_list"
    # With keyframes by wall-clock slot, the muxer must cut at every keyframe: a split time
    # of half a segment does that (each keyframe is about a segment after the last cut),
    # and still never leaves a sliver of a first segment.
    split = spec.segment_seconds / 2 if dedupe else spec.segment_seconds
    return [
        "-f", "hls",
        "-hls_time", f"{split:g}",
        "-hls_list_size", str(spec.playlist_size),
        # A segment that slid out of the window stays on disk for another window: with short
        # segments a window is only a few seconds, and a slow client may still be fetching.
        "-hls_delete_threshold", str(spec.playlist_size),
        "-hls_flags", flags,
        "-hls_segment_type", "mpegts",
        # Audio leaves the muxer within 40 ms instead of 0.7 s: a still page makes segments of
        # one video frame, and with audio grouped they were 8 TS packets, too few for
        # demuxers that sniff the format (ffprobe: "Invalid data found").
        "-max_delay", "40000",
        "-hls_segment_filename", str(directory / SEGMENT_PATTERN),
        str(directory / MEDIA_PLAYLIST),
    ]  # fmt: skip


def _snapshot(spec: EncoderSpec, directory: Path) -> list[str]:
    if spec.snapshot_interval_s is None:
        return []
    return [
        "-map", "[jpg]", "-fps_mode", "passthrough",
        "-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p",
        "-f", "image2", "-update", "1", "-atomic_writing", "1",
        str(directory / SNAPSHOT_FILE),
    ]  # fmt: skip


class Encoder(OwnsProcess):
    """One ffmpeg process writing into ``directory``; restartable on the same playlist."""

    def __init__(self, spec: EncoderSpec, directory: Path) -> None:
        self.spec = spec
        self.directory = directory
        self._process: ChildProcess | None = None
        self._progress_task: asyncio.Task[None] | None = None
        self.progress = Progress()

    def failure(self) -> str:
        """Why the process ended, for logs and events."""
        if self._process is None:
            return "ffmpeg not started"
        tail = self._process.stderr_tail()
        return f"ffmpeg exited with {self._process.returncode}" + (f": {tail}" if tail else "")

    async def start(self) -> None:
        append = (self.directory / MEDIA_PLAYLIST).exists()
        await self.kill()
        self.progress = Progress()
        await asyncio.to_thread(self._write_master)
        self._process = await ChildProcess.spawn(
            "ffmpeg",
            ffmpeg_args(self.spec, self.directory, append=append),
            stdout=asyncio.subprocess.PIPE,
        )
        if self._process.stdout is not None:
            self._progress_task = asyncio.create_task(self._read_progress(self._process.stdout))

    async def kill(self) -> None:
        """End ffmpeg without letting it finish the playlist, which goes on after a restart:
        SIGTERM would let it write #EXT-X-ENDLIST, and a receiver that polls the playlist
        before the next ffmpeg removes it ends playback."""
        if self._process is not None:
            await self._process.kill()
        await self.stop()

    def _write_master(self) -> None:
        spec = self.spec
        text = master_playlist(spec.width, spec.height, spec.bitrate_kbps, spec.start_offset_s)
        (self.directory / MASTER_PLAYLIST).write_text(text)

    async def stop(self) -> None:
        if self._process is not None:
            await self._process.stop()
        if self._progress_task is not None:
            self._progress_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._progress_task
            self._progress_task = None

    async def _read_progress(self, stream: asyncio.StreamReader) -> None:
        block: dict[str, str] = {}
        while line := await stream.readline():
            key, _, value = line.decode(errors="replace").strip().partition("=")
            if key != "progress":
                block[key] = value
                continue
            self.progress = parse_progress(block)
            block = {}


def parse_progress(block: dict[str, str]) -> Progress:
    return Progress(
        frames=_int(block.get("frame")),
        fps=_float(block.get("fps")),
        bitrate_kbps=_float(re.sub(r"kbits/s$", "", block.get("bitrate", "")).strip()),
        dropped_frames=_int(block.get("drop_frames")),
        duplicated_frames=_int(block.get("dup_frames")),
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def require_running(encoder: Encoder) -> None:
    if not encoder.alive:
        logger.warning(encoder.failure())
        raise PagecastError(ErrorCode.PIPELINE_FAILED, encoder.failure())
