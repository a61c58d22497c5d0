"""A private X server (Xvfb) that Chromium draws on and ffmpeg captures."""

from __future__ import annotations

import asyncio
import os

from loguru import logger

from agent.errors import ErrorCode, PagecastError
from agent.stream.process import ChildProcess, OwnsProcess

XVFB = "Xvfb"
_READY_TIMEOUT_S = 10.0


class Display(OwnsProcess):
    """Xvfb on a free display number (``-displayfd``: two agents on one host never collide).

    The screen is one pixel larger than the capture area in each direction: Chromium sizes a
    fullscreen window one pixel *smaller* than an X screen it exactly matches, which would leave
    a black line at the right and bottom of the video. The window then exactly covers
    ``width``x``height`` at (0,0), which is what ffmpeg grabs.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self._process: ChildProcess | None = None
        self._number: int | None = None

    @property
    def name(self) -> str:
        """The ``DISPLAY`` value, e.g. ``:3``."""
        if self._number is None:
            raise RuntimeError("display not started")
        return f":{self._number}"

    async def start(self) -> None:
        read_fd, write_fd = os.pipe()
        try:
            self._process = await ChildProcess.spawn(
                "Xvfb",
                [
                    XVFB,
                    "-displayfd",
                    str(write_fd),
                    "-screen",
                    "0",
                    f"{self.width + 1}x{self.height + 1}x24",
                    "-nolisten",
                    "tcp",
                    "-noreset",
                    # Chromium draws with its own GL (SwiftShader), never Xvfb's GLX; without
                    # it Xvfb does not load Mesa and LLVM: 66 MB PSS down to 14 MB.
                    "-extension",
                    "GLX",
                ],
                pass_fds=[write_fd],
            )
        finally:
            os.close(write_fd)
        raw = ""  # also when cancelled: Xvfb is then stopped, not left half-started
        try:
            # Xvfb writes the number once it accepts connections; EOF means it died first.
            raw = await asyncio.wait_for(asyncio.to_thread(_read_line, read_fd), _READY_TIMEOUT_S)
        except TimeoutError:
            pass
        finally:
            if not raw:
                await self.stop()
            os.close(read_fd)
        if not raw.strip().isdigit():
            raise PagecastError(ErrorCode.PIPELINE_FAILED, "Xvfb did not start")
        self._number = int(raw)
        logger.debug("Xvfb ready on {}", self.name)

    async def stop(self) -> None:
        if self._process is not None:
            await self._process.stop()


def _read_line(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 32)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")
