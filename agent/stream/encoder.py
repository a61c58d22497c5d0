"""ffmpeg: x11grab of the display → H.264 + silent AAC → live HLS, plus snapshot JPEGs."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from agent.errors import ErrorCode, PagecastError
from agent.stream.hls import MASTER_PLAYLIST, MEDIA_PLAYLIST, SEGMENT_PATTERN
from agent.stream.process import ChildProcess, OwnsProcess

FFMPEG = "ffmpeg"
_SILENCE = "anullsrc=channel_layout=stereo:sample_rate=48000"
_CHROMA_SAMPLING = "neighbor"
SNAPSHOT_FILE = "snapshot.jpg"


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

    ``tuned=False`` leaves out the capture-side tuning and gives the plain command with the
    same encoder settings: the benchmark's reference pipeline.
    """
    gop = max(1, round(spec.fps * spec.segment_seconds))
    flags = "delete_segments+independent_segments+temp_file"
    if append:
        # A restart continues the playlist: media sequence and segment numbers go on from
        # where the dead ffmpeg stopped, with a DISCONTINUITY tag, as receivers require.
        flags += "+append_list"
    args = [
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
        # x11grab's format is known: probing it only delays the first segment.
        "-probesize",
        "32",
        "-analyzeduration",
        "0",
        "-fflags",
        "nobuffer",
        "-f",
        "x11grab",
        "-draw_mouse",
        "0",
        "-framerate",
        str(spec.fps),
        "-video_size",
        f"{spec.width}x{spec.height}",
        "-i",
        f"{spec.display}+0,0",
    ]
    # The silent track comes from the same filter graph as the video. As a separate lavfi
    # input it would starve next to the sparse snapshot output: ffmpeg serves the output that
    # lags most, which is the snapshot, and the HLS muxer then waits for audio for seconds.
    graph = f"{_SILENCE}[aud];[0:v]format=yuv420p"
    if tuned:
        # Chroma is subsampled 2:1 by picking, not filtering: a third less conversion work
        # (the largest cost after x264 on a static page); luma stays untouched.
        graph = f"sws_flags={_CHROMA_SAMPLING};{graph}"
    if spec.snapshot_interval_s is None:
        graph += "[enc]"
    else:
        # select, not fps: it passes the very first frame at once, so the snapshot output
        # starts immediately; ffmpeg holds back all outputs until every one has started.
        # setpts then dates each snapshot one interval ahead: ffmpeg always serves the output
        # that lags most, and a snapshot output stuck at its last (old) picture would win
        # that every time, starving the audio the HLS muxer waits for.
        interval = f"{spec.snapshot_interval_s:g}"
        graph += (
            ",split=2[enc][snap];"
            f"[snap]select='isnan(prev_selected_t)+gte(t-prev_selected_t,{interval})',"
            f"setpts=PTS+{interval}/TB[jpg]"
        )
    args += ["-filter_complex", graph, "-map", "[enc]", "-map", "[aud]"]
    args += [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-profile:v",
        "high",
        "-level:v",
        "4.1",
        "-pix_fmt",
        "yuv420p",
        "-r",
        str(spec.fps),
        "-b:v",
        f"{spec.bitrate_kbps}k",
        "-maxrate",
        f"{spec.bitrate_kbps}k",
        "-bufsize",
        f"{spec.bitrate_kbps * 2}k",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-force_key_frames",
        f"expr:gte(t,n_forced*{spec.segment_seconds:g})",
        "-c:a",
        "aac",
        "-b:a",
        "32k",
        "-f",
        "hls",
        "-hls_time",
        f"{spec.segment_seconds:g}",
        "-hls_list_size",
        str(spec.playlist_size),
        "-hls_flags",
        flags,
        "-hls_segment_type",
        "mpegts",
        "-hls_segment_filename",
        str(directory / SEGMENT_PATTERN),
        "-master_pl_name",
        MASTER_PLAYLIST,
        "-var_stream_map",
        "v:0,a:0",
        str(directory / MEDIA_PLAYLIST),
    ]
    if spec.snapshot_interval_s is not None:
        args += [
            "-map",
            "[jpg]",
            "-fps_mode",
            "passthrough",
            "-c:v",
            "mjpeg",
            "-q:v",
            "5",
            "-pix_fmt",
            "yuvj420p",
            "-f",
            "image2",
            "-update",
            "1",
            "-atomic_writing",
            "1",
            str(directory / SNAPSHOT_FILE),
        ]
    return args


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
