"""Encoder choice: the probe, the fallback to x264 and the command lines of each encoder.

This machine has no hardware encoder: the probe must say so (a real one-frame encode with
real ffmpeg), and auto must fall back to x264 with one warning."""

from __future__ import annotations

from pathlib import Path

import pytest
from loguru import logger

from agent.stream import hwaccel
from agent.stream.encoder import EncoderSpec, ffmpeg_args
from agent.stream.hwaccel import CODECS, X264


def value_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


async def test_x264_encodes_a_test_frame() -> None:
    assert await hwaccel.probe(X264) is None


async def test_a_missing_encoder_is_reported_not_raised() -> None:
    reason = await hwaccel.probe(hwaccel.VideoCodec("nope", "h264_does_not_exist"))
    assert reason is not None
    assert "h264_does_not_exist" in reason or "Unknown encoder" in reason


@pytest.mark.parametrize("name", ["vaapi", "qsv", "nvenc", "v4l2m2m"])
async def test_hardware_encoders_this_machine_lacks_fail_the_probe(name: str) -> None:
    assert await hwaccel.probe(CODECS[name]) is not None


async def test_auto_falls_back_to_x264_with_one_warning() -> None:
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(str(message)), level="WARNING")
    try:
        assert await hwaccel.choose("auto") is X264
        assert await hwaccel.choose("x264") is X264
    finally:
        logger.remove(sink)
    assert len(warnings) == 1
    assert "using x264" in warnings[0]


async def test_a_configured_encoder_that_fails_falls_back_too() -> None:
    assert await hwaccel.choose("vaapi") is X264


@pytest.mark.parametrize(
    ("name", "codec", "device", "upload"),
    [
        ("x264", "libx264", None, None),
        ("vaapi", "h264_vaapi", "-vaapi_device", "hwupload"),
        ("qsv", "h264_qsv", "-init_hw_device", "hwupload"),
        ("nvenc", "h264_nvenc", None, None),
        ("v4l2m2m", "h264_v4l2m2m", None, None),
    ],
)
def test_each_encoder_gets_its_codec_device_and_upload(
    tmp_path: Path, name: str, codec: str, device: str | None, upload: str | None
) -> None:
    spec = EncoderSpec(":7", 1280, 720, 30, 2500, 0.5, 12, None, codec=CODECS[name])
    args = ffmpeg_args(spec, tmp_path, append=False)
    assert value_after(args, "-c:v") == codec
    assert value_after(args, "-b:v") == "2500k"
    assert value_after(args, "-maxrate") == "2500k"
    # Cast-safe H.264 whatever the encoder: High profile, level 4.1.
    assert value_after(args, "-profile:v") == "high"
    assert value_after(args, "-level:v") in {"4.1", "41"}
    graph = value_after(args, "-filter_complex")
    if device is not None:
        # The device is opened before the input, so the filter graph can upload to it.
        assert args.index(device) < args.index("-i")
    if upload is not None:
        assert graph.endswith(f"{upload}[enc]") or f"{upload}=" in graph
    else:
        assert graph.endswith("format=yuv420p[enc]")
    # Keyframes are forced per segment slot whatever the encoder.
    assert value_after(args, "-force_key_frames").startswith("expr:")
    probe = hwaccel.probe_args(CODECS[name])
    assert value_after(probe, "-frames:v") == "1"
    assert value_after(probe, "-c:v") == codec
