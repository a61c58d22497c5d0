"""A process tree measured whole: every process an agent (or a reference pipeline) started,
including the ones that left its session, found through a cgroup of their own.

Children inherit their cgroup at fork, so a process placed in a fresh cgroup before it execs
takes everything it ever starts along: Chromium's zygotes, Playwright's driver, ffmpeg.
Without a writable cgroup hierarchy it falls back to the descendants of the root process.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

# cgroup v2 (unified) first, then v1's pids controller: both list members in cgroup.procs.
_HIERARCHIES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    ppid: int
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
            text = (self._cgroup / "cgroup.procs").read_text()
            return [int(line) for line in text.split()]
        if self.root_pid is None:
            return []
        return [self.root_pid, *(p.pid for p in _descendants(self.root_pid))]

    def processes(self) -> list[Proc]:
        return [p for p in (_read(pid) for pid in self.pids()) if p is not None]

    def usage(self) -> Usage:
        rss = pss = cpu = 0.0
        fds = count = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError):
                rss_kb, pss_kb = _memory_kb(pid)
                rss, pss = rss + rss_kb / 1024, pss + pss_kb / 1024
                fds += len(os.listdir(f"/proc/{pid}/fd"))
                cpu += _cpu_s(pid)
                count += 1
        return Usage(count, round(rss, 1), round(pss, 1), fds, round(cpu, 2))

    def close(self) -> None:
        if self._cgroup is not None:
            with contextlib.suppress(OSError):
                self._cgroup.rmdir()


def _make_cgroup(name: str) -> Path | None:
    for hierarchy in _HIERARCHIES:
        if not (hierarchy / "cgroup.procs").exists():
            continue
        with contextlib.suppress(OSError):
            path = hierarchy / name
            path.mkdir()
            return path
    return None


def _memory_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def _cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _read(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return Proc(pid, int(fields[1]), stat[stat.index("(") + 1 : stat.rindex(")")], cmdline)


def _descendants(root: int) -> list[Proc]:
    procs = [p for p in (_read(int(d)) for d in os.listdir("/proc") if d.isdigit()) if p]
    children: dict[int, list[Proc]] = {}
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc)
    found: list[Proc] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found
