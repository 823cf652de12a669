"""Facts about processes, read from /proc: the one place that parses it (liveness, parents,
process groups, start times)."""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses):
    [0] state, [1] parent pid, [2] process group, [19] start time."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").glob("[0-9]*")]


def start_time(pid: int) -> str | None:
    """When the process started, in clock ticks since boot: tells a reused pid."""
    fields = stat_fields(pid)
    return fields[19] if fields else None


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of each process whose parent is `pid`."""
    children = []
    for candidate in all_pids():
        fields = stat_fields(candidate)
        if fields and int(fields[1]) == pid:
            children.append((candidate, fields[19]))
    return children


def descendants(pids: list[int]) -> list[int]:
    """Every process below `pids`, children first."""
    found: list[int] = []
    wanted = set(pids)
    while wanted:
        below = [
            candidate
            for candidate in all_pids()
            if candidate not in found
            and (fields := stat_fields(candidate))
            and int(fields[1]) in wanted
        ]
        found += below
        wanted = set(below)
    return found


def group_members(pgid: int) -> list[int]:
    """The processes of a process group, this one excluded."""
    me = os.getpid()
    return [
        pid
        for pid in all_pids()
        if pid != me and (fields := stat_fields(pid)) and int(fields[2]) == pgid
    ]


def process_alive(pid: int) -> bool:
    """True for a live process; false for none and for a zombie.

    A killed daemon stays a zombie until init reaps it, and kill(pid, 0) still succeeds on a
    zombie: a stale pid file would then look like a running server.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")
