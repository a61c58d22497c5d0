"""The agent's process tree as the kernel sees it: how much memory it and its children hold.

Chromium, Xvfb and ffmpeg are children of the agent; growth over days shows in their sum, not
in the agent's own figures. Blocking (reads /proc): call it from a thread.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class TreeUsage:
    rss_bytes: int
    processes: int


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name in parentheses may contain spaces: split after its last ")".
            stat = (_PROC / entry.name / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    return children


def _rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((_PROC / str(pid) / "statm").read_text().split()[1]) * _PAGE_SIZE
    return 0  # gone meanwhile


def tree_usage(root: int | None = None) -> TreeUsage:
    """Resident memory of ``root`` (default: this process) and all its descendants."""
    children = _children_by_parent()
    pending = [root if root is not None else os.getpid()]
    total = count = 0
    while pending:
        pid = pending.pop()
        total += _rss_bytes(pid)
        count += 1
        pending.extend(children.get(pid, ()))
    return TreeUsage(total, count)
