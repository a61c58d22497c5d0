"""Child processes that always have an owner: started, watched, stopped and reaped by it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from loguru import logger

T = TypeVar("T")

# If the agent itself is killed (SIGKILL, OOM), the kernel takes its children along, so no Xvfb
# or ffmpeg outlives it: util-linux's setpriv (Essential in Debian) sets the parent-death
# signal and execs the child, which keeps it. Not a preexec_fn: with one, Python forks the
# whole agent instead of using vfork, and that fork holds up the event loop for 0.1-0.2 s on a
# busy machine.
_DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL")


async def start_owned(start: Awaitable[T], end: Callable[[T], Awaitable[None]]) -> T:
    """Await ``start``, which brings up something that must not outlive its owner (a process,
    a browser), so that a cancellation can never separate the two.

    A cancellation does not interrupt ``start``: the child may already be forked, and the
    caller would never get hold of it. ``start`` finishes, ``end`` ends what it brought up,
    and only then does the cancellation go on; further cancellations meanwhile wait too.
    """
    starting = asyncio.ensure_future(start)
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        ending = asyncio.ensure_future(_end_when_up(starting, end))
        while not ending.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([ending])
        raise


async def _end_when_up(starting: asyncio.Future[T], end: Callable[[T], Awaitable[None]]) -> None:
    await asyncio.wait([starting])
    if starting.cancelled() or starting.exception() is not None:
        return  # nothing came up
    try:
        await end(starting.result())
    except Exception as exc:
        logger.warning("could not end what a cancelled start brought up: {}", exc)


# Every live ChildProcess by pid, for the last resort of a shutdown that ran out of time
# (kill_all_children). A lock, because that last resort may run in a watchdog thread.
_LIVE: dict[int, tuple[str, asyncio.subprocess.Process]] = {}
_LIVE_LOCK = threading.Lock()


def kill_all_children() -> list[str]:
    """SIGKILL the process group of every child not reaped yet; the names of those hit.

    Each child leads its own group (start_new_session), so whatever it started goes too. Their
    owners still reap them; this only ends the wait for a child that would not stop in time.
    """
    with _LIVE_LOCK:
        live = list(_LIVE.items())
    killed = []
    for pid, (name, process) in live:
        if process.returncode is not None:
            continue  # reaped: its pid may belong to someone else by now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed.append(name)
    return killed


class ChildProcess:
    """One owned process; its stderr tail is kept for error messages."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self._process = process
        with _LIVE_LOCK:
            _LIVE[process.pid] = (name, process)
        self._stderr: deque[str] = deque(maxlen=20)
        self._reader = (
            asyncio.create_task(self._read_stderr(process.stderr)) if process.stderr else None
        )

    @classmethod
    async def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        pass_fds: Sequence[int] = (),
        stdout: int | None = asyncio.subprocess.DEVNULL,
    ) -> ChildProcess:
        return await start_owned(cls._spawn(name, argv, pass_fds, stdout), ChildProcess.kill)

    @classmethod
    async def _spawn(
        cls, name: str, argv: Sequence[str], pass_fds: Sequence[int], stdout: int | None
    ) -> ChildProcess:
        process = await asyncio.create_subprocess_exec(
            *_DIE_WITH_PARENT,
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=tuple(pass_fds),
            # Own process group: a Ctrl-C meant for the agent reaches it, not its children;
            # the agent then stops them in order.
            start_new_session=True,
        )
        logger.debug("{} started (pid {})", name, process.pid)
        return cls(name, process)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def stdout(self) -> asyncio.StreamReader | None:
        return self._process.stdout

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    @property
    def alive(self) -> bool:
        return self._process.returncode is None

    def stderr_tail(self) -> str:
        return " | ".join(self._stderr)

    async def stop(self, grace_s: float = 3.0) -> None:
        """Ask politely (SIGTERM), then insist (SIGKILL); always reap. Idempotent."""
        try:
            if self.alive:
                self._process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(self._process.wait()), grace_s)
                except TimeoutError:
                    logger.warning("{} ignored SIGTERM for {}s; killing it", self.name, grace_s)
                    self._process.kill()
        except ProcessLookupError:
            pass
        finally:
            # Reaping must happen even when the caller is being cancelled; a caller that is
            # has no time left for the grace period, and a second cancellation must not find
            # a child that merely was asked to go.
            with contextlib.suppress(ProcessLookupError):
                if self.alive:
                    self._process.kill()
            await asyncio.shield(self._process.wait())
            with _LIVE_LOCK:
                _LIVE.pop(self._process.pid, None)
            if self._reader is not None:
                await asyncio.shield(self._reader)

    async def kill(self) -> None:
        """End it at once, without the chance to finish anything; reap it."""
        with contextlib.suppress(ProcessLookupError):
            if self.alive:
                self._process.kill()
        await self.stop()

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                self._stderr.append(text)
                logger.debug("{}: {}", self.name, text)


class OwnsProcess:
    """For a part that runs at most one ChildProcess at a time, kept in ``_process``."""

    _process: ChildProcess | None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None
