"""CPU and memory of whole process trees, for the benchmarks.

CPU by cgroup where the machine lets us make one (v2, else v1 ``cpuacct``): it counts every
process of the tree, also the ones that start or exit inside the window. Without cgroups,
by walking ``/proc`` for the tree's descendants (misses processes that exit meanwhile).
Memory is PSS (``/proc/<pid>/smaps_rollup``): shared libraries count once across the tree.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_counter = itertools.count()


def _stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return [stat[stat.index("(") + 1 : stat.rindex(")")], *stat[stat.rindex(")") + 2 :].split()]


def name(pid: int) -> str:
    stat = _stat(pid)
    return stat[0] if stat else ""


def cpu_of(pid: int) -> float:
    stat = _stat(pid)
    return (int(stat[12]) + int(stat[13])) / CLOCK_TICKS if stat else 0.0


def descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents.setdefault(int(stat[2]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _cgroup_root() -> tuple[Path, str] | None:
    """(mount point, usage file) of a cgroup hierarchy we can write to."""
    mounts = Path("/proc/mounts").read_text().splitlines()
    for line in mounts:
        _, point, kind, options, *_ = line.split()
        if kind == "cgroup2":
            candidate = (Path(point), "cpu.stat")
        elif kind == "cgroup" and "cpuacct" in options.split(","):
            candidate = (Path(point), "cpuacct.usage")
        else:
            continue
        if os.access(candidate[0], os.W_OK):
            return candidate
    return None


class CpuMeter:
    """CPU seconds used by a set of processes (and whatever they start) since ``start()``."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._root = _cgroup_root()
        self._group: Path | None = None
        self._before = 0.0
        self._before_by_pid: dict[int, float] = {}

    @property
    def method(self) -> str:
        return f"cgroup ({self._root[1]})" if self._root else "/proc walk"

    def start(self) -> None:
        if self._root is not None:
            with contextlib.suppress(OSError):
                group = self._root[0] / f"pagecast-bench-{os.getpid()}-{next(_counter)}"
                group.mkdir()
                self._group = group
                for pid in self._pids:
                    with contextlib.suppress(OSError):
                        (group / "cgroup.procs").write_text(str(pid))
        self._before = self._usage()

    def seconds(self) -> float:
        return self._usage() - self._before

    def close(self) -> None:
        if self._group is None or self._root is None:
            return
        # Back to the hierarchy's root (where everything here runs), then remove the group.
        for pid in (self._group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (self._root[0] / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            self._group.rmdir()
        self._group = None

    def _usage(self) -> float:
        if self._group is not None and self._root is not None:
            text = (self._group / self._root[1]).read_text()
            if self._root[1] == "cpuacct.usage":
                return int(text) / 1e9
            fields = dict(line.split() for line in text.splitlines())
            return int(fields["usage_usec"]) / 1e6
        pids = {p for root in self._pids for p in [root, *descendants(root)]}
        now = {pid: cpu_of(pid) for pid in pids}
        if not self._before_by_pid:
            self._before_by_pid = now
            return sum(now.values())
        # Processes that appeared meanwhile count from zero.
        return sum(now.values()) - sum(self._before_by_pid.get(pid, 0.0) for pid in now)


@contextlib.contextmanager
def metered(pids: list[int]) -> Iterator[CpuMeter]:
    meter = CpuMeter(pids)
    try:
        meter.start()
        yield meter
    finally:
        meter.close()


def by_name(pids: list[int]) -> dict[str, float]:
    """CPU seconds so far per process kind (ffmpeg, chromium, Xvfb, node, python)."""
    totals: dict[str, float] = {}
    for pid in pids:
        which = kind(name(pid))
        totals[which] = totals.get(which, 0.0) + cpu_of(pid)
    return totals


def kind(process: str) -> str:
    for known in ("ffmpeg", "Xvfb", "node", "python"):
        if process.startswith(known):
            return known
    return "chromium" if process.startswith("chrom") else process


def pss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
