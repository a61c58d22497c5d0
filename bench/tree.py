"""A process tree measured whole: every process an agent (or a reference pipeline) started,
including the ones that left its session, found through a cgroup of their own.

Children inherit their cgroup at fork, so a process placed in a fresh cgroup before it execs
takes everything it ever starts along: Chromium's zygotes, Playwright's driver, ffmpeg.
Without a writable cgroup hierarchy it falls back to the descendants of the root process.
The per-process readings come from bench/meter.py.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from meter import cpu_of, descendants, name, pss_mb, rss_mb

# cgroup v2 (unified) first, then v1's pids controller: both list members in cgroup.procs.
_HIERARCHIES = (
    Path("/sys/fs/cgroup/unified"),
    Path("/sys/fs/cgroup/pids"),
    Path("/sys/fs/cgroup"),
)


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    name: str
    cmdline: str


@dataclass(frozen=True, slots=True)
class Usage:
    processes: int
    rss_mb: float
    pss_mb: float
    fds: int
    cpu_s: float


class ProcessTree:
    """Make one, pass ``preexec`` to Popen, and ask ``processes()``/``usage()`` any time."""

    def __init__(self, label: str = "pagecast-bench") -> None:
        self._cgroup = _make_cgroup(f"{label}-{uuid.uuid4().hex[:8]}")
        self.root_pid: int | None = None

    @property
    def by_cgroup(self) -> bool:
        return self._cgroup is not None

    def preexec(self) -> None:
        """Runs in the child before exec: join the tree's cgroup."""
        if self._cgroup is not None:
            (self._cgroup / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> list[int]:
        if self._cgroup is not None:
            return [int(line) for line in (self._cgroup / "cgroup.procs").read_text().split()]
        if self.root_pid is None:
            return []
        return [self.root_pid, *descendants(self.root_pid)]

    def processes(self) -> list[Proc]:
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                found.append(Proc(pid, name(pid), cmdline.decode(errors="replace")))
        return found

    def usage(self) -> Usage:
        pids = self.pids()
        fds = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                fds += len(os.listdir(f"/proc/{pid}/fd"))
        return Usage(
            processes=len(pids),
            rss_mb=round(sum(rss_mb(pid) for pid in pids), 1),
            pss_mb=round(sum(pss_mb(pid) for pid in pids), 1),
            fds=fds,
            cpu_s=round(sum(cpu_of(pid) for pid in pids), 2),
        )

    def close(self) -> None:
        if self._cgroup is not None:
            with contextlib.suppress(OSError):
                self._cgroup.rmdir()


def _make_cgroup(label: str) -> Path | None:
    for hierarchy in _HIERARCHIES:
        if not (hierarchy / "cgroup.procs").exists():
            continue
        with contextlib.suppress(OSError):
            path = hierarchy / label
            path.mkdir()
            return path
    return None
