"""Which processes this test process started (directly or not): for leak checks and kill -9."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    ppid: int
    name: str
    cmdline: str


def _read(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split around the last ")".
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is gone for all practical purposes
        return None
    return Proc(pid, int(fields[1]), name, cmdline.strip())


def descendants(root: int | None = None) -> list[Proc]:
    """Live processes below ``root`` (default: this process)."""
    root = root if root is not None else os.getpid()
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


def environment(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def named(prefix: str, root: int | None = None) -> list[Proc]:
    return [p for p in descendants(root) if p.name.startswith(prefix)]


def chromium_browser(root: int | None = None) -> list[Proc]:
    """Chromium main processes (not its renderer/GPU/zygote helpers)."""
    return [p for p in named("chrom", root) if "--type=" not in p.cmdline]
