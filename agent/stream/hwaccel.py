"""Which H.264 encoder ffmpeg uses: x264 on the CPU, or a hardware encoder the box has.

``stream.encoder: auto`` probes the hardware encoders once at start-up with a one-frame test
encode in a subprocess (never on the event loop) and falls back to x264 with one warning.
Only x264 was verified on real hardware; the others are built from ffmpeg's documentation and
checked here only for their command lines and for the probe's fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from loguru import logger

ENCODER_CHOICES = ("auto", "x264", "vaapi", "qsv", "v4l2m2m", "nvenc")
# auto tries these in order: the ones that need no extra setting on a box that has them.
_AUTO_ORDER = ("vaapi", "qsv", "nvenc", "v4l2m2m")
_PROBE_TIMEOUT_S = 10.0
_RENDER_NODE = "/dev/dri/renderD128"


@dataclass(frozen=True, slots=True)
class VideoCodec:
    """How one encoder is asked for Cast-safe H.264 (High or Main, level 4.1, yuv420p)."""

    name: str
    codec: str
    # Before the input: the device the encoder needs.
    device_args: tuple[str, ...] = ()
    # End of the filter graph: system-memory yuv420p frames → what the encoder takes.
    upload: str = ""
    # Low-latency, rate and profile options of this encoder.
    options: tuple[str, ...] = ()

    def args(self, bitrate_kbps: int) -> list[str]:
        rate = [
            "-b:v",
            f"{bitrate_kbps}k",
            "-maxrate",
            f"{bitrate_kbps}k",
            "-bufsize",
            f"{bitrate_kbps * 2}k",
        ]
        return ["-c:v", self.codec, *self.options, *rate]


X264 = VideoCodec(
    "x264",
    "libx264",
    # veryfast: x264's best quality per CPU second for screen content at these rates;
    # zerolatency: no lookahead and no B-frames, a frame leaves the encoder as it enters.
    options=(
        "-preset", "veryfast", "-tune", "zerolatency",
        "-profile:v", "high", "-level:v", "4.1", "-pix_fmt", "yuv420p",
    ),
)  # fmt: skip

CODECS: dict[str, VideoCodec] = {
    "x264": X264,
    "vaapi": VideoCodec(
        "vaapi",
        "h264_vaapi",
        device_args=("-vaapi_device", _RENDER_NODE),
        upload=",format=nv12,hwupload",
        options=("-profile:v", "high", "-level:v", "4.1", "-bf", "0", "-rc_mode", "CBR"),
    ),
    "qsv": VideoCodec(
        "qsv",
        "h264_qsv",
        device_args=("-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"),
        upload=",format=nv12,hwupload=extra_hw_frames=16",
        options=(
            "-profile:v", "high", "-level:v", "41", "-bf", "0",
            "-preset", "veryfast", "-low_power", "0", "-async_depth", "1",
        ),
    ),
    "nvenc": VideoCodec(
        "nvenc",
        "h264_nvenc",
        options=(
            "-profile:v", "high", "-level:v", "4.1", "-bf", "0",
            "-preset", "p1", "-tune", "ull", "-zerolatency", "1", "-pix_fmt", "yuv420p",
        ),
    ),
    "v4l2m2m": VideoCodec(
        "v4l2m2m",
        "h264_v4l2m2m",
        # The Raspberry Pi's encoder wants its input in yuv420p, which the graph delivers.
        options=("-profile:v", "high", "-level:v", "4.1", "-pix_fmt", "yuv420p"),
    ),
}  # fmt: skip


def probe_args(codec: VideoCodec) -> list[str]:
    """A one-frame test encode: fails fast when the device or the driver is missing."""
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        *codec.device_args,
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:s=320x240:r=30,format=yuv420p",
        "-frames:v",
        "1",
        "-vf",
        f"null{codec.upload}",
        *codec.args(1000),
        "-f",
        "null",
        "-",
    ]


async def probe(codec: VideoCodec) -> str | None:
    """None when ``codec`` encodes a test frame on this box, else why not."""
    try:
        process = await asyncio.create_subprocess_exec(
            *probe_args(codec),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        return str(exc)
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            _, err = await process.communicate()
    except TimeoutError:
        return "the test encode timed out"
    finally:
        if process.returncode is None:
            process.kill()
            with contextlib.suppress(ProcessLookupError):
                await process.wait()
    if process.returncode == 0:
        return None
    lines = err.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"ffmpeg exited with {process.returncode}"


async def choose(setting: str) -> VideoCodec:
    """The encoder to use for ``stream.encoder``; x264 when no hardware encoder works.

    One warning when falling back: a box without hardware encoding is normal, not an error.
    """
    candidates = _AUTO_ORDER if setting == "auto" else (setting,)
    reasons = []
    for name in candidates:
        codec = CODECS[name]
        if codec is X264:
            return X264
        reason = await probe(codec)
        if reason is None:
            logger.info("H.264 encoder: {} ({})", codec.name, codec.codec)
            return codec
        reasons.append(f"{name}: {reason}")
    logger.warning("no hardware H.264 encoder works here, using x264 ({})", "; ".join(reasons))
    return X264


# What works on this box does not change while the agent runs: probe once per setting. The
# backend starts the probe at start-up; a session starting meanwhile waits for the same probe.
_chosen: dict[str, VideoCodec] = {}
_probing: dict[str, asyncio.Task[VideoCodec]] = {}


async def chosen(setting: str) -> VideoCodec:
    """``choose(setting)``, probed once; concurrent callers share the probe."""
    if setting in _chosen:
        return _chosen[setting]
    task = _probing.get(setting)
    if task is None or task.get_loop() is not asyncio.get_running_loop():
        task = _probing[setting] = asyncio.create_task(choose(setting), name="encoder-probe")
    codec = await asyncio.shield(task)
    _chosen[setting] = codec
    _probing.pop(setting, None)
    return codec
